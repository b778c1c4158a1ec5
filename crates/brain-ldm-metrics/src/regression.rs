//! Voxel-wise error metrics: MSE, MAE and PSNR (MONAI's `MSEMetric`, `MAEMetric`,
//! `PSNRMetric` on one pair), summed in f64.

use ndarray::{ArrayBase, Data, Dimension};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::grid::{check_finite, contiguous};

/// Σ f(y − y_pred) over all elements, after shape and finiteness checks.
fn error_sum<S1, S2, D>(
    y_pred: &ArrayBase<S1, D>,
    y: &ArrayBase<S2, D>,
    f: impl Fn(f64) -> f64 + Sync,
) -> Result<f64>
where
    S1: Data<Elem = f32>,
    S2: Data<Elem = f32>,
    D: Dimension,
{
    if y_pred.shape() != y.shape() {
        return Err(Error::ShapeMismatch {
            what: "y_pred vs y".to_string(),
            expected: y_pred.shape().to_vec(),
            got: y.shape().to_vec(),
        });
    }
    if y.is_empty() {
        return Err(Error::TooFewSamples {
            what: "voxels".to_string(),
            needed: 1,
            got: 0,
        });
    }
    let (a, b) = (contiguous(y_pred), contiguous(y));
    check_finite(&a, "y_pred")?;
    check_finite(&b, "y")?;
    Ok(a.par_chunks(1 << 14)
        .zip(b.par_chunks(1 << 14))
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(p, t)| f(f64::from(*t) - f64::from(*p)))
                .sum::<f64>()
        })
        .sum())
}

/// Mean squared error `mean((y − y_pred)²)` over all elements (any shape).
///
/// # Errors
/// [`Error::ShapeMismatch`], [`Error::NonFinite`], [`Error::TooFewSamples`] for empty input.
pub fn mse<S1, S2, D>(y_pred: &ArrayBase<S1, D>, y: &ArrayBase<S2, D>) -> Result<f64>
where
    S1: Data<Elem = f32>,
    S2: Data<Elem = f32>,
    D: Dimension,
{
    Ok(error_sum(y_pred, y, |d| d * d)? / y.len() as f64)
}

/// Mean absolute error `mean(|y − y_pred|)` over all elements (any shape).
///
/// # Errors
/// As [`mse`].
pub fn mae<S1, S2, D>(y_pred: &ArrayBase<S1, D>, y: &ArrayBase<S2, D>) -> Result<f64>
where
    S1: Data<Elem = f32>,
    S2: Data<Elem = f32>,
    D: Dimension,
{
    Ok(error_sum(y_pred, y, f64::abs)? / y.len() as f64)
}

/// Peak signal-to-noise ratio in dB: `20·log10(max_val) − 10·log10(MSE)`; `+∞` for
/// identical inputs (as MONAI).
///
/// `max_val` is the data range (1 for images in [0, 1]).
///
/// # Errors
/// As [`mse`], and [`Error::InvalidConfig`] unless `max_val` is finite and > 0.
///
/// # Example
/// ```
/// use brain_ldm_metrics::psnr;
/// use ndarray::array;
///
/// let p = psnr(&array![0.0f32, 0.0], &array![0.1f32, 0.1], 1.0)?;
/// assert!((p - 20.0).abs() < 1e-5); // MSE 0.01 → 20 dB
/// # Ok::<(), brain_ldm_metrics::Error>(())
/// ```
pub fn psnr<S1, S2, D>(y_pred: &ArrayBase<S1, D>, y: &ArrayBase<S2, D>, max_val: f64) -> Result<f64>
where
    S1: Data<Elem = f32>,
    S2: Data<Elem = f32>,
    D: Dimension,
{
    if !(max_val.is_finite() && max_val > 0.0) {
        return Err(Error::InvalidConfig {
            name: "max_val",
            value: max_val.to_string(),
            reason: "must be finite and > 0",
        });
    }
    let m = mse(y_pred, y)?;
    Ok(20.0 * max_val.log10() - 10.0 * m.log10())
}
