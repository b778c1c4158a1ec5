//! `loss.png`: the loss curves of a run's `log.jsonl`, one panel per loss, the raw curve in
//! light grey under a moving average, on a log scale when every value is positive.

use std::path::Path;

use image::{ImageEncoder as _, Rgb, RgbImage};
use serde_json::Value;

use crate::error::{io, Result, TrainError};
use crate::run::write_atomically;

/// Size of the picture in pixels.
const WIDTH: u32 = 900;
const HEIGHT: u32 = 500;
/// Keys of a log line that are not losses.
const NOT_LOSSES: [&str; 4] = ["step", "epoch", "lr", "seconds"];
/// Panel order of the keys the trainers write; other keys follow alphabetically.
const ORDER: [&str; 6] = [
    "loss",
    "l1",
    "kl",
    "generator_adversarial",
    "discriminator",
    "val_loss",
];
/// The moving average's window as a fraction of a curve's points.
const SMOOTHING: f64 = 0.02;
/// Text is the 3×5 font scaled by this; a character advances `GLYPH_ADVANCE` pixels.
const GLYPH_SCALE: i64 = 2;
const GLYPH_ADVANCE: i64 = 4 * GLYPH_SCALE;
const GLYPH_HEIGHT: i64 = 5 * GLYPH_SCALE;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const TEXT: Rgb<u8> = Rgb([40, 40, 40]);
const FRAME: Rgb<u8> = Rgb([120, 120, 120]);
const GRID: Rgb<u8> = Rgb([232, 232, 232]);
const RAW: Rgb<u8> = Rgb([195, 195, 195]);
/// Moving-average colours, one per panel in turn.
const PALETTE: [Rgb<u8>; 6] = [
    Rgb([31, 119, 180]),
    Rgb([214, 39, 40]),
    Rgb([44, 160, 44]),
    Rgb([148, 103, 189]),
    Rgb([255, 127, 14]),
    Rgb([23, 190, 207]),
];

/// One loss: its name and `(step, value)` points in step order.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// Draws the losses of a `log.jsonl` (one JSON object per line with a numeric `step`) into a
/// 900×500 PNG at `png`, written atomically: one panel per numeric key other than `step`,
/// `epoch`, `lr` and `seconds` (`val_loss`, present on validation steps only, included), loss
/// against step, on a log10 scale when all of a panel's values are positive, the raw curve in
/// light grey under a centred moving average over 2 % of its points.
///
/// # Errors
/// [`TrainError::Io`] when the log cannot be read or the PNG written;
/// [`TrainError::LossLog`] naming the line that is not a JSON object with a numeric `step`;
/// [`TrainError::EmptyLossLog`] when no line holds a loss; [`TrainError::Png`] when the
/// picture cannot be encoded.
pub fn plot_losses(log: &Path, png: &Path) -> Result<()> {
    let text = std::fs::read_to_string(log).map_err(io(log))?;
    let series = parse_log(log, &text)?;
    let image = draw(&series);
    let mut encoded = Vec::new();
    image::codecs::png::PngEncoder::new(&mut encoded)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| TrainError::Png {
            path: png.to_path_buf(),
            reason: e.to_string(),
        })?;
    write_atomically(png, &encoded)
}

/// Redraws `out/loss.png` from `out/log.jsonl` for a trainer, which goes on when it fails:
/// the failure comes back as a warning to report.
pub(crate) fn plot_run(out: &Path) -> Option<String> {
    plot_losses(&out.join("log.jsonl"), &out.join("loss.png"))
        .err()
        .map(|e| format!("loss.png not drawn: {e}"))
}

/// The loss series of a log, in panel order.
fn parse_log(path: &Path, text: &str) -> Result<Vec<Series>> {
    let mut series: Vec<Series> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| TrainError::LossLog {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let value: Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON ({e})")))?;
        let Value::Object(map) = value else {
            return Err(bad("not a JSON object".into()));
        };
        let step = map
            .get("step")
            .and_then(Value::as_f64)
            .ok_or_else(|| bad("no numeric `step`".into()))?;
        for (key, v) in &map {
            let Some(v) = v.as_f64().filter(|_| !NOT_LOSSES.contains(&key.as_str())) else {
                continue;
            };
            match series.iter_mut().find(|s| s.name == *key) {
                Some(s) => s.points.push((step, v)),
                None => series.push(Series {
                    name: key.clone(),
                    points: vec![(step, v)],
                }),
            }
        }
    }
    if series.is_empty() {
        return Err(TrainError::EmptyLossLog {
            path: path.to_path_buf(),
        });
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series.sort_by_key(|s| {
        let rank = ORDER.iter().position(|k| *k == s.name);
        (rank.unwrap_or(ORDER.len()), s.name.clone())
    });
    Ok(series)
}

/// A rectangle of the picture: left, top, width, height.
type Rect = (i64, i64, i64, i64);

/// The panels of `n` curves: up to three side by side, more on a near-square grid.
fn layout(n: usize) -> Vec<Rect> {
    let cols = if n <= 3 {
        n.max(1)
    } else {
        (n as f64).sqrt().ceil() as usize
    };
    let rows = n.div_ceil(cols).max(1);
    let (w, h) = (WIDTH as i64 / cols as i64, HEIGHT as i64 / rows as i64);
    (0..n)
        .map(|i| ((i % cols) as i64 * w, (i / cols) as i64 * h, w, h))
        .collect()
}

fn draw(series: &[Series]) -> RgbImage {
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, WHITE);
    for (i, (s, rect)) in series.iter().zip(layout(series.len())).enumerate() {
        draw_panel(&mut img, s, rect, PALETTE[i % PALETTE.len()]);
    }
    img
}

/// `(lo, hi)` of `values`, widened when they are all equal.
fn range(values: impl Iterator<Item = f64>, widen: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if hi > lo {
        (lo, hi)
    } else {
        (lo - widen, hi + widen)
    }
}

fn draw_panel(img: &mut RgbImage, s: &Series, (x0, y0, w, h): Rect, colour: Rgb<u8>) {
    let log_scale = s.points.iter().all(|p| p.1 > 0.0);
    let scale = |v: f64| if log_scale { v.log10() } else { v };
    let steps: Vec<f64> = s.points.iter().map(|p| p.0).collect();
    let raw: Vec<f64> = s.points.iter().map(|p| scale(p.1)).collect();
    let values: Vec<f64> = s.points.iter().map(|p| p.1).collect();
    let smooth: Vec<f64> = moving_average(&values).into_iter().map(scale).collect();

    let (xlo, xhi) = range(steps.iter().copied(), 0.5);
    let (ylo, yhi) = {
        let widen = if log_scale {
            0.5
        } else {
            raw[0].abs().max(1.0) * 0.5
        };
        let (lo, hi) = range(raw.iter().copied(), widen);
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    };
    let y_ticks = if log_scale {
        log_ticks(ylo, yhi)
    } else {
        linear_ticks(ylo, yhi, (h / 50).max(3) as f64, 0.0)
    };
    let x_ticks = linear_ticks(xlo, xhi, (w / 100).max(3) as f64, 1.0);

    let label_chars = y_ticks.iter().map(|t| t.1.len()).max().unwrap_or(1) as i64;
    let (left, right) = (x0 + 8 + label_chars * GLYPH_ADVANCE, x0 + w - 14);
    let (top, bottom) = (y0 + 28, y0 + h - 26);
    let px = |x: f64| left as f64 + (x - xlo) / (xhi - xlo) * (right - left) as f64;
    let py = |y: f64| bottom as f64 - (y - ylo) / (yhi - ylo) * (bottom - top) as f64;

    let title_x = x0 + (w - text_width(&s.name)) / 2;
    draw_text(img, title_x.max(x0 + 2), y0 + 10, &s.name, TEXT);
    for (v, label) in &y_ticks {
        let y = py(*v).round() as i64;
        line(img, (left + 1, y), (right - 1, y), GRID);
        line(img, (left - 4, y), (left, y), FRAME);
        let x = left - 6 - text_width(label);
        draw_text(img, x, y - GLYPH_HEIGHT / 2, label, TEXT);
    }
    for (v, label) in &x_ticks {
        let x = px(*v).round() as i64;
        line(img, (x, top + 1), (x, bottom - 1), GRID);
        line(img, (x, bottom), (x, bottom + 4), FRAME);
        draw_text(img, x - text_width(label) / 2, bottom + 8, label, TEXT);
    }
    line(img, (left, top), (right, top), FRAME);
    line(img, (left, bottom), (right, bottom), FRAME);
    line(img, (left, top), (left, bottom), FRAME);
    line(img, (right, top), (right, bottom), FRAME);

    let to_pixels = |ys: &[f64]| -> Vec<(i64, i64)> {
        steps
            .iter()
            .zip(ys)
            .map(|(&x, &y)| (px(x).round() as i64, py(y).round() as i64))
            .collect()
    };
    polyline(img, &to_pixels(&raw), RAW, 0);
    polyline(img, &to_pixels(&smooth), colour, 1);
}

/// Joins `points` with lines `1 + 2·thickness` pixels thick (a lone point becomes a square).
fn polyline(img: &mut RgbImage, points: &[(i64, i64)], colour: Rgb<u8>, thickness: i64) {
    let t = thickness.max(1);
    if let [p] = points {
        for d in -t..=t {
            line(img, (p.0 - t, p.1 + d), (p.0 + t, p.1 + d), colour);
        }
    }
    for pair in points.windows(2) {
        for d in -thickness..=thickness {
            line(
                img,
                (pair[0].0, pair[0].1 + d),
                (pair[1].0, pair[1].1 + d),
                colour,
            );
        }
    }
}

/// Centred moving average over 2 % of the points (at least one).
fn moving_average(values: &[f64]) -> Vec<f64> {
    let n = values.len();
    let window = ((n as f64 * SMOOTHING).round() as usize).max(1);
    let half = window / 2;
    let mut prefix = vec![0.0; n + 1];
    for (i, v) in values.iter().enumerate() {
        prefix[i + 1] = prefix[i] + v;
    }
    (0..n)
        .map(|i| {
            let (a, b) = (i.saturating_sub(half), (i + window - half).min(n));
            (prefix[b] - prefix[a]) / (b - a) as f64
        })
        .collect()
}

/// A round step (1, 2 or 5 × 10ᵏ) cutting `span` into about `target` parts.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = span / target;
    let magnitude = 10f64.powf(raw.log10().floor());
    let m = match raw / magnitude {
        r if r < 1.5 => 1.0,
        r if r < 3.5 => 2.0,
        r if r < 7.5 => 5.0,
        _ => 10.0,
    };
    m * magnitude
}

/// Round ticks in `[lo, hi]`, at least `min_step` apart: (position, label).
fn linear_ticks(lo: f64, hi: f64, target: f64, min_step: f64) -> Vec<(f64, String)> {
    let step = nice_step(hi - lo, target).max(min_step);
    let (first, last) = ((lo / step).ceil() as i64, (hi / step).floor() as i64);
    (first..=last)
        .map(|k| {
            let v = k as f64 * step;
            (v, format_number(v, step))
        })
        .collect()
}

/// Ticks of a log10 axis spanning `[lo, hi]` (in log10 units): powers of ten (every other
/// one or more sparsely when there are many), else 1-2-5 multiples, else round values.
fn log_ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let decades = lo.floor() as i32..=hi.ceil() as i32;
    for multiples in [&[1.0][..], &[1.0, 2.0, 5.0]] {
        let ticks: Vec<f64> = decades
            .clone()
            .flat_map(|e| multiples.iter().map(move |m| m * 10f64.powi(e)))
            .filter(|v| (lo..=hi).contains(&v.log10()))
            .collect();
        if ticks.len() >= 2 {
            let every = ticks.len().div_ceil(8);
            return ticks
                .into_iter()
                .step_by(every)
                .map(|v| (v.log10(), format_number(v, v)))
                .collect();
        }
    }
    linear_ticks(10f64.powf(lo), 10f64.powf(hi), 4.0, 0.0)
        .into_iter()
        .filter(|(v, _)| *v > 0.0)
        .map(|(v, label)| (v.log10(), label))
        .collect()
}

/// `v` with as many decimals as `precision` needs (`0.05`, `120`), or as `2.5e-5` when very
/// small or large.
fn format_number(v: f64, precision: f64) -> String {
    let precision = precision.abs();
    if v.abs() < precision * 1e-6 || v == 0.0 {
        return "0".into();
    }
    if v.abs() >= 1e6 || v.abs() < 1e-3 {
        let s = format!("{v:.1e}");
        return s.replace(".0e", "e");
    }
    let decimals = if precision >= 1.0 {
        0
    } else {
        (-precision.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

/// Width in pixels of `text` as [`draw_text`] writes it.
fn text_width(text: &str) -> i64 {
    (text.chars().count() as i64 * GLYPH_ADVANCE - GLYPH_SCALE).max(0)
}

/// Writes `text` with its top-left corner at `(x, y)`.
fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, colour: Rgb<u8>) {
    for (i, c) in text.chars().enumerate() {
        let rows = glyph(c);
        let gx = x + i as i64 * GLYPH_ADVANCE;
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..3 {
                if bits & (0b100 >> col) == 0 {
                    continue;
                }
                for dy in 0..GLYPH_SCALE {
                    for dx in 0..GLYPH_SCALE {
                        let px = gx + col * GLYPH_SCALE + dx;
                        put(img, px, y + r as i64 * GLYPH_SCALE + dy, colour);
                    }
                }
            }
        }
    }
}

/// The 3×5 bitmap of `c` (rows top to bottom, bit 2 the left column); `?` for a character
/// the font lacks, blank for a space.
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_lowercase() {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b001, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        '.' => [0b000, 0b000, 0b000, 0b000, 0b010],
        '-' => [0b000, 0b000, 0b111, 0b000, 0b000],
        '+' => [0b000, 0b010, 0b111, 0b010, 0b000],
        '_' => [0b000, 0b000, 0b000, 0b000, 0b111],
        ' ' => [0; 5],
        'a' => [0b000, 0b011, 0b101, 0b101, 0b011],
        'b' => [0b100, 0b110, 0b101, 0b101, 0b110],
        'c' => [0b000, 0b011, 0b100, 0b100, 0b011],
        'd' => [0b001, 0b011, 0b101, 0b101, 0b011],
        'e' => [0b000, 0b010, 0b111, 0b100, 0b011],
        'f' => [0b011, 0b100, 0b110, 0b100, 0b100],
        'g' => [0b000, 0b011, 0b101, 0b011, 0b110],
        'h' => [0b100, 0b110, 0b101, 0b101, 0b101],
        'i' => [0b010, 0b000, 0b010, 0b010, 0b010],
        'j' => [0b001, 0b000, 0b001, 0b101, 0b010],
        'k' => [0b100, 0b101, 0b110, 0b110, 0b101],
        'l' => [0b010, 0b010, 0b010, 0b010, 0b011],
        'm' => [0b000, 0b110, 0b111, 0b101, 0b101],
        'n' => [0b000, 0b110, 0b101, 0b101, 0b101],
        'o' => [0b000, 0b010, 0b101, 0b101, 0b010],
        'p' => [0b000, 0b110, 0b101, 0b110, 0b100],
        'q' => [0b000, 0b011, 0b101, 0b011, 0b001],
        'r' => [0b000, 0b011, 0b100, 0b100, 0b100],
        's' => [0b000, 0b011, 0b110, 0b011, 0b110],
        't' => [0b010, 0b111, 0b010, 0b010, 0b011],
        'u' => [0b000, 0b101, 0b101, 0b101, 0b011],
        'v' => [0b000, 0b101, 0b101, 0b101, 0b010],
        'w' => [0b000, 0b101, 0b101, 0b111, 0b010],
        'x' => [0b000, 0b101, 0b010, 0b010, 0b101],
        'y' => [0b000, 0b101, 0b011, 0b001, 0b110],
        'z' => [0b000, 0b111, 0b010, 0b100, 0b111],
        _ => [0b111, 0b001, 0b010, 0b000, 0b010],
    }
}

/// A line from `a` to `b` (Bresenham), clipped to the picture.
fn line(img: &mut RgbImage, a: (i64, i64), b: (i64, i64), colour: Rgb<u8>) {
    let (dx, dy) = ((b.0 - a.0).abs(), -(b.1 - a.1).abs());
    let (sx, sy) = ((b.0 - a.0).signum(), (b.1 - a.1).signum());
    let (mut x, mut y, mut err) = (a.0, a.1, dx + dy);
    loop {
        put(img, x, y, colour);
        if (x, y) == b {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, colour: Rgb<u8>) {
    if (0..img.width() as i64).contains(&x) && (0..img.height() as i64).contains(&y) {
        img.put_pixel(x as u32, y as u32, colour);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 50-step log: `loss`, `l1` and `kl` every step, the adversarial terms from step 20
    /// (the discriminator's loss once 0, so its panel is linear), `val_loss` every 10 steps.
    fn synthetic_log() -> String {
        (1..=50u32)
            .map(|s| {
                let t = s as f64;
                let mut v = serde_json::json!({
                    "step": s, "epoch": s / 10, "lr": 1e-4, "seconds": t * 0.5,
                    "loss": 1.0 / t + 0.01 * (t * 1.3).sin().abs(),
                    "l1": 0.5 / t.sqrt(),
                    "kl": 100.0 * t * t,
                });
                if s >= 20 {
                    v["generator_adversarial"] = serde_json::json!(0.3 + 0.01 * t.cos());
                    v["discriminator"] = serde_json::json!(if s == 30 { 0.0 } else { 0.25 });
                }
                if s % 10 == 0 {
                    v["val_loss"] = serde_json::json!(2.0 / t);
                }
                format!("{v}\n")
            })
            .collect()
    }

    #[test]
    fn a_50_step_log_draws_every_panel() {
        let dir = tempfile::tempdir().unwrap();
        let (log, png) = (dir.path().join("log.jsonl"), dir.path().join("loss.png"));
        std::fs::write(&log, synthetic_log()).unwrap();
        plot_losses(&log, &png).unwrap();
        let img = image::open(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        let names: Vec<String> = parse_log(&log, &synthetic_log())
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ORDER);
        for (i, (x0, y0, w, h)) in layout(6).into_iter().enumerate() {
            let pixels: Vec<Rgb<u8>> = (y0..y0 + h)
                .flat_map(|y| (x0..x0 + w).map(move |x| (x, y)))
                .map(|(x, y)| *img.get_pixel(x as u32, y as u32))
                .collect();
            let non_white = pixels.iter().filter(|p| **p != WHITE).count();
            let curve = pixels.iter().filter(|p| **p == PALETTE[i]).count();
            assert!(non_white > 500, "panel {i}: {non_white} non-white pixels");
            assert!(curve > 0, "panel {i} has no moving average");
        }
        // Nothing but the log and the PNG is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_malformed_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (log, png) = (dir.path().join("log.jsonl"), dir.path().join("loss.png"));
        let good = "{\"step\":1,\"loss\":0.5}\n{\"step\":2,\"loss\":0.4}\n";
        for (bad, reason) in [
            ("{\"step\":3,\"loss\":", "not JSON"),
            ("[1, 2]", "not a JSON object"),
            ("{\"loss\":0.3}", "step"),
        ] {
            std::fs::write(&log, format!("{good}{bad}\n")).unwrap();
            let err = plot_losses(&log, &png).unwrap_err();
            assert!(
                matches!(err, TrainError::LossLog { line: 3, .. }),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains("log.jsonl, line 3") && text.contains(reason),
                "{text}"
            );
        }
        assert!(!png.exists());
    }

    #[test]
    fn an_empty_log_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (log, png) = (dir.path().join("log.jsonl"), dir.path().join("loss.png"));
        for text in [
            "",
            "\n\n",
            "{\"step\":1,\"epoch\":0,\"lr\":0.1,\"seconds\":2}\n",
        ] {
            std::fs::write(&log, text).unwrap();
            let err = plot_losses(&log, &png).unwrap_err();
            assert!(matches!(err, TrainError::EmptyLossLog { .. }), "{err:?}");
            assert!(err.to_string().contains("log.jsonl"), "{err}");
        }
        let err = plot_losses(&dir.path().join("missing.jsonl"), &png).unwrap_err();
        assert!(matches!(err, TrainError::Io { .. }), "{err:?}");
        assert!(!png.exists());
    }

    #[test]
    fn ticks_are_round_and_labelled() {
        let labels = |t: Vec<(f64, String)>| t.into_iter().map(|t| t.1).collect::<Vec<_>>();
        assert_eq!(
            labels(log_ticks(0.005f64.log10(), 20f64.log10())),
            ["0.01", "0.1", "1", "10"]
        );
        assert_eq!(
            labels(log_ticks(0.15f64.log10(), 0.9f64.log10())),
            ["0.2", "0.5"]
        );
        assert_eq!(
            labels(log_ticks(0.9e-6f64.log10(), 2e-5f64.log10())),
            ["1e-6", "1e-5"]
        );
        assert_eq!(
            labels(linear_ticks(1.0, 50.0, 4.0, 1.0)),
            ["10", "20", "30", "40", "50"]
        );
        assert_eq!(
            labels(linear_ticks(-0.03, 0.27, 3.0, 0.0)),
            ["0", "0.1", "0.2"]
        );
        assert_eq!(moving_average(&[1.0, 2.0, 3.0]), [1.0, 2.0, 3.0]);
        let avg = moving_average(&(0..100).map(f64::from).collect::<Vec<_>>());
        // A window of 2: each point and the one before.
        assert_eq!((avg[0], avg[50], avg[99]), (0.0, 49.5, 98.5));
    }
}
