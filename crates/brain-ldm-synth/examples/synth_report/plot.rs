//! Minimal PNG plots (no text: axis ranges are given in docs/synth.md).

use image::{Rgb, RgbImage};

const W: u32 = 360;
const M: u32 = 20;

fn frame() -> RgbImage {
    let mut img = RgbImage::from_pixel(W, W, Rgb([255, 255, 255]));
    for t in M..W - M {
        img.put_pixel(t, W - M, Rgb([0, 0, 0]));
        img.put_pixel(M, t, Rgb([0, 0, 0]));
    }
    img
}

/// Measured (y) against truth (x) with the identity line, both axes over [lo, hi].
pub fn scatter(points: &[(f64, f64)], lo: f64, hi: f64) -> RgbImage {
    let mut img = frame();
    let span = (W - 2 * M) as f64;
    let px = |v: f64| M as f64 + (v - lo) / (hi - lo) * span;
    for t in 0..(W - 2 * M) {
        img.put_pixel(M + t, W - M - t, Rgb([180, 180, 180]));
    }
    for &(x, y) in points {
        let (cx, cy) = (px(x), W as f64 - px(y));
        for dx in -2i32..=2 {
            for dy in -2i32..=2 {
                let (u, v) = (cx as i32 + dx, cy as i32 + dy);
                if u >= 0 && v >= 0 && (u as u32) < W && (v as u32) < W && dx * dx + dy * dy <= 4 {
                    img.put_pixel(u as u32, v as u32, Rgb([200, 40, 40]));
                }
            }
        }
    }
    img
}

/// A histogram of `values` over [lo, hi] in `bins` bars.
pub fn histogram(values: &[f64], lo: f64, hi: f64, bins: usize) -> RgbImage {
    let mut img = frame();
    let mut counts = vec![0usize; bins];
    for &v in values {
        let b = (((v - lo) / (hi - lo)) * bins as f64).floor();
        if b >= 0.0 && (b as usize) < bins {
            counts[b as usize] += 1;
        }
    }
    let top = *counts.iter().max().unwrap_or(&1) as f64;
    let bw = (W - 2 * M) / bins as u32;
    for (b, &c) in counts.iter().enumerate() {
        let h = (c as f64 / top * (W - 2 * M - 10) as f64) as u32;
        for x in 0..bw.saturating_sub(1) {
            for y in 0..h {
                img.put_pixel(M + 1 + b as u32 * bw + x, W - M - 1 - y, Rgb([60, 90, 170]));
            }
        }
    }
    img
}
