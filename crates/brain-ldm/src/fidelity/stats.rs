//! The statistics of the fidelity report: mean and spread per grid point, Pearson's r and
//! the least-squares line of measured against requested values.

use serde::{Deserialize, Serialize};

/// Mean and sample standard deviation of a set of values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Their mean (`None` for no values).
    pub mean: Option<f64>,
    /// Their sample standard deviation, divisor `n − 1` (`None` for fewer than two).
    pub sd: Option<f64>,
}

impl Summary {
    /// The summary of `values`.
    ///
    /// ```
    /// let s = brain_ldm::fidelity::Summary::of(&[1.0, 2.0, 3.0, 4.0]);
    /// assert_eq!(s.mean, Some(2.5));
    /// assert!((s.sd.unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
    /// ```
    pub fn of(values: &[f64]) -> Summary {
        let n = values.len();
        let mean = (n > 0).then(|| values.iter().sum::<f64>() / n as f64);
        let sd = mean
            .filter(|_| n > 1)
            .map(|m| (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
        Summary { n, mean, sd }
    }
}

/// Pearson's correlation and the ordinary least-squares line `y ≈ slope · x + intercept`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LineFit {
    /// Number of `(x, y)` pairs.
    pub n: usize,
    /// Pearson's r (`None` for fewer than two pairs or a constant `x` or `y`).
    pub pearson_r: Option<f64>,
    /// Slope of `y` on `x` (`None` for fewer than two pairs or a constant `x`).
    pub slope: Option<f64>,
    /// Intercept of the line (`None` where the slope is).
    pub intercept: Option<f64>,
}

/// Pearson's r of `x` and `y` (pairs beyond the shorter slice are ignored); `None` for
/// fewer than two pairs or when either is constant.
///
/// ```
/// let r = brain_ldm::fidelity::pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.5]).unwrap();
/// assert!(r > 0.99);
/// ```
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let (sxx, syy, sxy) = moments(x, y)?;
    (sxx > 0.0 && syy > 0.0).then(|| (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}

/// The least-squares line of `y` on `x` and Pearson's r (pairs beyond the shorter slice
/// are ignored).
///
/// ```
/// let fit = brain_ldm::fidelity::line_fit(&[0.0, 1.0, 2.0], &[1.0, 3.0, 5.0]);
/// assert_eq!((fit.slope, fit.intercept), (Some(2.0), Some(1.0)));
/// ```
pub fn line_fit(x: &[f64], y: &[f64]) -> LineFit {
    let n = x.len().min(y.len());
    let Some((sxx, _, sxy)) = moments(x, y) else {
        return LineFit {
            n,
            pearson_r: None,
            slope: None,
            intercept: None,
        };
    };
    let slope = (sxx > 0.0).then(|| sxy / sxx);
    let (mx, my) = (mean(&x[..n]), mean(&y[..n]));
    LineFit {
        n,
        pearson_r: pearson(x, y),
        slope,
        intercept: slope.map(|b| my - b * mx),
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Centred sums of squares and products `(Sxx, Syy, Sxy)`; `None` for fewer than two pairs.
fn moments(x: &[f64], y: &[f64]) -> Option<(f64, f64, f64)> {
    let n = x.len().min(y.len());
    if n < 2 {
        return None;
    }
    let (x, y) = (&x[..n], &y[..n]);
    let (mx, my) = (mean(x), mean(y));
    let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxx += dx * dx;
        syy += dy * dy;
        sxy += dx * dy;
    }
    Some((sxx, syy, sxy))
}

#[cfg(test)]
mod tests {
    use super::*;

    // x = 1..5, y = 2, 4, 5, 4, 5: x̄ = 3, ȳ = 4, Sxx = 10, Syy = 6, Sxy = 6, so
    // slope = 0.6, intercept = 4 − 0.6·3 = 2.2, r = 6 / √60.
    const X: [f64; 5] = [1.0, 2.0, 3.0, 4.0, 5.0];
    const Y: [f64; 5] = [2.0, 4.0, 5.0, 4.0, 5.0];

    #[test]
    fn pearson_and_slope_match_hand_computed_values() {
        let fit = line_fit(&X, &Y);
        assert_eq!(fit.n, 5);
        assert!((fit.slope.unwrap() - 0.6).abs() < 1e-12);
        assert!((fit.intercept.unwrap() - 2.2).abs() < 1e-12);
        let r = 6.0 / 60f64.sqrt();
        assert!((fit.pearson_r.unwrap() - r).abs() < 1e-12);
        assert!((pearson(&X, &Y).unwrap() - 0.774_596_669_241_483_4).abs() < 1e-12);
        // Symmetric in r, not in the slope: x on y has slope Sxy/Syy = 1.
        assert!((pearson(&Y, &X).unwrap() - r).abs() < 1e-12);
        assert!((line_fit(&Y, &X).slope.unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn perfect_and_inverse_lines() {
        let y: Vec<f64> = X.iter().map(|x| 1000.0 - 3.0 * x).collect();
        let fit = line_fit(&X, &y);
        assert!((fit.pearson_r.unwrap() + 1.0).abs() < 1e-12);
        assert!((fit.slope.unwrap() + 3.0).abs() < 1e-12);
        assert!((fit.intercept.unwrap() - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn degenerate_inputs_give_none() {
        assert_eq!(pearson(&[1.0], &[2.0]), None);
        assert_eq!(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
        // A constant y: the slope is 0, r undefined.
        let fit = line_fit(&X, &[7.0; 5]);
        assert_eq!(
            (fit.pearson_r, fit.slope, fit.intercept),
            (None, Some(0.0), Some(7.0))
        );
        let empty = line_fit(&[], &[]);
        assert_eq!((empty.n, empty.slope), (0, None));
        let s = Summary::of(&[]);
        assert_eq!((s.n, s.mean, s.sd), (0, None, None));
        let s = Summary::of(&[3.0]);
        assert_eq!((s.mean, s.sd), (Some(3.0), None));
    }

    #[test]
    fn summary_matches_hand_computed_values() {
        // Y: mean 4, squared deviations 4 + 0 + 1 + 0 + 1 = 6, sd = √(6/4).
        let s = Summary::of(&Y);
        assert_eq!(s.n, 5);
        assert!((s.mean.unwrap() - 4.0).abs() < 1e-12);
        assert!((s.sd.unwrap() - 1.5f64.sqrt()).abs() < 1e-12);
    }
}
