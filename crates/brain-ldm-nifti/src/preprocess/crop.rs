//! Cropping and padding to a shape or region, and cropping to the foreground.

use ndarray::Array3;
use rayon::prelude::*;

use crate::affine::sub_grid;
use crate::error::{Error, Result};
use crate::volume::Volume;

/// Crops or pads each axis to `shape`, centred as MONAI's `ResizeWithPadOrCrop`: a crop
/// starts at `n/2 − t/2`, a pad puts `(t − n)/2` voxels before (integer division). Padding is
/// `fill`. The affine is shifted so every kept voxel keeps its world position.
///
/// # Errors
/// [`Error::BadArgument`] for a zero extent in `shape`.
///
/// # Example
/// ```
/// use brain_ldm_nifti::{affine::IDENTITY, preprocess::crop_or_pad, Volume};
/// use ndarray::Array3;
///
/// let vol = Volume::new(Array3::from_elem((197, 233, 189), 1.0), IDENTITY);
/// let out = crop_or_pad(&vol, [160, 224, 160], 0.0)?;
/// assert_eq!(out.shape(), [160, 224, 160]);
/// assert_eq!(out.affine[0][3], 18.0); // output voxel 0 is input voxel 18 along i
/// # Ok::<(), brain_ldm_nifti::Error>(())
/// ```
pub fn crop_or_pad(volume: &Volume, shape: [usize; 3], fill: f32) -> Result<Volume> {
    let cur = volume.shape();
    let mut start = [0i64; 3];
    for a in 0..3 {
        let (n, t) = (cur[a] as i64, shape[a] as i64);
        start[a] = if n >= t {
            n / 2 - t / 2
        } else {
            -((t - n) / 2)
        };
    }
    crop_or_pad_roi(volume, start, shape, fill)
}

/// The region of `shape` voxels whose first voxel is input voxel `start` (may be negative or
/// run past the end: those voxels are `fill`). Output voxel `o` is input voxel `start + o`;
/// the affine is shifted accordingly.
///
/// # Errors
/// [`Error::BadArgument`] for a zero extent in `shape`.
pub fn crop_or_pad_roi(
    volume: &Volume,
    start: [i64; 3],
    shape: [usize; 3],
    fill: f32,
) -> Result<Volume> {
    if shape.contains(&0) {
        return Err(Error::BadArgument {
            name: "shape",
            value: format!("{shape:?}: extents must be at least 1"),
        });
    }
    let cur = volume.shape();
    let src = volume.values();
    let [_, nj, nk] = cur;
    let [_, tj, tk] = shape;
    // For each axis, the output range [lo, hi) that maps inside the input.
    let range = |a: usize| {
        let lo = (-start[a]).clamp(0, shape[a] as i64) as usize;
        let hi = (cur[a] as i64 - start[a]).clamp(0, shape[a] as i64) as usize;
        (lo, hi.max(lo))
    };
    let (rj, rk) = (range(1), range(2));
    let (ri_lo, ri_hi) = range(0);
    let mut out = vec![fill; shape.iter().product()];
    out.par_chunks_mut(tj * tk)
        .enumerate()
        .for_each(|(oi, slab)| {
            if oi < ri_lo || oi >= ri_hi {
                return;
            }
            let i = (oi as i64 + start[0]) as usize;
            for oj in rj.0..rj.1 {
                let j = (oj as i64 + start[1]) as usize;
                let k0 = (rk.0 as i64 + start[2]) as usize;
                let len = rk.1 - rk.0;
                let s = (i * nj + j) * nk + k0;
                slab[oj * tk + rk.0..oj * tk + rk.1].copy_from_slice(&src[s..s + len]);
            }
        });
    let data = Array3::from_shape_vec((shape[0], shape[1], shape[2]), out).map_err(|e| {
        Error::BadArgument {
            name: "shape",
            value: e.to_string(),
        }
    })?;
    let offset = [start[0] as f64, start[1] as f64, start[2] as f64];
    Ok(volume.derive(data, sub_grid(&volume.affine, offset, [1.0; 3])))
}

/// Crops to the bounding box of voxels above `threshold`, grown by `margin` voxels on every
/// side and clipped to the volume (MONAI's `CropForeground` with `select_fn = x > threshold`).
///
/// # Errors
/// [`Error::EmptyForeground`] when no voxel is above `threshold`.
pub fn crop_foreground(volume: &Volume, threshold: f32, margin: usize) -> Result<Volume> {
    let shape = volume.shape();
    let mut lo = shape;
    let mut hi = [0usize; 3];
    for ((i, j, k), &v) in volume.data.indexed_iter() {
        if v > threshold {
            for (a, x) in [i, j, k].into_iter().enumerate() {
                lo[a] = lo[a].min(x);
                hi[a] = hi[a].max(x + 1);
            }
        }
    }
    if hi[0] == 0 {
        return Err(Error::EmptyForeground { threshold });
    }
    let mut start = [0i64; 3];
    let mut size = [0usize; 3];
    for a in 0..3 {
        let s = lo[a].saturating_sub(margin);
        let e = (hi[a] + margin).min(shape[a]);
        start[a] = s as i64;
        size[a] = e - s;
    }
    crop_or_pad_roi(volume, start, size, 0.0)
}
