//! F(2×2×2, 3×3×3): the Lavin–Gray F(2, 3) matrices along each axis, 4×4×4 input tiles.

use super::{
    adjoint_by_lanes, avx512_available, load_grad, load_taps, load_tiles, padded_span,
    prefetch_span, put_lanes, split_row, store_taps, store_tiles, tap_positions, Algorithm, Block,
    ConvGeometry, OutDest, VDest, NT,
};

/// F(2×2×2, 3×3×3).
pub(super) struct F2;

/// Transformed taps per tile (4×4×4).
const XI: usize = 64;

algorithm!(F2, 2);

multiversion! {
    /// [`Algorithm::transform_weights_w`] of F(2, 3) (the `W` channels are the lanes of the
    /// transform).
    fn transform_weights_w<const W: usize>(w: &[f32], c_in: usize, co0: usize, dst: &mut [f32]) {
        // s[(a·4 + b)·4 + c][lane]: taps in, transformed taps out, axis by axis; every entry
        // read is written first, for every input channel.
        // Where tap (a, b, c) of the 3×3×3 kernel starts: entry (a·4 + b)·4 + c.
        const POS: [usize; 27] = tap_positions(4);
        let mut s = [[0f32; 8]; XI];
        for ci in 0..c_in {
            load_taps::<W>(w, c_in, co0, ci, &POS, &mut s);
            for ab in 0..9 {
                g_axis(&mut s, (ab / 3 * 4 + ab % 3) * 4, 1);
            }
            for ac in 0..12 {
                g_axis(&mut s, ac / 4 * 16 + ac % 4, 4);
            }
            for bc in 0..16 {
                g_axis(&mut s, bc, 16);
            }
            store_taps::<W>(&s, c_in, ci, dst);
        }
    }
}

/// `G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]` applied to entries
/// `base + (0..3)·stride` of `s`, written to `base + (0..4)·stride`.
#[inline(always)]
fn g_axis<const L: usize>(s: &mut [[f32; L]; XI], base: usize, stride: usize) {
    let g0 = s[base];
    let g1 = s[base + stride];
    let g2 = s[base + 2 * stride];
    for l in 0..L {
        let (even, odd) = (0.5 * (g0[l] + g2[l]), 0.5 * g1[l]);
        s[base + stride][l] = even + odd;
        s[base + 2 * stride][l] = even - odd;
        s[base + 3 * stride][l] = g2[l];
    }
}

/// `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]` applied in place to
/// entries `base + (0..4)·stride` of `s`.
#[inline(always)]
fn bt_axis(s: &mut [[f32; NT]; XI], base: usize, stride: usize) {
    let d0 = s[base];
    let d1 = s[base + stride];
    let d2 = s[base + 2 * stride];
    let d3 = s[base + 3 * stride];
    for k in 0..NT {
        s[base][k] = d0[k] - d2[k];
        s[base + stride][k] = d1[k] + d2[k];
        s[base + 2 * stride][k] = d2[k] - d1[k];
        s[base + 3 * stride][k] = d1[k] - d3[k];
    }
}

/// `Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]` applied to entries `base + (0..4)·stride` of `s`,
/// written to `base` and `base + stride`.
#[inline(always)]
fn at_axis(s: &mut [[f32; NT]; XI], base: usize, stride: usize) {
    let m0 = s[base];
    let m1 = s[base + stride];
    let m2 = s[base + 2 * stride];
    let m3 = s[base + 3 * stride];
    for k in 0..NT {
        s[base][k] = m0[k] + m1[k] + m2[k];
        s[base + stride][k] = m1[k] - m2[k] - m3[k];
    }
}

/// Input columns a block of [`NT`] tiles reads along the width.
const SPAN: usize = 2 * NT + 2;

multiversion! {
    /// [`Algorithm::input_transform`] of F(2, 3).
    fn input_transform(x: &[f32], next: &[f32], g: &ConvGeometry, blocks: &[Block], dst: VDest) {
        let [d, h, wd] = g.input;
        let [(pd, _), (ph, _), (pw, _)] = g.padding;
        let mut s = [[0f32; NT]; XI];
        let mut buf = [0f32; SPAN];
        for b in blocks {
            for run in &b.runs {
                // Columns c0..c0 + SPAN of the padded row; those inside the input are lo..hi.
                let c0 = (2 * run.tx0).wrapping_sub(pw);
                let lo = pw.saturating_sub(2 * run.tx0);
                let hi = SPAN.min((wd + pw).saturating_sub(2 * run.tx0));
                for dz in 0..4 {
                    let z = (2 * run.tz + dz).wrapping_sub(pd);
                    for dy in 0..4 {
                        let y = (2 * run.ty + dy).wrapping_sub(ph);
                        // Tile k reads columns 2k..2k + 4: entry e of its row is column 2k + e.
                        let mut t = [[0f32; NT]; 4];
                        if z < d && y < h {
                            let row = &x[(z * h + y) * wd..][..wd];
                            let span = padded_span(row, c0, lo, hi, &mut buf);
                            prefetch_span(next, (z * h + y) * wd + c0.wrapping_add(lo), hi.saturating_sub(lo));
                            split_row::<2, 4>(span, &mut t);
                        }
                        let r = (dz * 4 + dy) * 4;
                        put_lanes(&t, &mut s[r..r + 4], run);
                    }
                }
            }
            // Nested loops over the bases: LLVM vectorised a plain range of them across the
            // bases, with gathers and scatters that are slow on this machine (`conv3d_time 256
            // 256 3 1 10 14 10 7`: 0.0167 s as written, 0.0200 s with ranges).
            for (dz, dy) in (0..4).flat_map(|dz| (0..4).map(move |dy| (dz, dy))) {
                bt_axis(&mut s, (dz * 4 + dy) * 4, 1);
            }
            for (dz, dx) in (0..4).flat_map(|dz| (0..4).map(move |dx| (dz, dx))) {
                bt_axis(&mut s, dz * 16 + dx, 4);
            }
            for (dy, dx) in (0..4).flat_map(|dy| (0..4).map(move |dx| (dy, dx))) {
                bt_axis(&mut s, dy * 4 + dx, 16);
            }
            store_tiles(&s, b, dst);
        }
    }
}

multiversion! {
    /// [`Algorithm::output_transform`] of F(2, 3).
    fn output_transform(m: &[f32], tc: usize, blocks: &[Block], g: &ConvGeometry, out: OutDest, co: usize) {
        let [od, oh, ow] = g.output;
        let ovol = g.output_volume();
        let mut s = [[0f32; NT]; XI];
        for b in blocks {
            load_tiles(m, tc, b, &mut s);
            for (dy, dx) in (0..4).flat_map(|dy| (0..4).map(move |dx| (dy, dx))) {
                at_axis(&mut s, dy * 4 + dx, 16);
            }
            for base in [0, 1, 2, 3, 16, 17, 18, 19] {
                at_axis(&mut s, base, 4);
            }
            for base in [0, 4, 16, 20] {
                at_axis(&mut s, base, 1);
            }
            for (run, i, j) in b.runs.iter().flat_map(|run| (0..4).map(move |ij| (run, ij / 2, ij % 2))) {
                let (z, y) = (2 * run.tz + i, 2 * run.ty + j);
                if z >= od || y >= oh {
                    continue;
                }
                let x0 = 2 * run.tx0;
                let full = run.n.min((ow - x0) / 2);
                let odd = usize::from(full < run.n);
                let at = co * ovol + (z * oh + y) * ow + x0;
                if at + 2 * full + odd > out.len {
                    continue;
                }
                let lanes = run.lane..run.lane + run.n;
                let (q0, q1) = (&s[i * 16 + j * 4][lanes.clone()], &s[i * 16 + j * 4 + 1][lanes]);
                // SAFETY: `at + 2·full + odd` ≤ out.len (checked above); these outputs
                // (channel co, tiles of this block) are written by this task only.
                let row = unsafe {
                    std::slice::from_raw_parts_mut(out.out.get().add(at), 2 * full + odd)
                };
                for (k, pair) in row.chunks_exact_mut(2).enumerate() {
                    pair[0] = q0[k];
                    pair[1] = q1[k];
                }
                if odd == 1 {
                    row[2 * full] = q0[full];
                }
            }
        }
    }
}

/// `A` (the adjoint of [`at_axis`]) applied to entries `base` and `base + stride` of `s`,
/// written to `base + (0..4)·stride`.
#[inline(always)]
fn a_axis(s: &mut [[f32; NT]; XI], base: usize, stride: usize) {
    let y0 = s[base];
    let y1 = s[base + stride];
    for k in 0..NT {
        s[base + stride][k] = y0[k] + y1[k];
        s[base + 2 * stride][k] = y0[k] - y1[k];
        s[base + 3 * stride][k] = -y1[k];
    }
}

/// `Gᵀ` (the adjoint of [`g_axis`]) applied to entries `base + (0..4)·stride` of `s`, written
/// to `base + (0..3)·stride`.
#[inline(always)]
fn gt_axis(s: &mut [[f32; NT]; XI], base: usize, stride: usize) {
    let u0 = s[base];
    let u1 = s[base + stride];
    let u2 = s[base + 2 * stride];
    let u3 = s[base + 3 * stride];
    for k in 0..NT {
        let (sum, diff) = (0.5 * (u1[k] + u2[k]), 0.5 * (u1[k] - u2[k]));
        s[base][k] = u0[k] + sum;
        s[base + stride][k] = diff;
        s[base + 2 * stride][k] = sum + u3[k];
    }
}

multiversion! {
    /// [`Algorithm::grad_transform`] of F(2, 3).
    fn grad_transform(grad: &[f32], g: &ConvGeometry, blocks: &[Block], dst: VDest) {
        let mut s = [[0f32; NT]; XI];
        for b in blocks {
            load_grad::<2, 4>(grad, g, b, &mut s);
            for base in [0, 4, 16, 20] {
                a_axis(&mut s, base, 1);
            }
            for base in [0, 1, 2, 3, 16, 17, 18, 19] {
                a_axis(&mut s, base, 4);
            }
            for base in 0..16 {
                a_axis(&mut s, base, 16);
            }
            store_tiles(&s, b, dst);
        }
    }
}

multiversion! {
    /// [`Algorithm::weight_adjoint`] of F(2, 3) (input channels in the lanes).
    fn weight_adjoint(du: &[f32], c_out: usize, c_in: usize, co: usize, dst: &mut [f32]) {
        adjoint_by_lanes(du, (c_out, c_in, co), dst, &tap_positions(4), |s| {
            for base in 0..16 {
                gt_axis(s, base, 16);
            }
            for base in [0, 1, 2, 3, 16, 17, 18, 19, 32, 33, 34, 35] {
                gt_axis(s, base, 4);
            }
            for base in [0, 4, 8, 16, 20, 24, 32, 36, 40] {
                gt_axis(s, base, 1);
            }
        });
    }
}
