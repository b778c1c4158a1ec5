//! F(4×4×4, 3×3×3): Toom–Cook F(4, 3) matrices with interpolation points 0, 1, −1, 2, −½ and
//! ∞ along each axis, 6×6×6 input tiles.
//!
//! The points are chosen for accuracy: in f32, with 256 input channels, the common choice
//! 0, ±1, ±2 gives a largest error of 4.9e-5 of the output's scale over 6×6×6 tiles, these
//! 1.4e-5, and F(2, 3) 5.7e-7 (`python scripts/winograd_error.py`: the three transforms and
//! the channel sum simulated in f32 against f64). Their matrices are
//!
//! ```text
//! Bᵀ = [1  3/2   −2 −3/2    1 0]   G = [    1     0     0]   Aᵀ = [1 1  1 1    1 0]
//!      [0   −1 −5/2 −1/2    1 0]       [ −1/3  −1/3  −1/3]        [0 1 −1 2 −1/2 0]
//!      [0    1  1/2 −5/2    1 0]       [  1/3  −1/3   1/3]        [0 1  1 4  1/4 0]
//!      [0 −1/2   −1  1/2    1 0]       [ 1/15  2/15  4/15]        [0 1 −1 8 −1/8 1]
//!      [0    2   −1   −2    1 0]       [−16/15 8/15 −4/15]
//!      [0    1  3/2   −2 −3/2 1]       [    0     0     1]
//! ```

use super::{
    adjoint_by_lanes, avx512_available, load_grad, load_taps, load_tiles, padded_span,
    prefetch_span, put_lanes, split_row, store_taps, store_tiles, tap_positions, Algorithm, Block,
    ConvGeometry, OutDest, VDest, NT,
};

/// F(4×4×4, 3×3×3).
pub(super) struct F4;

/// Entries per tile along one axis (input tile edge).
const E: usize = 6;
/// Transformed taps per tile (6×6×6).
const XI: usize = E * E * E;
/// Input columns a block of [`NT`] tiles reads along the width.
const SPAN: usize = 4 * NT + 2;

algorithm!(F4, 4);

multiversion! {
    /// [`Algorithm::transform_weights_w`] of F(4, 3) (the `W` channels are the lanes of the
    /// transform).
    fn transform_weights_w<const W: usize>(w: &[f32], c_in: usize, co0: usize, dst: &mut [f32]) {
        // s[(a·6 + b)·6 + c][lane]: taps in, transformed taps out, axis by axis; every entry
        // read is written first, for every input channel.
        // Where tap (a, b, c) of the 3×3×3 kernel starts: entry (a·6 + b)·6 + c.
        const POS: [usize; 27] = tap_positions(E);
        let mut s = [[0f32; 8]; XI];
        for ci in 0..c_in {
            load_taps::<W>(w, c_in, co0, ci, &POS, &mut s);
            for ab in 0..9 {
                g_axis(&mut s, (ab / 3 * E + ab % 3) * E, 1);
            }
            for ac in 0..3 * E {
                g_axis(&mut s, ac / E * E * E + ac % E, E);
            }
            for bc in 0..E * E {
                g_axis(&mut s, bc, E * E);
            }
            store_taps::<W>(&s, c_in, ci, dst);
        }
    }
}

/// `G` applied to entries `base + (0..3)·stride` of `s`, written to `base + (0..6)·stride`.
#[inline(always)]
fn g_axis<const L: usize>(s: &mut [[f32; L]; XI], base: usize, stride: usize) {
    let g0 = s[base];
    let g1 = s[base + stride];
    let g2 = s[base + 2 * stride];
    for l in 0..L {
        let (a, b, c) = (g0[l], g1[l], g2[l]);
        s[base + stride][l] = -(a + b + c) * (1.0 / 3.0);
        s[base + 2 * stride][l] = (a - b + c) * (1.0 / 3.0);
        s[base + 3 * stride][l] = (a + 2.0 * b + 4.0 * c) * (1.0 / 15.0);
        s[base + 4 * stride][l] = (-16.0 * a + 8.0 * b - 4.0 * c) * (1.0 / 15.0);
        s[base + 5 * stride][l] = c;
    }
}

/// `Bᵀ` applied in place to entries `base + (0..6)·stride` of `s`.
#[inline(always)]
fn bt_axis(s: &mut [[f32; NT]; XI], base: usize, stride: usize) {
    let d0 = s[base];
    let d1 = s[base + stride];
    let d2 = s[base + 2 * stride];
    let d3 = s[base + 3 * stride];
    let d4 = s[base + 4 * stride];
    let d5 = s[base + 5 * stride];
    for k in 0..NT {
        s[base][k] = d0[k] + 1.5 * d1[k] - 2.0 * d2[k] - 1.5 * d3[k] + d4[k];
        s[base + stride][k] = d4[k] - d1[k] - 2.5 * d2[k] - 0.5 * d3[k];
        s[base + 2 * stride][k] = d1[k] + 0.5 * d2[k] - 2.5 * d3[k] + d4[k];
        s[base + 3 * stride][k] = d4[k] - 0.5 * d1[k] - d2[k] + 0.5 * d3[k];
        s[base + 4 * stride][k] = 2.0 * d1[k] - d2[k] - 2.0 * d3[k] + d4[k];
        s[base + 5 * stride][k] = d1[k] + 1.5 * d2[k] - 2.0 * d3[k] - 1.5 * d4[k] + d5[k];
    }
}

/// `Aᵀ` applied to entries `base + (0..6)·stride` of `s`, written to `base + (0..4)·stride`.
#[inline(always)]
fn at_axis(s: &mut [[f32; NT]; XI], base: usize, stride: usize) {
    let m0 = s[base];
    let m1 = s[base + stride];
    let m2 = s[base + 2 * stride];
    let m3 = s[base + 3 * stride];
    let m4 = s[base + 4 * stride];
    let m5 = s[base + 5 * stride];
    for k in 0..NT {
        let (sum, diff) = (m1[k] + m2[k], m1[k] - m2[k]);
        s[base][k] = m0[k] + sum + m3[k] + m4[k];
        s[base + stride][k] = diff + 2.0 * m3[k] - 0.5 * m4[k];
        s[base + 2 * stride][k] = sum + 4.0 * m3[k] + 0.25 * m4[k];
        s[base + 3 * stride][k] = diff + 8.0 * m3[k] - 0.125 * m4[k] + m5[k];
    }
}

multiversion! {
    /// [`Algorithm::input_transform`] of F(4, 3).
    fn input_transform(x: &[f32], next: &[f32], g: &ConvGeometry, blocks: &[Block], dst: VDest) {
        let [d, h, wd] = g.input;
        let [(pd, _), (ph, _), (pw, _)] = g.padding;
        let mut s = [[0f32; NT]; XI];
        let mut buf = [0f32; SPAN];
        for b in blocks {
            for run in &b.runs {
                // Columns c0..c0 + SPAN of the padded row; those inside the input are lo..hi.
                let c0 = (4 * run.tx0).wrapping_sub(pw);
                let lo = pw.saturating_sub(4 * run.tx0);
                let hi = SPAN.min((wd + pw).saturating_sub(4 * run.tx0));
                for dz in 0..E {
                    let z = (4 * run.tz + dz).wrapping_sub(pd);
                    for dy in 0..E {
                        let y = (4 * run.ty + dy).wrapping_sub(ph);
                        // Tile k reads columns 4k..4k + 6: entry e of its row is column 4k + e.
                        let mut t = [[0f32; NT]; E];
                        if z < d && y < h {
                            let row = &x[(z * h + y) * wd..][..wd];
                            let span = padded_span(row, c0, lo, hi, &mut buf);
                            prefetch_span(next, (z * h + y) * wd + c0.wrapping_add(lo), hi.saturating_sub(lo));
                            split_row::<4, E>(span, &mut t);
                        }
                        let r = (dz * E + dy) * E;
                        put_lanes(&t, &mut s[r..r + E], run);
                    }
                }
            }
            for base in (0..XI).step_by(E) {
                bt_axis(&mut s, base, 1);
            }
            for (dz, dx) in (0..E).flat_map(|dz| (0..E).map(move |dx| (dz, dx))) {
                bt_axis(&mut s, dz * E * E + dx, E);
            }
            for base in 0..E * E {
                bt_axis(&mut s, base, E * E);
            }
            store_tiles(&s, b, dst);
        }
    }
}

multiversion! {
    /// [`Algorithm::output_transform`] of F(4, 3).
    fn output_transform(m: &[f32], tc: usize, blocks: &[Block], g: &ConvGeometry, out: OutDest, co: usize) {
        let [od, oh, ow] = g.output;
        let ovol = g.output_volume();
        let mut s = [[0f32; NT]; XI];
        for b in blocks {
            load_tiles(m, tc, b, &mut s);
            for base in 0..E * E {
                at_axis(&mut s, base, E * E);
            }
            for (dz, dx) in (0..4).flat_map(|dz| (0..E).map(move |dx| (dz, dx))) {
                at_axis(&mut s, dz * E * E + dx, E);
            }
            for (dz, dy) in (0..4).flat_map(|dz| (0..4).map(move |dy| (dz, dy))) {
                at_axis(&mut s, (dz * E + dy) * E, 1);
            }
            for (run, i, j) in b.runs.iter().flat_map(|run| (0..16).map(move |ij| (run, ij / 4, ij % 4))) {
                let (z, y) = (4 * run.tz + i, 4 * run.ty + j);
                if z >= od || y >= oh {
                    continue;
                }
                let x0 = 4 * run.tx0;
                let count = (4 * run.n).min(ow - x0);
                let at = co * ovol + (z * oh + y) * ow + x0;
                if at + count > out.len {
                    continue;
                }
                let q = &s[(i * E + j) * E..][..4];
                // SAFETY: `at + count` ≤ out.len (checked above); these outputs (channel co,
                // tiles of this block) are written by this task only.
                let row = unsafe { std::slice::from_raw_parts_mut(out.out.get().add(at), count) };
                let full = count / 4;
                for (k, quad) in (run.lane..).zip(row.chunks_exact_mut(4)) {
                    quad.copy_from_slice(&[q[0][k], q[1][k], q[2][k], q[3][k]]);
                }
                for (e, v) in row[4 * full..].iter_mut().enumerate() {
                    *v = q[e][run.lane + full];
                }
            }
        }
    }
}

/// `A` (the adjoint of [`at_axis`]) applied to entries `base + (0..4)·stride` of `s`, written
/// to `base + (0..6)·stride`.
#[inline(always)]
fn a_axis(s: &mut [[f32; NT]; XI], base: usize, stride: usize) {
    let y0 = s[base];
    let y1 = s[base + stride];
    let y2 = s[base + 2 * stride];
    let y3 = s[base + 3 * stride];
    for k in 0..NT {
        let (even, odd) = (y0[k] + y2[k], y1[k] + y3[k]);
        s[base + stride][k] = even + odd;
        s[base + 2 * stride][k] = even - odd;
        s[base + 3 * stride][k] = y0[k] + 2.0 * y1[k] + 4.0 * y2[k] + 8.0 * y3[k];
        s[base + 4 * stride][k] = y0[k] - 0.5 * y1[k] + 0.25 * y2[k] - 0.125 * y3[k];
        s[base + 5 * stride][k] = y3[k];
    }
}

/// `Gᵀ` (the adjoint of [`g_axis`]) applied to entries `base + (0..6)·stride` of `s`, written
/// to `base + (0..3)·stride`.
#[inline(always)]
fn gt_axis(s: &mut [[f32; NT]; XI], base: usize, stride: usize) {
    let u0 = s[base];
    let u1 = s[base + stride];
    let u2 = s[base + 2 * stride];
    let u3 = s[base + 3 * stride];
    let u4 = s[base + 4 * stride];
    let u5 = s[base + 5 * stride];
    for k in 0..NT {
        let (sum, diff) = ((u1[k] + u2[k]) * (1.0 / 3.0), (u2[k] - u1[k]) * (1.0 / 3.0));
        s[base][k] = u0[k] + diff + (u3[k] - 16.0 * u4[k]) * (1.0 / 15.0);
        s[base + stride][k] = (2.0 * u3[k] + 8.0 * u4[k]) * (1.0 / 15.0) - sum;
        s[base + 2 * stride][k] = diff + (4.0 * u3[k] - 4.0 * u4[k]) * (1.0 / 15.0) + u5[k];
    }
}

multiversion! {
    /// [`Algorithm::grad_transform`] of F(4, 3).
    fn grad_transform(grad: &[f32], g: &ConvGeometry, blocks: &[Block], dst: VDest) {
        let mut s = [[0f32; NT]; XI];
        for b in blocks {
            load_grad::<4, E>(grad, g, b, &mut s);
            for (dz, dy) in (0..4).flat_map(|dz| (0..4).map(move |dy| (dz, dy))) {
                a_axis(&mut s, (dz * E + dy) * E, 1);
            }
            for (dz, dx) in (0..4).flat_map(|dz| (0..E).map(move |dx| (dz, dx))) {
                a_axis(&mut s, dz * E * E + dx, E);
            }
            for base in 0..E * E {
                a_axis(&mut s, base, E * E);
            }
            store_tiles(&s, b, dst);
        }
    }
}

multiversion! {
    /// [`Algorithm::weight_adjoint`] of F(4, 3) (input channels in the lanes).
    fn weight_adjoint(du: &[f32], c_out: usize, c_in: usize, co: usize, dst: &mut [f32]) {
        adjoint_by_lanes(du, (c_out, c_in, co), dst, &tap_positions(E), |s| {
            for base in 0..E * E {
                gt_axis(s, base, E * E);
            }
            for (dz, dx) in (0..3).flat_map(|dz| (0..E).map(move |dx| (dz, dx))) {
                gt_axis(s, dz * E * E + dx, E);
            }
            for (dz, dy) in (0..3).flat_map(|dz| (0..3).map(move |dy| (dz, dy))) {
                gt_axis(s, (dz * E + dy) * E, 1);
            }
        });
    }
}
