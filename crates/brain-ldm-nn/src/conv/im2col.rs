//! Gathering convolution windows into columns, one tile of output voxels at a time, and
//! scattering columns back onto the windows (its adjoint, for the input gradient).

use super::geometry::ConvGeometry;
use std::ops::Range;

/// Where one run of a column row reads: the input row's offset from the start of the
/// channel block, and the input `x` index under the run's first output voxel (negative or
/// past the row in the padding).
type Source = Option<(usize, isize)>;

/// Calls `visit(row, j0, len, source)` for every run of output voxels `n0 + j0 ..
/// n0 + j0 + len` of the tile that lies on one output row, for every row
/// `(ci − channels.start)·taps + tap` of the tile's columns; `source` is `None` where the
/// tap reads the depth or height padding.
fn for_each_run(
    g: &ConvGeometry,
    channels: Range<usize>,
    n0: usize,
    nt: usize,
    mut visit: impl FnMut(usize, usize, usize, Source),
) {
    let [d, h, w] = g.input;
    let [kd, kh, kw] = g.kernel;
    let [sd, sh, sw] = g.stride;
    let [(pdb, _), (phb, _), (pwb, _)] = g.padding;
    let [_, oh, ow] = g.output;
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
    for channel in 0..channels.len() {
        for a in 0..kd {
            for b in 0..kh {
                for c in 0..kw {
                    for &(j0, z, y, x0, len) in &segments {
                        let iz = (z * sd + a).wrapping_sub(pdb);
                        let iy = (y * sh + b).wrapping_sub(phb);
                        let source = (iz < d && iy < h).then(|| {
                            (
                                (channel * d * h + iz * h + iy) * w,
                                (x0 * sw + c) as isize - pwb as isize,
                            )
                        });
                        visit(row, j0, len, source);
                    }
                    row += 1;
                }
            }
        }
    }
}

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
    let w = g.input[2];
    let sw = g.stride[2];
    let x = &x[channels.start * g.input_volume()..];
    for_each_run(g, channels, n0, nt, |row, j0, len, source| {
        let dst = &mut col[row * stride + j0..row * stride + j0 + len];
        let Some((start, first)) = source else {
            dst.fill(0.0);
            return;
        };
        let src = &x[start..start + w];
        if sw == 1 {
            copy_shifted(dst, src, first);
        } else {
            for (k, v) in dst.iter_mut().enumerate() {
                let ix = first + (k * sw) as isize;
                *v = if (0..w as isize).contains(&ix) {
                    src[ix as usize]
                } else {
                    0.0
                };
            }
        }
    });
}

/// The adjoint of [`im2col_tile`]: adds each element of `col`'s rows (rows `stride` apart)
/// onto the input voxel it was gathered from, in `grad_x`, which holds the channels
/// `channels` only; elements that came from the padding are dropped.
pub(super) fn col2im_tile(
    grad_x: &mut [f32],
    g: &ConvGeometry,
    channels: Range<usize>,
    n0: usize,
    nt: usize,
    col: &[f32],
    stride: usize,
) {
    let w = g.input[2];
    let sw = g.stride[2];
    for_each_run(g, channels, n0, nt, |row, j0, len, source| {
        let Some((start, first)) = source else {
            return;
        };
        let src = &col[row * stride + j0..row * stride + j0 + len];
        let dst = &mut grad_x[start..start + w];
        for (k, v) in src.iter().enumerate() {
            let ix = first + (k * sw) as isize;
            if (0..w as isize).contains(&ix) {
                dst[ix as usize] += v;
            }
        }
    });
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
