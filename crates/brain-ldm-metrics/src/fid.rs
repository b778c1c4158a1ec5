//! Fréchet distance between two feature sets (FID when the features come from a
//! pretrained network), as MONAI's `FIDMetric` / `get_fid_score`.
//!
//! `FD = ‖μx − μy‖² + tr Σx + tr Σy − 2·tr (Σx Σy)^{1/2}`, with means and unbiased
//! covariances (divisor `N − 1`) of the rows, all in f64.
//!
//! MONAI takes `scipy.linalg.sqrtm(Σx Σy)` of the non-symmetric product. Here the trace
//! comes from a symmetric problem instead: with `Σx = V Λ Vᵀ` and `W = V Λ^{1/2}`, `Wᵀ Σy W`
//! is symmetric positive semi-definite and similar to `Σx^{1/2} Σy Σx^{1/2}`, whose
//! eigenvalues are those of `Σx Σy`; so `tr (Σx Σy)^{1/2} = Σᵢ √μᵢ` over its eigenvalues
//! `μᵢ`. Eigenvalues (of `Σx` and of that product) at or below rounding level,
//! `n·ε·max|λ|`, count as 0: rounding makes them slightly positive or negative, and `√`
//! would turn that noise into `~√ε`-sized terms (MONAI drops the small imaginary part
//! `sqrtm` then returns). This path handles singular covariances (fewer samples than features, dead
//! feature channels) directly. MONAI's fallback for a failed square root — adding
//! `ε·I` (ε = 10⁻⁶) to both covariances and retrying — is kept, for the one way this
//! path can fail: an eigensolver that does not converge.

use ndarray::{Array1, Array2, ArrayBase, Axis, Data, Ix2};

use crate::error::{Error, Result};
use crate::grid::{check_finite, contiguous};
use crate::linalg::symmetric_eigen;

/// MONAI's diagonal offset for near-singular covariance products (`compute_frechet_distance`'s
/// `epsilon`).
pub const FID_EPSILON: f64 = 1e-6;

/// Mean and covariance of a feature set (one row per sample), in f64.
///
/// Keep the statistics of a reference set to compare many generated sets against it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    /// Number of samples.
    pub count: usize,
    /// Mean feature vector, length `F`.
    pub mean: Array1<f64>,
    /// Unbiased covariance (divisor `count − 1`), `F×F`.
    pub cov: Array2<f64>,
}

impl FeatureStats {
    /// Mean and covariance of `features` (`[N, F]`, one row per sample).
    ///
    /// # Errors
    /// [`Error::TooFewSamples`] for fewer than two rows, [`Error::NonFinite`].
    pub fn from_features<S>(features: &ArrayBase<S, Ix2>, what: &str) -> Result<FeatureStats>
    where
        S: Data<Elem = f32>,
    {
        let (n, f) = features.dim();
        if n < 2 {
            return Err(Error::TooFewSamples {
                what: what.to_string(),
                needed: 2,
                got: n,
            });
        }
        check_finite(&contiguous(features), what)?;
        let x = features.mapv(f64::from);
        let mean = x.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(f));
        let xc = &x - &mean;
        let cov = xc.t().dot(&xc) / (n as f64 - 1.0);
        Ok(FeatureStats {
            count: n,
            mean,
            cov,
        })
    }

    /// The feature dimension `F`.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }
}

/// FID between two feature matrices (`[N, F]` and `[M, F]`), as MONAI's
/// `FIDMetric()(y_pred, y)` (symmetric in its arguments).
///
/// # Errors
/// [`Error::TooFewSamples`] (fewer than two rows), [`Error::ShapeMismatch`] (different
/// feature dimensions), [`Error::NonFinite`], [`Error::Numerical`].
///
/// # Example
/// ```
/// use brain_ldm_metrics::fid;
/// use ndarray::array;
///
/// let a = array![[0.0f32, 1.0], [1.0, 0.0], [2.0, 2.0]];
/// let b = a.mapv(|v| v + 1.0); // same covariance, mean shifted by (1, 1)
/// assert!((fid(&a, &b)? - 2.0).abs() < 1e-9);
/// # Ok::<(), brain_ldm_metrics::Error>(())
/// ```
pub fn fid<S1, S2>(y_pred: &ArrayBase<S1, Ix2>, y: &ArrayBase<S2, Ix2>) -> Result<f64>
where
    S1: Data<Elem = f32>,
    S2: Data<Elem = f32>,
{
    if y_pred.ncols() != y.ncols() {
        return Err(Error::ShapeMismatch {
            what: "feature dimension of y_pred vs y".to_string(),
            expected: y_pred.shape().to_vec(),
            got: y.shape().to_vec(),
        });
    }
    let a = FeatureStats::from_features(y_pred, "y_pred features")?;
    let b = FeatureStats::from_features(y, "y features")?;
    frechet_distance(&a, &b)
}

/// The Fréchet distance between two Gaussians given by their statistics.
///
/// # Errors
/// [`Error::ShapeMismatch`] for different dimensions, [`Error::NonFinite`] for
/// non-finite statistics, [`Error::Numerical`] if the eigensolver fails even after
/// MONAI's `ε·I` offset.
pub fn frechet_distance(x: &FeatureStats, y: &FeatureStats) -> Result<f64> {
    let f = x.dim();
    if y.dim() != f || x.cov.dim() != (f, f) || y.cov.dim() != (f, f) {
        return Err(Error::ShapeMismatch {
            what: "feature statistics x vs y (mean, covariance)".to_string(),
            expected: vec![f, x.cov.nrows(), x.cov.ncols()],
            got: vec![y.dim(), y.cov.nrows(), y.cov.ncols()],
        });
    }
    for (what, s) in [("statistics x", x), ("statistics y", y)] {
        let values = s.mean.iter().chain(s.cov.iter());
        if let Some((index, value)) = values.enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: format!("{what} (mean, then covariance row-major)"),
                index,
                value: *value as f32,
            });
        }
    }
    let diff = &x.mean - &y.mean;
    let tr = x.cov.diag().sum() + y.cov.diag().sum();
    let tr_covmean = match trace_sqrt_product(&x.cov, &y.cov) {
        Ok(t) => t,
        Err(_) => {
            let offset = Array2::<f64>::eye(f) * FID_EPSILON;
            trace_sqrt_product(&(&x.cov + &offset), &(&y.cov + &offset))?
        }
    };
    Ok(diff.dot(&diff) + tr - 2.0 * tr_covmean)
}

/// `tr (A B)^{1/2}` for symmetric positive semi-definite `A`, `B` (see the module docs).
fn trace_sqrt_product(a: &Array2<f64>, b: &Array2<f64>) -> Result<f64> {
    let n = a.nrows();
    let eig = symmetric_eigen(&row_major(a), n, true)?;
    // W = V Λ^{1/2}, keeping the columns with λ above rounding level (eigenvalues of a
    // singular covariance come out as ±n·ε·λmax, and √ would turn that noise into
    // ~√ε-sized contributions).
    let keep: Vec<usize> = (0..n)
        .filter(|&j| eig.values[j] > rounding_level(&eig.values))
        .collect();
    let mut w = Array2::<f64>::zeros((n, keep.len()));
    for (c, &j) in keep.iter().enumerate() {
        let s = eig.values[j].sqrt();
        let col = &eig.vectors[j * n..(j + 1) * n];
        for (r, v) in col.iter().enumerate() {
            w[[r, c]] = v * s;
        }
    }
    let m = w.t().dot(&b.dot(&w));
    let mu = symmetric_eigen(&row_major(&m), keep.len(), false)?;
    let floor = rounding_level(&mu.values);
    Ok(mu
        .values
        .iter()
        .filter(|&&v| v > floor)
        .map(|v| v.sqrt())
        .sum())
}

/// `n·ε·max|λ|`: eigenvalues at or below it are zero to working precision.
fn rounding_level(values: &[f64]) -> f64 {
    let max = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    values.len() as f64 * f64::EPSILON * max
}

/// The elements of a matrix in row-major order.
fn row_major(a: &Array2<f64>) -> Vec<f64> {
    a.iter().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(n: usize, f: usize, seed: u64) -> Array2<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        Array2::from_shape_fn((n, f), |_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
    }

    #[test]
    fn singular_covariances_match_the_sample_space_formula() {
        // N = 5, M = 6 samples of F = 12 features: both covariances have rank < F.
        // Independent route: with centred data Xc, Yc, the eigenvalues of Σx Σy are those
        // of C Cᵀ / ((N−1)(M−1)), C = Xc Ycᵀ (5×5), so tr (Σx Σy)^{1/2} = Σ √eig(C Cᵀ) /
        // √((N−1)(M−1)).
        let (x, y) = (features(5, 12, 1), features(6, 12, 2));
        let got = fid(&x, &y).unwrap();
        let (sx, sy) = (
            FeatureStats::from_features(&x, "x").unwrap(),
            FeatureStats::from_features(&y, "y").unwrap(),
        );
        let xc = &x.mapv(f64::from) - &sx.mean;
        let yc = &y.mapv(f64::from) - &sy.mean;
        let c = xc.dot(&yc.t());
        let cct = c.dot(&c.t());
        let eig = symmetric_eigen(&row_major(&cct), 5, false).unwrap();
        // C has rank 4 (centring removes one dimension): drop the zero eigenvalue.
        let floor = rounding_level(&eig.values);
        let tr_sqrt: f64 = eig
            .values
            .iter()
            .filter(|&&v| v > floor)
            .map(|v| v.sqrt())
            .sum::<f64>()
            / (4.0f64 * 5.0).sqrt();
        let d = &sx.mean - &sy.mean;
        let want = d.dot(&d) + sx.cov.diag().sum() + sy.cov.diag().sum() - 2.0 * tr_sqrt;
        assert!((got - want).abs() < 1e-10 * want.abs(), "{got} vs {want}");
        // Symmetric in its arguments; ≈ 0 for a set with itself.
        assert!((fid(&y, &x).unwrap() - got).abs() < 1e-10 * got.abs());
        assert!(fid(&x, &x).unwrap().abs() < 1e-12);
    }

    #[test]
    fn a_mean_shift_adds_its_squared_length() {
        let x = features(40, 8, 3);
        let y = x.mapv(|v| v + 0.25);
        // Same covariance: FD = ‖(0.25, …)‖² = 8 · 0.0625 = 0.5.
        assert!((fid(&x, &y).unwrap() - 0.5).abs() < 1e-9);
    }
}
