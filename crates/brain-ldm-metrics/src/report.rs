//! The whole evaluation of a generated (or reconstructed) set against a real one, as one
//! serialisable report: what `brain-ldm eval` prints.

use serde::{Deserialize, Serialize};

use crate::diversity::{diversity, DiversityConfig, DiversityReport};
use crate::error::{Error, Result};
use crate::fid::fid;
use crate::regression::{mae, mse, psnr};
use crate::source::{extract_features, FeatureExtractor, Progress, VolumeSource};
use crate::ssim::{ssim, SsimConfig};

/// Settings of the voxel-wise comparison of paired volumes (reconstructions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PairedConfig {
    /// SSIM settings (default: MONAI's `SSIMMetric` defaults).
    pub ssim: SsimConfig,
    /// PSNR peak value (MONAI's `max_val`; 1 for images in [0, 1]).
    pub max_val: f64,
}

impl Default for PairedConfig {
    fn default() -> PairedConfig {
        PairedConfig {
            ssim: SsimConfig::default(),
            max_val: 1.0,
        }
    }
}

/// What [`evaluate`] computes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalOptions {
    /// Diversity of each set (`None`: skipped).
    pub diversity: Option<DiversityConfig>,
    /// Per-pair SSIM/PSNR/MSE/MAE of `real[i]` vs `fake[i]` (`None`: skipped).
    pub paired: Option<PairedConfig>,
}

/// Voxel-wise scores of one (real, fake) pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedScore {
    /// Name of the real volume.
    pub real: String,
    /// Name of the fake volume.
    pub fake: String,
    /// SSIM.
    pub ssim: f64,
    /// PSNR in dB.
    pub psnr: f64,
    /// Mean squared error.
    pub mse: f64,
    /// Mean absolute error.
    pub mae: f64,
}

/// Paired scores and their means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedReport {
    /// The settings used.
    pub config: PairedConfig,
    /// Mean SSIM over the pairs.
    pub mean_ssim: f64,
    /// Mean PSNR over the pairs (dB; `+∞` if any pair is identical).
    pub mean_psnr: f64,
    /// Mean MSE.
    pub mean_mse: f64,
    /// Mean MAE.
    pub mean_mae: f64,
    /// Every pair, in index order.
    pub pairs: Vec<PairedScore>,
}

/// The result of [`evaluate`]; absent parts were not requested.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Volumes in the real set.
    pub real_count: usize,
    /// Volumes in the fake set.
    pub fake_count: usize,
    /// Diversity of the real set.
    pub real_diversity: Option<DiversityReport>,
    /// Diversity of the fake set.
    pub fake_diversity: Option<DiversityReport>,
    /// Paired voxel-wise scores.
    pub paired: Option<PairedReport>,
    /// FID between the sets' features, when an extractor was given.
    pub fid: Option<f64>,
}

/// Evaluates `fake` against `real`: diversity of each set, paired scores and FID, as
/// `opts` and `extractor` ask. `progress` is called after each unit of work, with stages
/// `"diversity real"`, `"diversity fake"`, `"paired"`, `"features real"`,
/// `"features fake"`.
///
/// # Errors
/// Those of [`diversity`], [`ssim`], [`psnr`], [`fid`] and the sources' loaders, and
/// [`Error::ShapeMismatch`] when paired sets have different sizes.
///
/// # Example
/// ```
/// use brain_ldm_metrics::{evaluate, EvalOptions, PairedConfig};
/// use ndarray::Array3;
///
/// let real = vec![Array3::from_shape_fn((12, 12, 12), |(i, j, k)| ((i + j * k) % 5) as f32 / 5.0)];
/// let fake = vec![real[0].mapv(|v| v * 0.95)];
/// let opts = EvalOptions { diversity: None, paired: Some(PairedConfig::default()) };
/// let report = evaluate(&real, &fake, &opts, None, &|_| {})?;
/// let paired = report.paired.unwrap();
/// assert!(paired.mean_ssim > 0.9);
/// # Ok::<(), brain_ldm_metrics::Error>(())
/// ```
pub fn evaluate<R, F>(
    real: &R,
    fake: &F,
    opts: &EvalOptions,
    extractor: Option<&dyn FeatureExtractor>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<EvalReport>
where
    R: VolumeSource + ?Sized,
    F: VolumeSource + ?Sized,
{
    let (real_diversity, fake_diversity) = match &opts.diversity {
        Some(cfg) => (
            Some(diversity(real, cfg, "diversity real", progress)?),
            Some(diversity(fake, cfg, "diversity fake", progress)?),
        ),
        None => (None, None),
    };
    let paired = match &opts.paired {
        Some(cfg) => Some(paired_scores(real, fake, cfg, progress)?),
        None => None,
    };
    let fid = match extractor {
        Some(e) => {
            let a = extract_features(real, e, "features real", progress)?;
            let b = extract_features(fake, e, "features fake", progress)?;
            Some(fid(&b, &a)?)
        }
        None => None,
    };
    Ok(EvalReport {
        real_count: real.len(),
        fake_count: fake.len(),
        real_diversity,
        fake_diversity,
        paired,
        fid,
    })
}

/// SSIM, PSNR, MSE and MAE of `real[i]` vs `fake[i]` for every `i`.
fn paired_scores<R, F>(
    real: &R,
    fake: &F,
    cfg: &PairedConfig,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<PairedReport>
where
    R: VolumeSource + ?Sized,
    F: VolumeSource + ?Sized,
{
    let n = real.len();
    if fake.len() != n {
        return Err(Error::ShapeMismatch {
            what: "paired set sizes (real vs fake)".to_string(),
            expected: vec![n],
            got: vec![fake.len()],
        });
    }
    if n == 0 {
        return Err(Error::TooFewSamples {
            what: "paired sets".to_string(),
            needed: 1,
            got: 0,
        });
    }
    let mut pairs = Vec::with_capacity(n);
    for i in 0..n {
        let (r, f) = (real.load(i)?, fake.load(i)?);
        let name = |e: Error| match e {
            Error::ShapeMismatch { expected, got, .. } => Error::ShapeMismatch {
                what: format!("{} vs {}", fake.name(i), real.name(i)),
                expected,
                got,
            },
            Error::NonFinite { what, index, value } => Error::NonFinite {
                what: if what == "y" {
                    real.name(i)
                } else {
                    fake.name(i)
                },
                index,
                value,
            },
            other => other,
        };
        pairs.push(PairedScore {
            real: real.name(i),
            fake: fake.name(i),
            ssim: ssim(&f, &r, &cfg.ssim).map_err(&name)?,
            psnr: psnr(&f, &r, cfg.max_val).map_err(&name)?,
            mse: mse(&f, &r).map_err(&name)?,
            mae: mae(&f, &r).map_err(&name)?,
        });
        progress(Progress {
            stage: "paired",
            done: i + 1,
            total: n,
        });
    }
    let mean = |g: fn(&PairedScore) -> f64| pairs.iter().map(g).sum::<f64>() / n as f64;
    Ok(PairedReport {
        config: cfg.clone(),
        mean_ssim: mean(|p| p.ssim),
        mean_psnr: mean(|p| p.psnr),
        mean_mse: mean(|p| p.mse),
        mean_mae: mean(|p| p.mae),
        pairs,
    })
}
