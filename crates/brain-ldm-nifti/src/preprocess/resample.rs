//! Resampling to a voxel size: separable trilinear or nearest-neighbour interpolation.

use rayon::prelude::*;

use crate::affine::sub_grid;
use crate::error::{Error, Result};
use crate::volume::Volume;

/// How voxel values between grid points are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Interpolation {
    /// Trilinear (for intensity images).
    #[default]
    Linear,
    /// Nearest neighbour (for label maps: no new label values).
    Nearest,
}

/// Resamples to voxel size `spacing` (mm, per voxel axis), keeping the field of view centred.
///
/// Along each axis with current voxel size `z` (column norm of the affine), extent `n` and
/// step `r = spacing / z` in input voxels, the output has `n_out = floor((n − 1) / r) + 1`
/// voxels (voxel centres stay inside the input's), and output voxel `o` samples input position
/// `(n − 1)/2 + (o − (n_out − 1)/2)·r`. The affine becomes `affine · [diag(r) | start]`, so
/// the world positions of all samples are exact, the directions unchanged and the voxel sizes
/// `spacing`. Downsampling by an integer factor and upsampling back gives the original grid.
/// Axes whose size already equals `spacing` (within 1e-6 mm) are copied unchanged.
///
/// Interpolation is separable along the voxel axes (exactly trilinear for
/// [`Interpolation::Linear`]); there is no anti-aliasing filter.
///
/// # Errors
/// [`Error::BadArgument`] for a spacing that is not positive and finite;
/// [`Error::BadAffine`] for a zero voxel size in the affine.
///
/// # Example
/// ```
/// use brain_ldm_nifti::{affine::IDENTITY, preprocess::{resample, Interpolation}, Volume};
/// use ndarray::Array3;
///
/// let vol = Volume::new(Array3::from_shape_fn((5, 1, 1), |(i, _, _)| i as f32), IDENTITY);
/// let half = resample(&vol, [2.0, 1.0, 1.0], Interpolation::Linear)?;
/// assert_eq!(half.data.as_slice().unwrap(), &[0.0, 2.0, 4.0]);
/// assert_eq!(half.voxel_sizes(), [2.0, 1.0, 1.0]);
/// # Ok::<(), brain_ldm_nifti::Error>(())
/// ```
pub fn resample(
    volume: &Volume,
    spacing: [f64; 3],
    interpolation: Interpolation,
) -> Result<Volume> {
    Ok(resample_if_needed(volume, spacing, interpolation)?.unwrap_or_else(|| volume.clone()))
}

/// [`resample`], or `None` when every axis already has the target voxel size.
pub(crate) fn resample_if_needed(
    volume: &Volume,
    spacing: [f64; 3],
    interpolation: Interpolation,
) -> Result<Option<Volume>> {
    if spacing.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        return Err(Error::BadArgument {
            name: "spacing",
            value: format!("{spacing:?}: each must be positive and finite"),
        });
    }
    let zooms = volume.voxel_sizes();
    if zooms.iter().any(|z| !z.is_finite() || *z == 0.0) {
        return Err(Error::BadAffine { voxel_sizes: zooms });
    }
    let shape = volume.shape();
    let mut plans: Vec<(usize, Vec<Tap>)> = Vec::new();
    let mut start = [0.0; 3];
    let mut step = [1.0; 3];
    let mut out_shape = shape;
    for axis in 0..3 {
        let n = shape[axis];
        if (zooms[axis] - spacing[axis]).abs() <= 1e-6 || n == 0 {
            continue;
        }
        let r = spacing[axis] / zooms[axis];
        let n_out = (((n - 1) as f64 / r) + 1e-9).floor() as usize + 1;
        let c_in = (n as f64 - 1.0) / 2.0;
        let c_out = (n_out as f64 - 1.0) / 2.0;
        start[axis] = c_in - c_out * r;
        step[axis] = r;
        out_shape[axis] = n_out;
        let taps: Vec<Tap> = (0..n_out)
            .map(|o| tap(start[axis] + o as f64 * r, n, interpolation))
            .collect();
        plans.push((axis, taps));
    }
    // Shrinking axes first keeps the intermediate arrays small.
    plans.sort_by(|a, b| {
        let ra = a.1.len() as f64 / shape[a.0] as f64;
        let rb = b.1.len() as f64 / shape[b.0] as f64;
        ra.total_cmp(&rb)
    });
    if plans.is_empty() {
        return Ok(None);
    }
    let mut data = volume.values().into_owned();
    let mut cur = shape;
    for (axis, taps) in &plans {
        data = resample_axis(&data, cur, *axis, taps);
        cur[*axis] = taps.len();
    }
    let array = ndarray::Array3::from_shape_vec((out_shape[0], out_shape[1], out_shape[2]), data)
        .map_err(|e| Error::BadArgument {
        name: "spacing",
        value: e.to_string(),
    })?;
    Ok(Some(
        volume.derive(array, sub_grid(&volume.affine, start, step)),
    ))
}

/// Two source indices and the weight of the second.
#[derive(Debug, Clone, Copy)]
struct Tap {
    i0: usize,
    i1: usize,
    w: f32,
}

fn tap(x: f64, n: usize, interpolation: Interpolation) -> Tap {
    let last = n - 1;
    let x = x.clamp(0.0, last as f64);
    match interpolation {
        Interpolation::Nearest => {
            let i = ((x + 0.5).floor() as usize).min(last);
            Tap {
                i0: i,
                i1: i,
                w: 0.0,
            }
        }
        Interpolation::Linear => {
            let i0 = (x.floor() as usize).min(last);
            let i1 = (i0 + 1).min(last);
            Tap {
                i0,
                i1,
                w: (x - i0 as f64) as f32,
            }
        }
    }
}

/// Resamples a row-major `[n0, n1, n2]` array along `axis` with one tap per output index.
fn resample_axis(src: &[f32], shape: [usize; 3], axis: usize, taps: &[Tap]) -> Vec<f32> {
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let n_out = taps.len();
    let outer: usize = shape[..axis].iter().product();
    let mut out = vec![0f32; outer * n_out * inner];
    if out.is_empty() {
        return out;
    }
    let min_len = (4096 / inner).max(1);
    out.par_chunks_mut(inner)
        .with_min_len(min_len)
        .enumerate()
        .for_each(|(idx, dst)| {
            let (b, o) = (idx / n_out, idx % n_out);
            let t = taps[o];
            let base = b * n * inner;
            let a = &src[base + t.i0 * inner..base + (t.i0 + 1) * inner];
            if t.w == 0.0 {
                dst.copy_from_slice(a);
            } else {
                let c = &src[base + t.i1 * inner..base + (t.i1 + 1) * inner];
                let w0 = 1.0 - t.w;
                for ((d, &x), &y) in dst.iter_mut().zip(a).zip(c) {
                    *d = w0 * x + t.w * y;
                }
            }
        });
    out
}
