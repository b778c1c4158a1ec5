//! Intensity scaling to [0, 1].

use ndarray::Array3;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::volume::Volume;

/// Maps `[min, max]` of the volume linearly to `[0, 1]` (MONAI's `ScaleIntensity(0, 1)`).
/// A constant volume becomes all zeros.
///
/// # Example
/// ```
/// use brain_ldm_nifti::{affine::IDENTITY, preprocess::scale_min_max, Volume};
/// use ndarray::Array3;
///
/// let vol = Volume::new(Array3::from_shape_vec((3, 1, 1), vec![10.0, 20.0, 30.0]).unwrap(), IDENTITY);
/// assert_eq!(scale_min_max(&vol).data.as_slice().unwrap(), &[0.0, 0.5, 1.0]);
/// ```
pub fn scale_min_max(volume: &Volume) -> Volume {
    let s = volume.stats();
    scale_range(volume, s.min, s.max)
}

/// Clips to the `lower` and `upper` percentiles (0–100, linear interpolation between order
/// statistics, as `numpy.percentile`), then maps that range to `[0, 1]`
/// (MONAI's `ScaleIntensityRangePercentiles(lower, upper, 0, 1, clip=True)`). Percentiles are
/// over all voxels, background included. Equal percentiles give all zeros.
///
/// # Errors
/// [`Error::BadArgument`] unless `0 ≤ lower < upper ≤ 100`.
pub fn scale_percentiles(volume: &Volume, lower: f64, upper: f64) -> Result<Volume> {
    if !(0.0..=100.0).contains(&lower) || !(0.0..=100.0).contains(&upper) || lower >= upper {
        return Err(Error::BadArgument {
            name: "percentiles",
            value: format!("({lower}, {upper}): need 0 <= lower < upper <= 100"),
        });
    }
    let values = volume.values();
    let lo = percentile(&values, lower);
    let hi = percentile(&values, upper);
    Ok(scale_range(volume, lo, hi))
}

/// The `p`-th percentile (0–100) of `values` by `numpy.percentile`'s default (linear)
/// method; NaN for no values.
pub fn percentile(values: &[f32], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    let rank = p.clamp(0.0, 100.0) / 100.0 * (v.len() - 1) as f64;
    let k = rank.floor() as usize;
    let (_, &mut below, above) = v.select_nth_unstable_by(k, f32::total_cmp);
    let frac = rank - k as f64;
    if frac == 0.0 || above.is_empty() {
        return below as f64;
    }
    let next = above.iter().copied().fold(f32::INFINITY, f32::min);
    below as f64 + (next as f64 - below as f64) * frac
}

/// `(clamp(v, lo, hi) − lo) / (hi − lo)` in f32, or zeros when `hi <= lo`.
fn scale_range(volume: &Volume, lo: f64, hi: f64) -> Volume {
    let (lo, hi) = (lo as f32, hi as f32);
    let span = hi - lo;
    let src = volume.values();
    // A fresh array is in standard layout, so it always has a slice.
    let mut data = Array3::<f32>::zeros(volume.data.raw_dim());
    if let (true, Some(out)) = (span > 0.0, data.as_slice_mut()) {
        out.par_chunks_mut(1 << 16)
            .zip(src.par_chunks(1 << 16))
            .for_each(|(dst, src)| {
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = (v.clamp(lo, hi) - lo) / span;
                }
            });
    }
    volume.derive(data, volume.affine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4, 10], [0, 25, 50, 90, 100]) = [1, 2, 3, 7.6, 10]
        let v = [10.0, 2.0, 4.0, 1.0, 3.0];
        let got: Vec<f64> = [0.0, 25.0, 50.0, 90.0, 100.0]
            .iter()
            .map(|&p| percentile(&v, p))
            .collect();
        let want = [1.0, 2.0, 3.0, 7.6, 10.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }
}
