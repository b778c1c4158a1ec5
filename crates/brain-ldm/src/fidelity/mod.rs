//! The paper's conditioning experiment on any model (Pinaya et al. 2022, Figures 2–4 and
//! the ventricular-volume correlation r = 0.972): ask for covariates, measure what comes
//! out.
//!
//! * **Sweeps**: ventricular volume, brain volume and age each over a grid of
//!   [`FidelityConfig::points`] values spanning the model's training range (normalised 0 … 1,
//!   mapped to physical units by the model's [`CovariateScaling`](crate::CovariateScaling)),
//!   the other covariates fixed ([`FixedCovariates`]), [`FidelityConfig::seeds`] samples per
//!   value. Every generated brain is measured with the label-free volumetry of
//!   `brain-ldm-synth` (the images only; nothing of the request is used) and the report
//!   gives, per sweep, Pearson's r and the least-squares slope of measured on requested
//!   volume over the single samples, and the mean measured volumes per grid value.
//! * **Extrapolation**: normalised ventricular volume over
//!   [`FidelityConfig::extrapolation_range`] (the paper's Figure 4: −0.5 … 1.9).
//! * **Training subjects**: [`FidelityConfig::subjects`] samples, each conditioned on all
//!   four covariates of a random training subject stored with the model (or uniform over the
//!   scaling range when it stores none), measured the same way; Pearson's r and slope of
//!   measured on requested ventricular and brain volume over them are the paper's
//!   measurement (its r = 0.972 over 1000 samples), unlike the sweeps' r, whose requests
//!   span the whole training range one covariate at a time.
//! * **Reconstructions**: [`FidelityConfig::reconstructions`] random images of the cohort
//!   (when given) encoded by the model's autoencoder (latent mean), decoded and measured
//!   before and after: the diffusion model learns from such latents and its samples go
//!   through the same decoder, so what the autoencoder loses of the volumes is hard for a
//!   sample to show (a soft ceiling: a sample's latent need not be one the encoder gives).
//! * **Diversity**: mean MS-SSIM over random pairs of generated samples (unconditional when
//!   the model has a null condition, else covariates drawn from the training subjects or the
//!   scaling range), next to the same number of pairs of a real [`Cohort`] when given; one
//!   MS-SSIM setting for both, chosen to fit the images ([`ms_ssim_for_shape`]).
//!
//! Column `c` of every grid uses noise stream `c` of [`FidelityConfig::seed`], so a column
//! shows one starting noise under every requested value, as the paper's figures do; the
//! diversity samples use the streams after the columns, the training-subject samples those
//! after the diversity samples.
//! Generated images are clamped to [0, 1] (as the public bundle's saver does) before they
//! are measured; images whose affine flips an axis are flipped to positive voxel axes first.
//!
//! ```no_run
//! use brain_ldm::fidelity::{Fidelity, FidelityConfig, Provenance};
//! use brain_ldm::LatentDiffusionPipeline;
//! let device = candle_core::Device::Cpu;
//! let pipeline = LatentDiffusionPipeline::open("runs/ldm", &device)?;
//! let fidelity = Fidelity::new(&pipeline, FidelityConfig::default(), None)?;
//! let outcome = fidelity.run(&device, &mut |_| {})?;
//! println!("ventricles r = {:?}", outcome.report.ventricular_volume.ventricular_fit.pearson_r);
//! outcome.write("fidelity", &Provenance { model: "runs/ldm".into(), command: String::new() })?;
//! # Ok::<(), brain_ldm::Error>(())
//! ```

mod cohort;
mod grid;
mod report;
mod stats;

pub use cohort::{listed_name, read_listed, Cohort};
pub use report::{
    CohortDiversity, DiversityResult, FidelityOutcome, FidelityReport, Measurement, Provenance,
    Reconstruction, ReconstructionReport, SettingsReport, SubjectsReport, SweepReport, SweepRow,
    Timing,
};
pub use stats::{line_fit, pearson, LineFit, Summary};

use crate::covariates::{Conditioning, Covariates, Sex};
use crate::error::{Error, Result};
use crate::output::{mid_slices, GreyImage};
use crate::pipeline::{LatentDiffusionPipeline, SampleRequest, SamplingSettings};
use brain_ldm_metrics::{diversity, DiversityConfig, MsSsimConfig, MONAI_MS_SSIM_WEIGHTS};
use brain_ldm_nifti::Volume;
use candle_core::{Device, Tensor};
use ndarray::Axis;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The MS-SSIM window of the diversity measure: `brain-ldm eval`'s default (a Gaussian of
/// σ 1.5 cut to 4 voxels).
pub const DIVERSITY_KERNEL_SIZE: usize = 4;

/// Cohort images reconstructed when [`FidelityConfig::reconstructions`] is `None` and the
/// cohort has the model's image shape (fewer when it has fewer images).
pub const DEFAULT_RECONSTRUCTIONS: usize = 28;

/// The part of the experiment a generated brain belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Experiment {
    /// Ventricular volume swept over its training range.
    VentricularVolume,
    /// Brain volume swept over its training range.
    BrainVolume,
    /// Age swept over its training range.
    Age,
    /// Normalised ventricular volume beyond the training range (the paper's Figure 4).
    Extrapolation,
    /// Samples for the diversity measure.
    Diversity,
    /// Samples conditioned on the covariates of random training subjects (the paper's
    /// r = 0.972 measurement).
    TrainingSubjects,
}

impl Experiment {
    /// The experiments drawn as figure grids, in report order.
    pub const GRIDS: [Experiment; 4] = [
        Experiment::VentricularVolume,
        Experiment::BrainVolume,
        Experiment::Age,
        Experiment::Extrapolation,
    ];

    /// The name in files and tables (`ventricular_volume`, …).
    pub fn name(self) -> &'static str {
        match self {
            Experiment::VentricularVolume => "ventricular_volume",
            Experiment::BrainVolume => "brain_volume",
            Experiment::Age => "age",
            Experiment::Extrapolation => "extrapolation",
            Experiment::Diversity => "diversity",
            Experiment::TrainingSubjects => "training_subjects",
        }
    }

    /// Index of the covariate a grid experiment varies in the conditioning vector
    /// `[sex, age, ventricular volume, brain volume]`; `None` for diversity and training
    /// subjects.
    pub fn covariate_index(self) -> Option<usize> {
        match self {
            Experiment::VentricularVolume | Experiment::Extrapolation => Some(2),
            Experiment::BrainVolume => Some(3),
            Experiment::Age => Some(1),
            Experiment::Diversity | Experiment::TrainingSubjects => None,
        }
    }
}

/// Settings of the fidelity experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct FidelityConfig {
    /// Grid values per sweep and in the extrapolation (≥ 2; default 7).
    pub points: usize,
    /// Samples (noise streams) per grid value (≥ 1; default 4).
    pub seeds: usize,
    /// Random distinct pairs for the diversity measure, in each set (≥ 1; default 100).
    pub pairs: usize,
    /// Generated samples for the diversity measure; `None`: the fewest with at least twice
    /// [`pairs`](Self::pairs) distinct pairs.
    pub diversity_samples: Option<usize>,
    /// Samples conditioned on the covariates of random training subjects (0: none, else
    /// ≥ 2; default 28).
    pub subjects: usize,
    /// Cohort images reconstructed through the autoencoder and measured before and after.
    /// `None` (default): up to [`DEFAULT_RECONSTRUCTIONS`] when a cohort of the model's
    /// image shape is given, else none; `Some(0)`: none; `Some(n)`: `n` (≥ 2), which needs a
    /// cohort of the model's image shape with at least `n` images.
    pub reconstructions: Option<usize>,
    /// Normalised ventricular volumes of the extrapolation, first and last (default the
    /// paper's −0.5 … 1.9).
    pub extrapolation_range: (f64, f64),
    /// The sex of every swept sample.
    pub sex: Sex,
    /// Sampler, steps, eta and timestep spacing.
    pub sampling: SamplingSettings,
    /// Classifier-free guidance scale (1: plain conditional sampling; `brain-ldm fidelity`
    /// defaults to the model's [`guidance_scale`](LatentDiffusionPipeline::guidance_scale)).
    pub guidance_scale: f64,
    /// Samples denoised together (≥ 1; default 4).
    pub batch_size: usize,
    /// Seed of the starting noise and of every random draw.
    pub seed: u64,
}

impl Default for FidelityConfig {
    /// 7 points × 4 seeds, 100 pairs, 28 training subjects, up to 28 reconstructions,
    /// extrapolation −0.5 … 1.9, female, the bundle's sampler (DDIM 50), guidance 1, batches
    /// of 4, seed 0.
    fn default() -> Self {
        Self {
            points: 7,
            seeds: 4,
            pairs: 100,
            diversity_samples: None,
            subjects: 28,
            reconstructions: None,
            extrapolation_range: (-0.5, 1.9),
            sex: Sex::Female,
            sampling: SamplingSettings::default(),
            guidance_scale: 1.0,
            batch_size: 4,
            seed: 0,
        }
    }
}

/// The covariates held fixed while another is swept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixedCovariates {
    /// Normalised `[sex, age, ventricular volume, brain volume]`.
    pub conditioning: Conditioning,
    /// The same in physical units.
    pub covariates: Covariates,
    /// Where age and the volumes come from: the training subjects' means, or the midpoint
    /// of the scaling range when the model stores no training covariates.
    pub source: String,
}

/// What the samples of a part with drawn covariates (diversity, training subjects) are
/// conditioned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrawnConditioning {
    /// Nothing: the model's null condition.
    Unconditional,
    /// A random training subject's covariates per sample.
    TrainingCovariates {
        /// Training subjects stored with the model.
        subjects: usize,
    },
    /// Uniform over the scaling range (normalised 0 … 1), sex 0 or 1 at random.
    ScalingRange,
}

impl std::fmt::Display for DrawnConditioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unconditional => write!(f, "unconditional"),
            Self::TrainingCovariates { subjects } => {
                write!(f, "covariates of random training subjects (of {subjects})")
            }
            Self::ScalingRange => write!(
                f,
                "covariates uniform over the scaling range; no training covariates stored"
            ),
        }
    }
}

impl DrawnConditioning {
    /// What a part draws from on a model with `training` covariates (`None` or non-empty):
    /// the null condition when `unconditional`, else the training subjects, else the
    /// scaling range.
    fn of(training: Option<&[[f32; 4]]>, unconditional: bool) -> Self {
        match training {
            _ if unconditional => Self::Unconditional,
            Some(rows) => Self::TrainingCovariates {
                subjects: rows.len(),
            },
            None => Self::ScalingRange,
        }
    }

    /// `n` conditionings drawn with `rng` (`None`: unconditional). Training subjects come
    /// from `training` (the rows this source was made [`of`](Self::of)), without
    /// replacement when `distinct` and there are at least `n` of them, else with
    /// replacement; the scaling range gives sex 0 or 1 and the rest uniform in [0, 1).
    fn draw(
        self,
        training: &[[f32; 4]],
        n: usize,
        distinct: bool,
        rng: &mut SplitMix64,
    ) -> Vec<Option<Conditioning>> {
        match self {
            Self::Unconditional => vec![None; n],
            Self::TrainingCovariates { .. } if distinct && n <= training.len() => {
                distinct_indices(training.len(), n, rng)
                    .into_iter()
                    .map(|i| Some(Conditioning(training[i])))
                    .collect()
            }
            Self::TrainingCovariates { .. } => (0..n)
                .map(|_| Some(Conditioning(training[rng.below(training.len())])))
                .collect(),
            Self::ScalingRange => (0..n)
                .map(|_| {
                    Some(Conditioning([
                        rng.below(2) as f32,
                        rng.unit() as f32,
                        rng.unit() as f32,
                        rng.unit() as f32,
                    ]))
                })
                .collect(),
        }
    }
}

/// Where a run stands, reported after every denoising step and every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FidelityProgress {
    /// The experiment being sampled ([`Experiment::name`]), or `"diversity MS-SSIM"`.
    pub stage: &'static str,
    /// Samples generated and measured.
    pub samples_done: usize,
    /// Samples in the run.
    pub samples_total: usize,
    /// Denoising steps done, summed over samples.
    pub steps_done: usize,
    /// Denoising steps of the run, summed over samples.
    pub steps_total: usize,
}

/// One sample to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Planned {
    experiment: Experiment,
    row: usize,
    column: usize,
    conditioning: Option<Conditioning>,
    covariates: Option<Covariates>,
    index: u64,
}

/// The MS-SSIM settings for diversity on images of `shape`: MONAI's defaults with a window
/// of [`DIVERSITY_KERNEL_SIZE`] and as many of MONAI's five scales as fit the smallest axis
/// (their weights rescaled to sum to 1 when fewer than five).
///
/// # Errors
/// [`Error::InvalidRequest`] for an axis shorter than the window.
///
/// ```
/// let c = brain_ldm::fidelity::ms_ssim_for_shape([40, 56, 40])?;
/// assert_eq!((c.kernel_size, c.weights.len()), (4, 4));
/// assert_eq!(brain_ldm::fidelity::ms_ssim_for_shape([160, 224, 160])?.weights.len(), 5);
/// # Ok::<(), brain_ldm::Error>(())
/// ```
pub fn ms_ssim_for_shape(shape: [usize; 3]) -> Result<MsSsimConfig> {
    let smallest = shape.iter().copied().min().unwrap_or(0);
    for scales in (1..=MONAI_MS_SSIM_WEIGHTS.len()).rev() {
        let mut weights = MONAI_MS_SSIM_WEIGHTS[..scales].to_vec();
        if scales < MONAI_MS_SSIM_WEIGHTS.len() {
            let sum: f64 = weights.iter().sum();
            weights.iter_mut().for_each(|w| *w /= sum);
        }
        let config = MsSsimConfig {
            weights,
            ..MsSsimConfig::default().with_kernel_size(DIVERSITY_KERNEL_SIZE)
        };
        if config.min_size() <= smallest {
            return Ok(config);
        }
    }
    Err(Error::InvalidRequest(format!(
        "images of shape {shape:?} are too small for MS-SSIM with a window of {DIVERSITY_KERNEL_SIZE}"
    )))
}

/// `n` evenly spaced values from `lo` to `hi` inclusive (`n ≥ 2`).
fn linspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64)
        .collect()
}

/// SplitMix64: the random covariates of the diversity and training-subject samples, fixed
/// across `rand` versions.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is below 2⁻⁴⁰ for any realistic `n`).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `n` distinct indices below `len` (`n ≤ len`) in random order: the first `n` of a
/// random permutation (a partial Fisher–Yates shuffle).
fn distinct_indices(len: usize, n: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    for i in 0..n {
        order.swap(i, i + rng.below(len - i));
    }
    order.truncate(n);
    order
}

/// Checks a setting, naming it.
fn check(ok: bool, name: &'static str, value: impl ToString, reason: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSetting {
            name,
            value: value.to_string(),
            reason: reason.to_string(),
        })
    }
}

/// A planned fidelity run on one model: settings checked, every sample laid out.
pub struct Fidelity<'a> {
    pipeline: &'a LatentDiffusionPipeline,
    config: FidelityConfig,
    cohort: Option<Cohort>,
    reconstruction_files: Vec<PathBuf>,
    ms_ssim: MsSsimConfig,
    fixed: FixedCovariates,
    diversity_conditioning: DrawnConditioning,
    subjects_conditioning: DrawnConditioning,
    plan: Vec<Planned>,
    image_shape: [usize; 3],
    steps: usize,
}

impl<'a> Fidelity<'a> {
    /// Checks `config` against the model and the cohort folder (if any) and lays out every
    /// sample, before anything is generated.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] for a setting out of range (`points` < 2, `seeds`,
    /// `pairs` or `batch_size` 0, `subjects` or `reconstructions` 1, more pairs than a set
    /// has, more reconstructions than the cohort has images or without a cohort, guidance on
    /// a model that cannot sample unconditionally, …), [`Error::Cohort`] for a cohort folder
    /// without usable images or, with `reconstructions` asked for, of another image shape,
    /// [`Error::InvalidRequest`] for a model whose images the volumetry or MS-SSIM cannot
    /// take (a rotated affine, too small), scheduler errors for bad sampling settings.
    pub fn new(
        pipeline: &'a LatentDiffusionPipeline,
        config: FidelityConfig,
        cohort_dir: Option<&Path>,
    ) -> Result<Self> {
        let c = &config;
        check(
            c.points >= 2,
            "points",
            c.points,
            "a sweep needs at least 2 values",
        )?;
        check(
            c.seeds >= 1,
            "seeds",
            c.seeds,
            "at least 1 sample per value",
        )?;
        check(c.pairs >= 1, "pairs", c.pairs, "at least 1 pair")?;
        check(
            c.subjects != 1,
            "subjects",
            c.subjects,
            "a correlation needs at least 2 samples (0 leaves the part out)",
        )?;
        check(c.batch_size >= 1, "batch_size", c.batch_size, "at least 1")?;
        check(
            c.sampling.steps >= 1,
            "steps",
            c.sampling.steps,
            "at least 1",
        )?;
        let (lo, hi) = c.extrapolation_range;
        check(
            lo.is_finite() && hi.is_finite() && lo < hi,
            "extrapolation_range",
            format!("{lo}..{hi}"),
            "must be finite and increasing",
        )?;
        pipeline.check_guidance(c.guidance_scale, false)?;
        let unconditional = pipeline.null_condition.is_some();
        let steps = pipeline.scheduler(&c.sampling)?.timesteps().len();

        let affine = pipeline.image_affine;
        let rotated = (0..3).any(|r| {
            (0..3).any(|col| col != r && affine[r][col].abs() > 1e-6 * affine[r][r].abs())
        });
        if rotated || (0..3).any(|r| affine[r][r] == 0.0) {
            return Err(Error::InvalidRequest(format!(
                "the model's image affine {affine:?} is not axis-aligned; the volumetry needs \
                 voxel axes along the world axes"
            )));
        }
        let factor = pipeline.autoencoder.config().downsampling_factor();
        let [_, d, h, w] = pipeline.latent_shape;
        let image_shape = [d * factor, h * factor, w * factor];

        let n_div = match c.diversity_samples {
            Some(n) => {
                check(n >= 2, "diversity_samples", n, "at least 2")?;
                let available = n * (n - 1) / 2;
                check(
                    c.pairs <= available,
                    "pairs",
                    c.pairs,
                    &format!("{n} generated samples have only {available} distinct pairs"),
                )?;
                n
            }
            None => (2..).find(|n| n * (n - 1) / 2 >= 2 * c.pairs).unwrap_or(2),
        };
        let cohort = cohort_dir.map(Cohort::open).transpose()?;
        let mut smallest = image_shape;
        if let Some(cohort) = &cohort {
            let n = cohort.files().len();
            let available = n * n.saturating_sub(1) / 2;
            check(
                c.pairs <= available,
                "pairs",
                c.pairs,
                &format!(
                    "the cohort {} has {n} images, only {available} distinct pairs",
                    cohort.dir().display()
                ),
            )?;
            for (s, t) in smallest.iter_mut().zip(cohort.shape()) {
                *s = (*s).min(t);
            }
        }
        let reconstruction_files = Self::reconstruction_files(c, cohort.as_ref(), image_shape)?;
        let ms_ssim = ms_ssim_for_shape(smallest)?;

        let scaling = &pipeline.covariate_scaling;
        let training = pipeline
            .training_covariates
            .as_deref()
            .filter(|t| !t.is_empty());
        let mut fixed = [c.sex.code(), 0.5, 0.5, 0.5];
        let source = match training {
            Some(rows) => {
                for (i, value) in fixed.iter_mut().enumerate().skip(1) {
                    let sum: f64 = rows.iter().map(|r| f64::from(r[i])).sum();
                    *value = (sum / rows.len() as f64) as f32;
                }
                format!("means of the {} training subjects", rows.len())
            }
            None => "midpoints of the covariate scaling range; the model stores no training \
                     covariates"
                .to_string(),
        };
        let fixed = Conditioning(fixed).validated()?;
        let fixed = FixedCovariates {
            conditioning: fixed,
            covariates: scaling.physical(&fixed)?,
            source,
        };
        let diversity_conditioning = DrawnConditioning::of(training, unconditional);
        let subjects_conditioning = DrawnConditioning::of(training, false);

        let mut plan = Vec::new();
        for experiment in Experiment::GRIDS {
            let index = experiment.covariate_index().unwrap_or(2);
            for (row, x) in Self::grid_values(&config, experiment)
                .into_iter()
                .enumerate()
            {
                let mut values = fixed.conditioning.0;
                values[index] = x as f32;
                let conditioning = Conditioning(values).validated()?;
                let covariates = scaling.physical(&conditioning)?;
                for column in 0..c.seeds {
                    plan.push(Planned {
                        experiment,
                        row,
                        column,
                        conditioning: Some(conditioning),
                        covariates: Some(covariates),
                        index: column as u64,
                    });
                }
            }
        }
        // Noise streams: the grid columns use 0 … seeds − 1, the diversity samples the next
        // n_div, the training subjects those after; each part draws with its own generator.
        let diversity_start = c.seeds as u64;
        let subjects_start = diversity_start + n_div as u64;
        let rows = training.unwrap_or_default();
        for (experiment, source, n, distinct, salt, first_index) in [
            (
                Experiment::TrainingSubjects,
                subjects_conditioning,
                c.subjects,
                true,
                0x7375_626a_6563_7473, // "subjects"
                subjects_start,
            ),
            (
                Experiment::Diversity,
                diversity_conditioning,
                n_div,
                false,
                0x6469_7665_7273_6974, // "diversit"
                diversity_start,
            ),
        ] {
            let mut rng = SplitMix64(c.seed ^ salt);
            for (i, conditioning) in source
                .draw(rows, n, distinct, &mut rng)
                .into_iter()
                .enumerate()
            {
                plan.push(Planned {
                    experiment,
                    row: 0,
                    column: i,
                    conditioning,
                    covariates: conditioning.map(|c| scaling.physical(&c)).transpose()?,
                    index: first_index + i as u64,
                });
            }
        }
        Ok(Self {
            pipeline,
            config,
            cohort,
            reconstruction_files,
            ms_ssim,
            fixed,
            diversity_conditioning,
            subjects_conditioning,
            plan,
            image_shape,
            steps,
        })
    }

    /// The cohort images to reconstruct, drawn with their own random stream of the seed.
    fn reconstruction_files(
        c: &FidelityConfig,
        cohort: Option<&Cohort>,
        image_shape: [usize; 3],
    ) -> Result<Vec<PathBuf>> {
        let n = match (cohort, c.reconstructions) {
            (_, Some(0)) | (None, None) => return Ok(Vec::new()),
            (None, Some(n)) => {
                return Err(Error::InvalidSetting {
                    name: "reconstructions",
                    value: n.to_string(),
                    reason: "needs a cohort folder".into(),
                })
            }
            (Some(cohort), None) if cohort.shape() == image_shape => {
                let n = DEFAULT_RECONSTRUCTIONS.min(cohort.files().len());
                if n < 2 {
                    return Ok(Vec::new());
                }
                n
            }
            (Some(_), None) => return Ok(Vec::new()),
            (Some(cohort), Some(n)) => {
                check(
                    n >= 2,
                    "reconstructions",
                    n,
                    "a correlation needs at least 2 images (0 leaves the part out)",
                )?;
                if cohort.shape() != image_shape {
                    return Err(Error::Cohort {
                        path: cohort.dir().to_path_buf(),
                        reason: format!(
                            "images of shape {:?}, but the model's are {image_shape:?}: \
                             reconstructions need the model's image shape",
                            cohort.shape()
                        ),
                    });
                }
                let available = cohort.files().len();
                check(
                    n <= available,
                    "reconstructions",
                    n,
                    &format!(
                        "the cohort {} has {available} images",
                        cohort.dir().display()
                    ),
                )?;
                n
            }
        };
        let files = cohort.map_or(&[][..], Cohort::files);
        let mut rng = SplitMix64(c.seed ^ 0x7265_636f_6e73_7472); // "reconstr"
        Ok(distinct_indices(files.len(), n, &mut rng)
            .into_iter()
            .map(|i| files[i].clone())
            .collect())
    }

    /// Cohort images the run reconstructs.
    pub fn reconstructions(&self) -> usize {
        self.reconstruction_files.len()
    }

    /// The normalised values of the varied covariate, one per grid row.
    fn grid_values(config: &FidelityConfig, experiment: Experiment) -> Vec<f64> {
        match experiment {
            Experiment::Extrapolation => {
                let (lo, hi) = config.extrapolation_range;
                linspace(lo, hi, config.points)
            }
            Experiment::Diversity | Experiment::TrainingSubjects => Vec::new(),
            _ => linspace(0.0, 1.0, config.points),
        }
    }

    /// Samples the run generates.
    pub fn samples(&self) -> usize {
        self.plan.len()
    }

    /// Denoising steps per sample.
    pub fn steps_per_sample(&self) -> usize {
        self.steps
    }

    /// The MS-SSIM settings of the diversity measure (the same for both sets).
    pub fn ms_ssim(&self) -> &MsSsimConfig {
        &self.ms_ssim
    }

    /// The covariates held fixed in the sweeps.
    pub fn fixed(&self) -> &FixedCovariates {
        &self.fixed
    }

    /// What the diversity samples are conditioned on.
    pub fn diversity_conditioning(&self) -> DrawnConditioning {
        self.diversity_conditioning
    }

    /// What the training-subject samples are conditioned on (whether or not
    /// [`FidelityConfig::subjects`] is 0).
    pub fn subjects_conditioning(&self) -> DrawnConditioning {
        self.subjects_conditioning
    }

    /// The settings.
    pub fn config(&self) -> &FidelityConfig {
        &self.config
    }

    /// Generates every sample in batches of [`FidelityConfig::batch_size`] (never mixing
    /// experiments), measures each, then scores diversity.
    ///
    /// A brain the volumetry cannot measure (e.g. a blank image) is recorded with its error
    /// and left out of the statistics.
    ///
    /// # Errors
    /// Sampling, tensor and MS-SSIM errors (e.g. a NaN image, an unreadable cohort image).
    pub fn run(
        &self,
        device: &Device,
        progress: &mut dyn FnMut(FidelityProgress),
    ) -> Result<FidelityOutcome> {
        let start = Instant::now();
        let total = self.plan.len();
        let steps_total = total * self.steps;
        let mut measurements = Vec::with_capacity(total);
        let mut cells: Vec<Option<GreyImage>> = vec![None; total];
        let mut diversity_images = Vec::new();
        let (mut sampling, mut volumetry) = (0.0, 0.0);
        let mut done = 0;
        while done < total {
            let experiment = self.plan[done].experiment;
            let n = self.plan[done..]
                .iter()
                .take(self.config.batch_size)
                .take_while(|p| p.experiment == experiment)
                .count();
            let batch = &self.plan[done..done + n];
            let requests: Vec<SampleRequest> = batch
                .iter()
                .map(|p| SampleRequest {
                    conditioning: p.conditioning,
                    seed: self.config.seed,
                    index: p.index,
                })
                .collect();
            let stage = experiment.name();
            let t0 = Instant::now();
            let mut scheduler = self.pipeline.scheduler(&self.config.sampling)?;
            let steps = self.steps;
            let images = self.pipeline.sample_batch(
                scheduler.as_mut(),
                self.config.guidance_scale,
                &requests,
                device,
                &mut |step, _| {
                    progress(FidelityProgress {
                        stage,
                        samples_done: done,
                        samples_total: total,
                        steps_done: done * steps + step.min(steps) * n,
                        steps_total,
                    })
                },
            )?;
            sampling += t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            for (k, planned) in batch.iter().enumerate() {
                let image = images.narrow(0, k, 1)?;
                let volume =
                    positive_axes(Volume::from_tensor(&image, self.pipeline.image_affine)?);
                let (volumes, error) = match measure(&volume) {
                    Ok(v) => (Some(v), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                measurements.push(Measurement {
                    experiment,
                    row: planned.row,
                    column: planned.column,
                    seed: self.config.seed,
                    index: planned.index,
                    conditioning: planned.conditioning,
                    covariates: planned.covariates,
                    volumes,
                    error,
                });
                match experiment {
                    Experiment::Diversity => diversity_images.push(volume.data),
                    Experiment::TrainingSubjects => {}
                    _ => cells[done + k] = Some(mid_slices(&volume, 1.0)),
                }
            }
            volumetry += t1.elapsed().as_secs_f64();
            done += n;
            progress(FidelityProgress {
                stage,
                samples_done: done,
                samples_total: total,
                steps_done: done * self.steps,
                steps_total,
            });
        }

        let t_reconstruction = Instant::now();
        if !self.reconstruction_files.is_empty() {
            progress(FidelityProgress {
                stage: "autoencoder reconstructions",
                samples_done: total,
                samples_total: total,
                steps_done: steps_total,
                steps_total,
            });
        }
        let reconstructions = self.reconstruct(device)?;
        let reconstruction_seconds = t_reconstruction.elapsed().as_secs_f64();

        let t2 = Instant::now();
        progress(FidelityProgress {
            stage: "diversity MS-SSIM",
            samples_done: total,
            samples_total: total,
            steps_done: steps_total,
            steps_total,
        });
        let div_config = DiversityConfig {
            pairs: self.config.pairs,
            seed: self.config.seed,
            ms_ssim: self.ms_ssim.clone(),
        };
        let generated = diversity(&diversity_images, &div_config, "generated", &|_| {})?;
        let cohort = match &self.cohort {
            Some(cohort) => Some(CohortDiversity {
                dir: cohort.dir().display().to_string(),
                images: cohort.files().len(),
                report: diversity(cohort, &div_config, "cohort", &|_| {})?,
            }),
            None => None,
        };
        let diversity_seconds = t2.elapsed().as_secs_f64();

        let grids = Experiment::GRIDS
            .iter()
            .map(|&experiment| {
                let rows = self.config.points;
                let mut table = vec![vec![None; self.config.seeds]; rows];
                for (planned, cell) in self.plan.iter().zip(&mut cells) {
                    if planned.experiment == experiment {
                        table[planned.row][planned.column] = cell.take();
                    }
                }
                (experiment, grid::tile(&table))
            })
            .collect();
        let report = self.report(
            &measurements,
            &reconstructions,
            DiversityResult {
                ms_ssim: self.ms_ssim.clone(),
                conditioning: self.diversity_conditioning,
                generated,
                cohort,
            },
            Timing {
                sampling,
                volumetry,
                reconstruction: reconstruction_seconds,
                diversity: diversity_seconds,
                total: start.elapsed().as_secs_f64(),
            },
        );
        Ok(FidelityOutcome {
            report,
            measurements,
            reconstructions,
            grids,
        })
    }

    /// Encodes the drawn cohort images (latent mean) in batches of
    /// [`FidelityConfig::batch_size`], decodes them and measures image and reconstruction.
    fn reconstruct(&self, device: &Device) -> Result<Vec<Reconstruction>> {
        let mut out = Vec::with_capacity(self.reconstruction_files.len());
        for batch in self.reconstruction_files.chunks(self.config.batch_size) {
            let mut volumes = Vec::with_capacity(batch.len());
            let mut tensors = Vec::with_capacity(batch.len());
            for path in batch {
                let volume = brain_ldm_nifti::read(path).map_err(|e| Error::Cohort {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                tensors.push(volume.to_tensor(device)?);
                volumes.push(volume);
            }
            let decoded = self
                .pipeline
                .autoencoder
                .reconstruct(&Tensor::cat(&tensors, 0)?)?;
            for (k, (path, volume)) in batch.iter().zip(volumes).enumerate() {
                let affine = volume.affine;
                let original = positive_axes(volume);
                let reconstruction =
                    positive_axes(Volume::from_tensor(&decoded.narrow(0, k, 1)?, affine)?);
                let l1 = (&original.data - &reconstruction.data)
                    .mapv(f32::abs)
                    .mean()
                    .map_or(f64::NAN, f64::from);
                let (before, after) = (measure(&original), measure(&reconstruction));
                let error = match (&before, &after) {
                    (Err(e), _) => Some(format!("image: {e}")),
                    (_, Err(e)) => Some(format!("reconstruction: {e}")),
                    _ => None,
                };
                out.push(Reconstruction {
                    file: path.display().to_string(),
                    original: before.ok(),
                    reconstruction: after.ok(),
                    l1,
                    error,
                });
            }
        }
        Ok(out)
    }

    /// The report of a finished run.
    fn report(
        &self,
        measurements: &[Measurement],
        reconstructions: &[Reconstruction],
        diversity: DiversityResult,
        seconds: Timing,
    ) -> FidelityReport {
        let scaling = self.pipeline.covariate_scaling;
        let sweep = |experiment: Experiment| {
            let index = experiment.covariate_index().unwrap_or(2);
            let values = Self::grid_values(&self.config, experiment);
            // Every grid value was mapped to physical units when the run was planned.
            let physical = values
                .iter()
                .enumerate()
                .map(|(row, &x)| {
                    let c = self
                        .plan
                        .iter()
                        .find(|p| p.experiment == experiment && p.row == row)
                        .and_then(|p| p.covariates);
                    let value = c.map_or(f64::NAN, |c| match index {
                        1 => c.age_years,
                        2 => c.ventricular_volume_mm3,
                        _ => c.brain_volume_mm3,
                    });
                    (x, value)
                })
                .collect::<Vec<_>>();
            SweepReport::new(experiment, index, &physical, measurements)
        };
        let c = &self.config;
        let affine = self.pipeline.image_affine;
        FidelityReport {
            format_version: 1,
            settings: SettingsReport {
                scheduler: c.sampling.scheduler.to_string(),
                steps: c.sampling.steps,
                eta: c.sampling.eta,
                spacing: c.sampling.spacing.to_string(),
                guidance_scale: c.guidance_scale,
                seed: c.seed,
                seeds: c.seeds,
                points: c.points,
                pairs: c.pairs,
                diversity_samples: self
                    .plan
                    .iter()
                    .filter(|p| p.experiment == Experiment::Diversity)
                    .count(),
                subjects: c.subjects,
                batch_size: c.batch_size,
                extrapolation_range: c.extrapolation_range,
                fixed: self.fixed.clone(),
                covariate_scaling: scaling,
                image_shape: self.image_shape,
                voxel_size_mm: [0, 1, 2].map(|r| affine[r][r].abs()),
                samples: self.plan.len(),
            },
            ventricular_volume: sweep(Experiment::VentricularVolume),
            brain_volume: sweep(Experiment::BrainVolume),
            age: sweep(Experiment::Age),
            extrapolation: sweep(Experiment::Extrapolation),
            training_subjects: (c.subjects > 0)
                .then(|| SubjectsReport::new(self.subjects_conditioning, measurements)),
            reconstruction: self
                .cohort
                .as_ref()
                .filter(|_| !reconstructions.is_empty())
                .map(|cohort| {
                    ReconstructionReport::new(cohort.dir().display().to_string(), reconstructions)
                }),
            diversity,
            measurement_failures: measurements.iter().filter(|m| m.error.is_some()).count(),
            seconds,
        }
    }
}

/// `volume` with every axis whose affine entry is negative flipped, so the voxel axes point
/// along the world axes (as the volumetry needs), values clamped to [0, 1].
fn positive_axes(mut volume: Volume) -> Volume {
    for r in 0..3 {
        let size = volume.affine[r][r];
        if size < 0.0 {
            let n = volume.data.len_of(Axis(r));
            volume.data.invert_axis(Axis(r));
            volume.affine[r][3] += size * (n as f64 - 1.0);
            volume.affine[r][r] = -size;
        }
    }
    volume.data = volume.data.as_standard_layout().mapv(|v| v.clamp(0.0, 1.0));
    volume
}

/// Ventricular, brain and intracranial volume of an image in [`positive_axes`] form.
fn measure(volume: &Volume) -> brain_ldm_synth::Result<brain_ldm_synth::labels::Volumes> {
    brain_ldm_synth::volumetry::measure_volumes(volume.data.view(), &volume.affine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn flipped_axes_keep_world_positions() {
        let data = Array3::from_shape_fn((3, 2, 2), |(i, j, k)| (i * 4 + j * 2 + k) as f32 / 12.0);
        let mut affine = brain_ldm_nifti::affine::IDENTITY;
        affine[0][0] = -2.0;
        affine[0][3] = 10.0;
        let v = positive_axes(Volume::new(data.clone(), affine));
        assert_eq!(v.affine[0][0], 2.0);
        // Voxel 0 of the flipped volume is old voxel 2, at x = 10 − 2·2 = 6.
        assert_eq!(v.affine[0][3], 6.0);
        assert_eq!(v.data[[0, 1, 1]], data[[2, 1, 1]]);
        assert!(v.data.is_standard_layout());
    }

    #[test]
    fn ms_ssim_scales_fit_the_smallest_axis() {
        // Window 4: five scales need 64 voxels, four 36, three 16.
        assert_eq!(
            ms_ssim_for_shape([64, 64, 64]).unwrap().weights,
            MONAI_MS_SSIM_WEIGHTS
        );
        let c = ms_ssim_for_shape([32, 48, 32]).unwrap();
        assert_eq!(c.weights.len(), 3);
        assert!((c.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(c.weights[0] < c.weights[1]);
        assert!(ms_ssim_for_shape([3, 40, 40]).is_err());
    }

    #[test]
    fn drawn_conditionings_come_from_their_source() {
        let rows: Vec<[f32; 4]> = (0..5).map(|i| [0.0, 0.1 * i as f32, 0.5, 0.5]).collect();
        let source = DrawnConditioning::of(Some(&rows), false);
        assert_eq!(
            source,
            DrawnConditioning::TrainingCovariates { subjects: 5 }
        );
        let draw = |n, distinct, seed| {
            source
                .draw(&rows, n, distinct, &mut SplitMix64(seed))
                .into_iter()
                .map(|c| c.unwrap().0)
                .collect::<Vec<_>>()
        };
        // Without replacement: 5 of 5 is a permutation of the rows.
        let mut all = draw(5, true, 1);
        assert_ne!(all, rows, "shuffled");
        all.sort_by(|a, b| a[1].total_cmp(&b[1]));
        assert_eq!(all, rows);
        // Deterministic in the seed, a different draw for another seed.
        assert_eq!(draw(3, true, 1), draw(3, true, 1));
        assert_ne!(draw(3, true, 1), draw(3, true, 2));
        // More than there are: with replacement, still training rows.
        let many = draw(12, true, 1);
        assert_eq!(many.len(), 12);
        assert!(many.iter().all(|r| rows.contains(r)));
        // With replacement the draw is the diversity part's: one `below` per sample.
        let mut rng = SplitMix64(7);
        let expected: Vec<_> = (0..4).map(|_| rows[rng.below(5)]).collect();
        assert_eq!(draw(4, false, 7), expected);

        let uniform = DrawnConditioning::of(None, false);
        assert_eq!(uniform, DrawnConditioning::ScalingRange);
        let drawn = uniform.draw(&[], 50, true, &mut SplitMix64(3));
        let values: Vec<[f32; 4]> = drawn.iter().map(|c| c.unwrap().0).collect();
        assert!(values.iter().all(|v| v[0] == 0.0 || v[0] == 1.0));
        assert!(values.iter().any(|v| v[0] == 0.0) && values.iter().any(|v| v[0] == 1.0));
        assert!(values
            .iter()
            .all(|v| v[1..].iter().all(|x| (0.0..1.0).contains(x))));
        assert_eq!(
            DrawnConditioning::of(Some(&rows), true).draw(&rows, 3, true, &mut SplitMix64(0)),
            vec![None; 3]
        );
    }

    #[test]
    fn grid_values_span_the_ranges() {
        let config = FidelityConfig::default();
        let v = Fidelity::grid_values(&config, Experiment::Extrapolation);
        assert_eq!(v.len(), 7);
        assert!((v[1] - (-0.1)).abs() < 1e-12 && (v[6] - 1.9).abs() < 1e-12);
        let v = Fidelity::grid_values(&config, Experiment::Age);
        assert_eq!((v[0], v[3], v[6]), (0.0, 0.5, 1.0));
    }
}
