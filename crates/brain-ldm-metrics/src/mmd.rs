//! Unbiased maximum mean discrepancy with a linear kernel, as MONAI's `MMDMetric`
//! (Gretton et al. 2012, Eq. 3).
//!
//! Each sample is flattened to a vector; with `k(a, b) = a·b`, `m` samples `y` and `n`
//! samples `y_pred`:
//!
//! `MMD = Σ_{i≠j} k(yᵢ, yⱼ)/(m(m−1)) + Σ_{i≠j} k(ŷᵢ, ŷⱼ)/(n(n−1)) − 2·Σ_{i,j} k(ŷᵢ, yⱼ)/(mn)`.
//!
//! Dot products are accumulated in f64 (MONAI: f32 `torch.mm`). MONAI's optional
//! `y_mapping` (e.g. a Gaussian filter) is left to the caller: map the arrays first.

use ndarray::{ArrayBase, Data, Dimension};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::grid::{check_finite, contiguous};

/// MMD between two sets of samples; axis 0 indexes samples, the remaining axes are
/// flattened (e.g. `[B, C, D, H, W]` or `[B, F]`).
///
/// MONAI requires equal shapes; here the sample counts may differ (the estimator is
/// defined for any `m, n ≥ 2`), but each sample must have the same shape.
///
/// # Errors
/// [`Error::TooFewSamples`] (fewer than two samples in a set), [`Error::BadRank`] (a
/// 0-dimensional array), [`Error::ShapeMismatch`] (different per-sample shapes),
/// [`Error::NonFinite`].
///
/// # Example
/// ```
/// use brain_ldm_metrics::mmd;
/// use ndarray::array;
///
/// let y = array![[1.0f32, 0.0], [0.0, 1.0]];
/// // Same set: (0 + 0)/2 + (0 + 0)/2 − 2·(1 + 0 + 0 + 1)/4 = −1.
/// assert!((mmd(&y, &y)? + 1.0).abs() < 1e-12);
/// # Ok::<(), brain_ldm_metrics::Error>(())
/// ```
pub fn mmd<S1, S2, D>(y: &ArrayBase<S1, D>, y_pred: &ArrayBase<S2, D>) -> Result<f64>
where
    S1: Data<Elem = f32>,
    S2: Data<Elem = f32>,
    D: Dimension,
{
    for (what, arr) in [("y", y.shape()), ("y_pred", y_pred.shape())] {
        if arr.is_empty() {
            return Err(Error::BadRank {
                what: what.to_string(),
                expected: "≥ 1D [samples, ...]",
                got: arr.to_vec(),
            });
        }
        if arr[0] < 2 {
            return Err(Error::TooFewSamples {
                what: what.to_string(),
                needed: 2,
                got: arr[0],
            });
        }
    }
    if y.shape()[1..] != y_pred.shape()[1..] {
        return Err(Error::ShapeMismatch {
            what: "per-sample shape of y vs y_pred".to_string(),
            expected: y.shape()[1..].to_vec(),
            got: y_pred.shape()[1..].to_vec(),
        });
    }
    let (m, n) = (y.shape()[0], y_pred.shape()[0]);
    let (a, b) = (contiguous(y), contiguous(y_pred));
    check_finite(&a, "y")?;
    check_finite(&b, "y_pred")?;
    let f = a.len() / m;
    if f == 0 {
        return Err(Error::TooFewSamples {
            what: "elements per sample".to_string(),
            needed: 1,
            got: 0,
        });
    }
    let rows_a: Vec<&[f32]> = a.chunks_exact(f).collect();
    let rows_b: Vec<&[f32]> = b.chunks_exact(f).collect();

    let within = |rows: &[&[f32]]| -> f64 {
        let k = rows.len();
        (0..k * k)
            .into_par_iter()
            .filter(|&p| p / k < p % k)
            .map(|p| 2.0 * dot(rows[p / k], rows[p % k]))
            .sum()
    };
    let sum_a = within(&rows_a);
    let sum_b = within(&rows_b);
    let cross: f64 = (0..m * n)
        .into_par_iter()
        .map(|p| dot(rows_b[p / m], rows_a[p % m]))
        .sum();
    let (mf, nf) = (m as f64, n as f64);
    Ok(sum_a / (mf * (mf - 1.0)) + sum_b / (nf * (nf - 1.0)) - 2.0 * cross / (mf * nf))
}

/// `a·b` accumulated in f64 with four independent lanes.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += f64::from(x[l]) * f64::from(y[l]);
        }
    }
    let tail: f64 = ra
        .iter()
        .zip(rb)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    acc.iter().sum::<f64>() + tail
}
