//! TOML training configurations. Every key has a default (documented in `docs/training.md`);
//! a key that does not exist is an error naming it.

use std::path::Path;

use brain_ldm_autoencoder::AutoencoderKLConfig;
use brain_ldm_nifti::preprocess::{IntensityScaling, Interpolation, PreprocessOptions};
use brain_ldm_nifti::AxisCodes;
use brain_ldm_unet::DiffusionModelUNetConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::optim::{AdamWConfig, LrDecay};

/// Settings both stages share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommonConfig {
    /// Seed of every random choice (shuffling, noise, timesteps, dropout, validation split).
    pub seed: u64,
    /// Optimiser steps in the whole run.
    pub steps: u64,
    /// Images (or latents) per micro-batch.
    pub batch_size: usize,
    /// Micro-batches whose gradients are averaged into one optimiser step.
    pub grad_accumulation: usize,
    /// Write a checkpoint every this many steps (and always at the end); 0: only at the end.
    pub checkpoint_every: u64,
    /// Checkpoints kept in `checkpoints/` (the newest).
    pub keep_checkpoints: usize,
    /// Fraction of subjects held out for the validation loss (by subject; 0 = none).
    pub validation_fraction: f64,
    /// Compute the validation loss every this many steps; 0: never.
    pub validate_every: u64,
    /// Batches read ahead of the training step by the loader thread.
    pub prefetch: usize,
    /// Weights of the moving average written as the model (0 = no EMA; the raw weights are
    /// written instead).
    pub ema_decay: f64,
}

impl Default for CommonConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            steps: 1000,
            batch_size: 1,
            grad_accumulation: 1,
            checkpoint_every: 500,
            keep_checkpoints: 2,
            validation_fraction: 0.0,
            validate_every: 0,
            prefetch: 2,
            ema_decay: 0.0,
        }
    }
}

/// One optimiser: AdamW with warm-up, decay and clipping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Adam's `(beta1, beta2)`.
    pub betas: (f64, f64),
    /// Adam's epsilon.
    pub eps: f64,
    /// Decoupled weight decay (0: Adam).
    pub weight_decay: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: u64,
    /// `constant` or `cosine` after warm-up.
    pub decay: LrDecay,
    /// The learning rate cosine decay ends at.
    pub min_lr: f64,
    /// Global gradient-norm clipping threshold; 0: none.
    pub grad_clip_norm: f64,
}

impl OptimizerConfig {
    fn with_lr(lr: f64) -> Self {
        Self {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            warmup_steps: 0,
            decay: LrDecay::Constant,
            min_lr: 0.0,
            grad_clip_norm: 0.0,
        }
    }

    /// The AdamW hyper-parameters.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            betas: self.betas,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }

    /// The learning rate of optimiser step `step` of `total`.
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        crate::optim::learning_rate(
            self.lr,
            step,
            self.warmup_steps,
            total,
            self.decay,
            self.min_lr,
        )
    }

    fn validate(&self, section: &str) -> Result<()> {
        let bad = |key: &str, reason: &str| {
            Err(TrainError::InvalidConfig {
                key: format!("{section}.{key}"),
                reason: reason.into(),
            })
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", "must be positive");
        }
        let (b1, b2) = self.betas;
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            return bad("betas", "must lie in [0, 1)");
        }
        if self.eps.is_nan() || self.eps <= 0.0 {
            return bad("eps", "must be positive");
        }
        if !(self.weight_decay >= 0.0 && self.min_lr >= 0.0 && self.grad_clip_norm >= 0.0) {
            return bad("weight_decay/min_lr/grad_clip_norm", "must not be negative");
        }
        Ok(())
    }
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self::with_lr(1e-4)
    }
}

/// Which participants.tsv (or manifest) columns hold the covariates, and how images are
/// preprocessed as they are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Sex column: `F`/`female`/`0` → 0, `M`/`male`/`1` → 1 (case-insensitive).
    pub sex_column: String,
    /// Age column (years).
    pub age_column: String,
    /// Ventricular volume column (mm³).
    pub ventricular_volume_column: String,
    /// Brain volume column (mm³).
    pub brain_volume_column: String,
    /// Image column of a CSV/TSV manifest (paths relative to the manifest).
    pub image_column: String,
    /// `[data.preprocess]`: bring every image into the model's space as it is read; `None`
    /// (no table): images are used as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<PreprocessConfig>,
}

impl DataConfig {
    /// The preprocessing images go through as they are read (`None`: as stored).
    ///
    /// # Errors
    /// As [`PreprocessConfig::options`].
    pub fn preprocess_options(&self) -> Result<Option<PreprocessOptions>> {
        self.preprocess
            .as_ref()
            .map(PreprocessConfig::options)
            .transpose()
    }
}

/// `[data.preprocess]`: the steps of [`PreprocessOptions`] (those of `brain-ldm preprocess`):
/// reorient, resample, crop/pad (centred, zero fill), scale intensities. A key left out skips
/// its step, or keeps the `preset`'s value.
///
/// ```
/// use brain_ldm_train::AutoencoderTrainConfig;
/// let text = "[data.preprocess]\npreset = \"brain_ldm\"\nspacing = [4.0, 4.0, 4.0]\nshape = [40, 56, 40]\nscaling = { percentiles = [0.5, 99.5] }\n";
/// let cfg = AutoencoderTrainConfig::from_toml(text, "ae.toml".as_ref())?;
/// let options = cfg.data.preprocess_options()?.unwrap();
/// assert_eq!((options.spacing, options.shape), (Some([4.0; 3]), Some([40, 56, 40])));
/// assert_eq!(options.orientation.unwrap().to_string(), "RAS"); // from the preset
/// # Ok::<(), brain_ldm_train::TrainError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreprocessConfig {
    /// Starting values the other keys override: `"brain_ldm"` is
    /// [`PreprocessOptions::brain_ldm`] (RAS, 1 mm, 160×224×160, min-max, linear).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<PreprocessPreset>,
    /// Target orientation: three letters, one each of L/R, P/A, I/S (`"RAS"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orientation: Option<String>,
    /// Target voxel size (mm) per axis, after reorientation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spacing: Option<[f64; 3]>,
    /// Interpolation of the resampling (default linear).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpolation: Option<InterpolationConfig>,
    /// Target shape after resampling (centred crop or zero padding).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<[usize; 3]>,
    /// Intensity scaling to [0, 1], applied last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingConfig>,
}

/// `data.preprocess.preset` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreprocessPreset {
    /// [`PreprocessOptions::brain_ldm`].
    BrainLdm,
}

/// `data.preprocess.interpolation` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterpolationConfig {
    /// Trilinear (images).
    Linear,
    /// Nearest neighbour (label maps).
    Nearest,
}

/// `data.preprocess.scaling` values: `"none"`, `"min_max"` or `{ percentiles = [LOW, HIGH] }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalingConfig {
    /// Keep intensities (overrides a preset's scaling).
    None,
    /// Min-max to [0, 1].
    MinMax,
    /// Clip to these percentiles (0 ≤ LOW < HIGH ≤ 100), then min-max to [0, 1].
    Percentiles([f64; 2]),
}

impl PreprocessConfig {
    /// The preprocessing these keys describe: the preset's (or no step), each key given
    /// replacing its value.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] naming the key (`data.preprocess.orientation`, …) for an
    /// orientation that is not three letters of L/R, P/A, I/S, a voxel size that is not
    /// positive and finite, a zero extent, or percentiles outside 0 ≤ LOW < HIGH ≤ 100.
    pub fn options(&self) -> Result<PreprocessOptions> {
        let bad = |key: &str, reason: String| TrainError::InvalidConfig {
            key: format!("data.preprocess.{key}"),
            reason,
        };
        let mut options = match self.preset {
            Some(PreprocessPreset::BrainLdm) => PreprocessOptions::brain_ldm(),
            None => PreprocessOptions {
                orientation: None,
                spacing: None,
                interpolation: Interpolation::Linear,
                shape: None,
                scaling: None,
            },
        };
        if let Some(codes) = &self.orientation {
            let codes = codes
                .parse::<AxisCodes>()
                .map_err(|e| bad("orientation", format!("{codes:?}: {e}")))?;
            options.orientation = Some(codes);
        }
        if let Some(spacing) = self.spacing {
            if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(bad(
                    "spacing",
                    format!("{spacing:?}: every voxel size must be positive and finite (mm)"),
                ));
            }
            options.spacing = Some(spacing);
        }
        if let Some(interpolation) = self.interpolation {
            options.interpolation = match interpolation {
                InterpolationConfig::Linear => Interpolation::Linear,
                InterpolationConfig::Nearest => Interpolation::Nearest,
            };
        }
        if let Some(shape) = self.shape {
            if shape.contains(&0) {
                return Err(bad(
                    "shape",
                    format!("{shape:?}: every extent must be at least 1"),
                ));
            }
            options.shape = Some(shape);
        }
        if let Some(scaling) = self.scaling {
            options.scaling = match scaling {
                ScalingConfig::None => None,
                ScalingConfig::MinMax => Some(IntensityScaling::MinMax),
                ScalingConfig::Percentiles([lower, upper]) => {
                    if !(0.0 <= lower && lower < upper && upper <= 100.0) {
                        return Err(bad(
                            "scaling.percentiles",
                            format!("[{lower}, {upper}]: need 0 <= LOW < HIGH <= 100"),
                        ));
                    }
                    Some(IntensityScaling::Percentile { lower, upper })
                }
            };
        }
        Ok(options)
    }
}

impl Default for DataConfig {
    /// The columns brain-ldm-synth writes.
    fn default() -> Self {
        Self {
            sex_column: "sex".into(),
            age_column: "age".into(),
            ventricular_volume_column: "ventricular_volume".into(),
            brain_volume_column: "brain_volume".into(),
            image_column: "image".into(),
            preprocess: None,
        }
    }
}

/// The discriminator of stage 1 (MONAI `PatchDiscriminator`, 3D, batch norm, LeakyReLU 0.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscriminatorConfig {
    /// Filters of the first layer (doubled per layer).
    pub channels: usize,
    /// Layers after the first.
    pub num_layers_d: usize,
    /// Its optimiser.
    pub optimizer: OptimizerConfig,
}

impl Default for DiscriminatorConfig {
    /// The closest public recipe: 96 channels, 3 layers, lr 1e-4.
    fn default() -> Self {
        Self {
            channels: 96,
            num_layers_d: 3,
            optimizer: OptimizerConfig::with_lr(1e-4),
        }
    }
}

/// Stage 1: `brain-ldm train autoencoder --config ae.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoencoderTrainConfig {
    /// Shared settings.
    #[serde(flatten)]
    pub common: CommonConfig,
    /// Weight of the KL term.
    pub kl_weight: f64,
    /// Weight of the generator's adversarial term (0: no discriminator).
    pub adversarial_weight: f64,
    /// Optimiser step from which the adversarial terms are on.
    pub adversarial_start_step: u64,
    /// Weight of the perceptual term (needs a [`crate::losses::PerceptualLoss`]).
    pub perceptual_weight: f64,
    /// The autoencoder's constructor arguments (MONAI names).
    pub model: AutoencoderKLConfig,
    /// Its optimiser.
    pub optimizer: OptimizerConfig,
    /// The discriminator and its optimiser.
    pub discriminator: DiscriminatorConfig,
    /// Covariate columns (unused by stage 1 but validated with the dataset) and preprocessing.
    pub data: DataConfig,
}

impl Default for AutoencoderTrainConfig {
    /// The closest public recipe (NOTES.md): lr 5e-5, KL 1e-8, adversarial 0.005, the
    /// bundle's autoencoder.
    fn default() -> Self {
        Self {
            common: CommonConfig::default(),
            kl_weight: 1e-8,
            adversarial_weight: 0.005,
            adversarial_start_step: 0,
            perceptual_weight: 0.0,
            model: AutoencoderKLConfig::brain_ldm(),
            optimizer: OptimizerConfig::with_lr(5e-5),
            discriminator: DiscriminatorConfig::default(),
            data: DataConfig::default(),
        }
    }
}

/// Stage 2: `brain-ldm train diffusion --config ldm.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiffusionTrainConfig {
    /// Shared settings.
    #[serde(flatten)]
    pub common: CommonConfig,
    /// Probability of replacing a sample's covariates by `null_condition`.
    pub condition_dropout: f64,
    /// The null condition (normalised covariates) used by dropout, and later by unconditional
    /// or classifier-free-guided sampling.
    pub null_condition: [f32; 4],
    /// Latent scale factor; 0: computed as 1 / std of the first `scale_factor_samples`
    /// training latents.
    pub scale_factor: f64,
    /// Training subjects used to compute the scale factor.
    pub scale_factor_samples: usize,
    /// The UNet's constructor arguments (MONAI names).
    pub model: DiffusionModelUNetConfig,
    /// The noise schedule and prediction type: MONAI scheduler arguments
    /// (`schedule`, `beta_start`, `beta_end`, `num_train_timesteps`, `prediction_type`, …).
    pub scheduler: serde_json::Value,
    /// Its optimiser.
    pub optimizer: OptimizerConfig,
    /// Covariate columns and preprocessing.
    pub data: DataConfig,
}

impl Default for DiffusionTrainConfig {
    /// The bundle's UNet and schedule; the closest public recipe's lr 2.5e-5, 10 % condition
    /// dropout; no EMA (the shared settings' defaults, which a TOML file's missing keys take).
    fn default() -> Self {
        Self {
            common: CommonConfig::default(),
            condition_dropout: 0.1,
            null_condition: [0.0; 4],
            scale_factor: 0.0,
            scale_factor_samples: 64,
            model: DiffusionModelUNetConfig::brain_ldm(),
            scheduler: serde_json::json!({
                "num_train_timesteps": 1000,
                "schedule": "scaled_linear_beta",
                "beta_start": 0.0015,
                "beta_end": 0.0205,
                "prediction_type": "epsilon",
                "clip_sample": false,
            }),
            optimizer: OptimizerConfig::with_lr(2.5e-5),
            data: DataConfig::default(),
        }
    }
}

/// Parses a TOML configuration: unknown keys anywhere (also inside `model`) are errors.
fn parse<T: serde::de::DeserializeOwned + Serialize>(text: &str, path: &Path) -> Result<T> {
    let err = |reason: String| TrainError::Config {
        path: path.to_path_buf(),
        reason,
    };
    let value: toml::Table = toml::from_str(text).map_err(|e| err(e.to_string()))?;
    let config: T = value
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| err(e.to_string()))?;
    // `#[serde(flatten)]` and the model sections (which accept a bundle's `_target_`) let
    // unknown keys through: compare the keys written with those the configuration has.
    let json = serde_json::to_value(&config).map_err(|e| err(e.to_string()))?;
    check_keys(&value, &json, "").map_err(|key| err(format!("unknown key `{key}`")))?;
    Ok(config)
}

/// Keys a configuration accepts but does not always write back: the UNet's old name
/// `num_channels`, and its `context_embedding`, which is written only when on.
const UNWRITTEN_KEYS: [&str; 2] = ["num_channels", "context_embedding"];

/// The first key of `table` (recursively) that `known` lacks; `scheduler` is free-form.
fn check_keys(
    table: &toml::Table,
    known: &serde_json::Value,
    prefix: &str,
) -> std::result::Result<(), String> {
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        let Some(inner) = known.get(key) else {
            if UNWRITTEN_KEYS.contains(&key.as_str()) {
                continue;
            }
            return Err(path);
        };
        if let (toml::Value::Table(t), false) = (value, path == "scheduler") {
            check_keys(t, inner, &format!("{path}."))?;
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(crate::error::io(path))
}

impl CommonConfig {
    fn validate(&self) -> Result<()> {
        let bad = |key: &str, reason: &str| {
            Err(TrainError::InvalidConfig {
                key: key.into(),
                reason: reason.into(),
            })
        };
        if self.steps == 0 {
            return bad("steps", "must be at least 1");
        }
        if self.batch_size == 0 || self.grad_accumulation == 0 {
            return bad("batch_size/grad_accumulation", "must be at least 1");
        }
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return bad("validation_fraction", "must lie in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad("ema_decay", "must lie in [0, 1)");
        }
        if self.keep_checkpoints == 0 {
            return bad("keep_checkpoints", "must be at least 1");
        }
        Ok(())
    }
}

impl AutoencoderTrainConfig {
    /// Reads and validates a TOML file.
    ///
    /// # Errors
    /// [`TrainError::Io`], [`TrainError::Config`] (syntax, unknown key),
    /// [`TrainError::InvalidConfig`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_toml(&read(path)?, path)
    }

    /// Parses and validates TOML text (`path` names it in errors).
    ///
    /// # Errors
    /// As [`from_file`](Self::from_file).
    ///
    /// ```
    /// use brain_ldm_train::AutoencoderTrainConfig;
    /// let cfg = AutoencoderTrainConfig::from_toml("steps = 10\n[optimizer]\nlr = 1e-3\n", "ae.toml".as_ref())?;
    /// assert_eq!((cfg.common.steps, cfg.optimizer.lr), (10, 1e-3));
    /// assert!(AutoencoderTrainConfig::from_toml("stepz = 10\n", "ae.toml".as_ref()).is_err());
    /// # Ok::<(), brain_ldm_train::TrainError>(())
    /// ```
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        let cfg: Self = parse(text, path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] naming the key.
    pub fn validate(&self) -> Result<()> {
        self.common.validate()?;
        self.data.preprocess_options()?;
        self.optimizer.validate("optimizer")?;
        self.discriminator
            .optimizer
            .validate("discriminator.optimizer")?;
        self.model
            .validate()
            .map_err(|e| TrainError::InvalidConfig {
                key: "model".into(),
                reason: e.to_string(),
            })?;
        for (key, v) in [
            ("kl_weight", self.kl_weight),
            ("adversarial_weight", self.adversarial_weight),
            ("perceptual_weight", self.perceptual_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(TrainError::InvalidConfig {
                    key: key.into(),
                    reason: "must be a non-negative number".into(),
                });
            }
        }
        Ok(())
    }
}

impl DiffusionTrainConfig {
    /// Reads and validates a TOML file.
    ///
    /// # Errors
    /// As [`AutoencoderTrainConfig::from_file`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_toml(&read(path)?, path)
    }

    /// Parses and validates TOML text.
    ///
    /// # Errors
    /// As [`AutoencoderTrainConfig::from_file`].
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        let cfg: Self = parse(text, path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The sampler configuration implied by `scheduler` (noise schedule, prediction type).
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] for scheduler arguments MONAI would reject.
    pub fn ddim(&self) -> Result<brain_ldm_schedulers::DDIMConfig> {
        serde_json::from_value(self.scheduler.clone()).map_err(|e| TrainError::InvalidConfig {
            key: "scheduler".into(),
            reason: e.to_string(),
        })
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] naming the key.
    pub fn validate(&self) -> Result<()> {
        self.common.validate()?;
        self.data.preprocess_options()?;
        self.optimizer.validate("optimizer")?;
        self.model
            .validate()
            .map_err(|e| TrainError::InvalidConfig {
                key: "model".into(),
                reason: e.to_string(),
            })?;
        self.ddim()?;
        if !(0.0..=1.0).contains(&self.condition_dropout) {
            return Err(TrainError::InvalidConfig {
                key: "condition_dropout".into(),
                reason: "must lie in [0, 1]".into(),
            });
        }
        if !(self.scale_factor >= 0.0 && self.scale_factor.is_finite()) {
            return Err(TrainError::InvalidConfig {
                key: "scale_factor".into(),
                reason: "must be positive (or 0: computed from the data)".into(),
            });
        }
        Ok(())
    }
}
