//! The paper's diversity protocol: mean MS-SSIM over random distinct pairs of one set.
//!
//! Pinaya et al. (2022) report MS-SSIM averaged over 1000 pairs of samples (lower means
//! more diverse; real UK Biobank pairs score 0.6536, their LDM 0.6555). The paper does
//! not state the MS-SSIM window; [`DiversityConfig::default`] uses MONAI's
//! `MultiScaleSSIMMetric` defaults with a window of 4 (the largest Gaussian default of 11
//! does not fit 160 voxels at five scales; 4 is what the reference fixture and several
//! MONAI brain-LDM training scripts use). Results with other windows are not comparable.
//!
//! The paper also reports 4-G-R-SSIM. It is not implemented: the paper gives no
//! definition beyond a citation of a 2D gradient-based SSIM variant, and its 3D form (the
//! gradient operator, the edge/texture/smooth thresholds and region weights for volumes)
//! cannot be recovered from it, nor is there a MONAI reference to check against.
//!
//! Pairs are drawn from a SplitMix64 stream seeded by [`DiversityConfig::seed`], so they
//! depend only on the seed and the set size, not on the `rand` crate's version.

use std::collections::HashSet;

use ndarray::{CowArray, Ix3};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::msssim::{ms_ssim, MsSsimConfig};
use crate::source::{Progress, VolumeSource};

/// Settings of the diversity protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiversityConfig {
    /// Number of distinct unordered pairs to score (the paper: 1000).
    pub pairs: usize,
    /// Seed of the pair draw.
    pub seed: u64,
    /// MS-SSIM settings.
    pub ms_ssim: MsSsimConfig,
}

impl Default for DiversityConfig {
    /// 1000 pairs, seed 0, MONAI's MS-SSIM defaults with a window of 4 (see the module
    /// docs).
    fn default() -> DiversityConfig {
        DiversityConfig {
            pairs: 1000,
            seed: 0,
            ms_ssim: MsSsimConfig::default().with_kernel_size(4),
        }
    }
}

/// The MS-SSIM of one pair of a set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairScore {
    /// Index of the first volume (`a < b`).
    pub a: usize,
    /// Index of the second volume.
    pub b: usize,
    /// Their MS-SSIM.
    pub ms_ssim: f64,
}

/// The result of [`diversity`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiversityReport {
    /// Volumes in the set.
    pub samples: usize,
    /// Mean MS-SSIM over the pairs (the paper's diversity number; lower is more diverse).
    pub mean_ms_ssim: f64,
    /// Sample standard deviation of the pair scores (0 for one pair).
    pub std_ms_ssim: f64,
    /// The settings used.
    pub config: DiversityConfig,
    /// Every pair's score, ordered by `(a, b)`.
    pub pairs: Vec<PairScore>,
}

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny, fixed, well-mixed 64-bit generator.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), unbiased (Lemire's multiply-and-reject).
    fn below(&mut self, n: u64) -> u64 {
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}

/// `count` distinct unordered pairs `(a, b)`, `a < b < n`, drawn uniformly without
/// replacement with `seed`; sorted by `(a, b)`.
///
/// # Errors
/// [`Error::TooFewSamples`] for `n < 2`, [`Error::TooManyPairs`] when
/// `count > n(n−1)/2`.
///
/// # Example
/// ```
/// use brain_ldm_metrics::sample_pairs;
///
/// let p = sample_pairs(5, 10, 7)?; // all 10 pairs of 5
/// assert_eq!(p.len(), 10);
/// assert_eq!(p, sample_pairs(5, 10, 7)?); // deterministic
/// # Ok::<(), brain_ldm_metrics::Error>(())
/// ```
pub fn sample_pairs(n: usize, count: usize, seed: u64) -> Result<Vec<(usize, usize)>> {
    if n < 2 {
        return Err(Error::TooFewSamples {
            what: "diversity set".to_string(),
            needed: 2,
            got: n,
        });
    }
    let available = n * (n - 1) / 2;
    if count > available {
        return Err(Error::TooManyPairs {
            requested: count,
            samples: n,
            available,
        });
    }
    let mut rng = SplitMix64(seed);
    let mut pairs: Vec<(usize, usize)> = if 2 * count > available {
        // Dense: shuffle all pairs partially (Fisher–Yates) and keep the first `count`.
        let mut all: Vec<(usize, usize)> = (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .collect();
        for i in 0..count {
            let j = i + rng.below((available - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(count);
        all
    } else {
        // Sparse: draw ordered index pairs, reject repeats (at most half are taken, so
        // each draw succeeds with probability ≥ 1/2).
        let mut seen = HashSet::with_capacity(count);
        while seen.len() < count {
            let a = rng.below(n as u64) as usize;
            let b = rng.below(n as u64 - 1) as usize;
            let b = if b >= a { b + 1 } else { b };
            seen.insert((a.min(b), a.max(b)));
        }
        seen.into_iter().collect()
    };
    pairs.sort_unstable();
    Ok(pairs)
}

/// Mean MS-SSIM over `cfg.pairs` random distinct pairs of `set` (see the module docs).
///
/// Pairs are scored in `(a, b)` order so each first volume is loaded once; `progress` is
/// called after every pair with `stage`.
///
/// # Errors
/// As [`sample_pairs`] and [`ms_ssim`] (different shapes within the set, volumes too small
/// for the window, NaNs), and errors of [`VolumeSource::load`].
///
/// # Example
/// ```
/// use brain_ldm_metrics::{diversity, DiversityConfig, MsSsimConfig};
/// use ndarray::Array3;
///
/// let set: Vec<Array3<f32>> = (0..4)
///     .map(|s| Array3::from_shape_fn((32, 32, 32), |(i, j, k)| ((i * (s + 1) + j + k) % 9) as f32 / 9.0))
///     .collect();
/// let cfg = DiversityConfig { pairs: 6, seed: 1, ms_ssim: MsSsimConfig::default().with_kernel_size(2) };
/// let r = diversity(&set, &cfg, "demo", &|_| {})?;
/// assert_eq!(r.pairs.len(), 6);
/// assert!(r.mean_ms_ssim < 1.0);
/// # Ok::<(), brain_ldm_metrics::Error>(())
/// ```
pub fn diversity<V>(
    set: &V,
    cfg: &DiversityConfig,
    stage: &'static str,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<DiversityReport>
where
    V: VolumeSource + ?Sized,
{
    cfg.ms_ssim.validate()?;
    if cfg.pairs == 0 {
        return Err(Error::InvalidConfig {
            name: "pairs",
            value: "0".into(),
            reason: "must be ≥ 1",
        });
    }
    let n = set.len();
    let pairs = sample_pairs(n, cfg.pairs, cfg.seed)?;
    let mut scores = Vec::with_capacity(pairs.len());
    let mut first: Option<(usize, CowArray<'_, f32, Ix3>)> = None;
    for (k, &(a, b)) in pairs.iter().enumerate() {
        let va = match first.take() {
            Some((i, v)) if i == a => v,
            _ => set.load(a)?,
        };
        let vb = set.load(b)?;
        let score = ms_ssim(&va, &vb, &cfg.ms_ssim).map_err(|e| in_pair(e, set, a, b))?;
        first = Some((a, va));
        scores.push(PairScore {
            a,
            b,
            ms_ssim: score,
        });
        progress(Progress {
            stage,
            done: k + 1,
            total: pairs.len(),
        });
    }
    let m = scores.len() as f64;
    let mean = scores.iter().map(|s| s.ms_ssim).sum::<f64>() / m;
    let var = if scores.len() > 1 {
        scores
            .iter()
            .map(|s| (s.ms_ssim - mean).powi(2))
            .sum::<f64>()
            / (m - 1.0)
    } else {
        0.0
    };
    Ok(DiversityReport {
        samples: n,
        mean_ms_ssim: mean,
        std_ms_ssim: var.sqrt(),
        config: cfg.clone(),
        pairs: scores,
    })
}

/// Names the two volumes of a pair in a shape or finiteness error.
fn in_pair<V: VolumeSource + ?Sized>(e: Error, set: &V, a: usize, b: usize) -> Error {
    match e {
        Error::ShapeMismatch { expected, got, .. } => Error::ShapeMismatch {
            what: format!("{} vs {}", set.name(a), set.name(b)),
            expected,
            got,
        },
        Error::NonFinite { what, index, value } => Error::NonFinite {
            what: set.name(if what == "y_pred" { a } else { b }),
            index,
            value,
        },
        other => other,
    }
}
