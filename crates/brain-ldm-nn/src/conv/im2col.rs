//! Gathering convolution windows into columns, one tile of output voxels at a time.

use super::geometry::ConvGeometry;
use std::ops::Range;

/// Fills row `(ci − channels.start)·taps + tap` of `col` (rows `stride` apart) with the input
/// value under tap `tap` of output voxels `n0..n0 + nt` (raster order), zero in the padding.
pub(super) fn im2col_tile(
    x: &[f32],
    g: &ConvGeometry,
    channels: Range<usize>,
    n0: usize,
    nt: usize,
    col: &mut [f32],
    stride: usize,
) {
    let [d, h, w] = g.input;
    let [kd, kh, kw] = g.kernel;
    let [sd, sh, sw] = g.stride;
    let [(pdb, _), (phb, _), (pwb, _)] = g.padding;
    let [_, oh, ow] = g.output;
    let vol = d * h * w;
    // Row segments of the tile: (first column, z, y, first x, length).
    let mut segments = Vec::new();
    let mut j = 0;
    while j < nt {
        let n = n0 + j;
        let (z, y, xx) = (n / (oh * ow), (n / ow) % oh, n % ow);
        let len = (ow - xx).min(nt - j);
        segments.push((j, z, y, xx, len));
        j += len;
    }
    let mut row = 0;
    for ci in channels {
        let xc = &x[ci * vol..(ci + 1) * vol];
        for a in 0..kd {
            for b in 0..kh {
                for c in 0..kw {
                    let dst_row = &mut col[row * stride..row * stride + nt];
                    for &(j0, z, y, x0, len) in &segments {
                        let dst = &mut dst_row[j0..j0 + len];
                        let iz = (z * sd + a).wrapping_sub(pdb);
                        let iy = (y * sh + b).wrapping_sub(phb);
                        if iz >= d || iy >= h {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &xc[(iz * h + iy) * w..(iz * h + iy + 1) * w];
                        if sw == 1 {
                            copy_shifted(dst, src, (x0 + c) as isize - pwb as isize);
                        } else {
                            for (k, v) in dst.iter_mut().enumerate() {
                                let ix = ((x0 + k) * sw + c).wrapping_sub(pwb);
                                *v = if ix < w { src[ix] } else { 0.0 };
                            }
                        }
                    }
                    row += 1;
                }
            }
        }
    }
}

/// `dst[k] = src[first + k]`, zero where `first + k` falls outside `src`.
fn copy_shifted(dst: &mut [f32], src: &[f32], first: isize) {
    let len = dst.len() as isize;
    let lo = (-first).clamp(0, len);
    let hi = (src.len() as isize - first).clamp(lo, len);
    dst[..lo as usize].fill(0.0);
    if hi > lo {
        dst[lo as usize..hi as usize]
            .copy_from_slice(&src[(first + lo) as usize..(first + hi) as usize]);
    }
    dst[hi as usize..].fill(0.0);
}
