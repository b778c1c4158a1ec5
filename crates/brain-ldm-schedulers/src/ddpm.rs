//! DDPM (Ho et al., arXiv 2006.11239): ancestral sampling of the posterior
//! `q(x_{t'} | x_t, x̂_0)`, as MONAI's `DDPMScheduler`.

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;

use crate::config::{deserialize_via_monai_args, MonaiArgs};
use crate::tensor_ops::{check_shape, compute_dtype, lin2};
use crate::{
    ClipSample, Error, NoiseSchedule, NoiseScheduleConfig, PredictionType, Result, Scheduler,
    StepOutput, TimestepSpacing,
};

/// The variance of DDPM's reverse step (MONAI's `DDPMVarianceType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VarianceType {
    /// The posterior variance `β̃_t = (1 − ᾱ_{t'})/(1 − ᾱ_t)·β_t`, clamped to ≥ 1e-20
    /// (MONAI's default).
    #[default]
    FixedSmall,
    /// `β_t`.
    FixedLarge,
    /// The model predicts the variance itself: `model_output` has `2C` channels, the second
    /// half is the variance.
    Learned,
    /// The model predicts `v ∈ [-1, 1]` in its second `C` channels and the variance is
    /// `f·β_t + (1 − f)·β̃_t` with `f = (v + 1)/2`. This is MONAI's definition: it interpolates
    /// the variances, where Improved DDPM and diffusers interpolate their logarithms.
    LearnedRange,
}

impl VarianceType {
    /// MONAI's name (`fixed_small`, `fixed_large`, `learned`, `learned_range`).
    pub fn name(self) -> &'static str {
        match self {
            Self::FixedSmall => "fixed_small",
            Self::FixedLarge => "fixed_large",
            Self::Learned => "learned",
            Self::LearnedRange => "learned_range",
        }
    }
}

impl fmt::Display for VarianceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for VarianceType {
    type Err = Error;

    /// Parses MONAI's names.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fixed_small" => Ok(Self::FixedSmall),
            "fixed_large" => Ok(Self::FixedLarge),
            "learned" => Ok(Self::Learned),
            "learned_range" => Ok(Self::LearnedRange),
            other => Err(Error::UnknownName {
                kind: "variance type",
                name: other.to_string(),
                expected: "fixed_small, fixed_large, learned, learned_range",
            }),
        }
    }
}

/// Configuration of [`DDPMScheduler`]; deserialises from MONAI's `DDPMScheduler` arguments
/// (see [`crate::config`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DDPMConfig {
    /// Training timesteps and beta schedule.
    pub noise_schedule: NoiseScheduleConfig,
    /// The reverse step's variance.
    pub variance_type: VarianceType,
    /// Clipping of `x̂_0` (MONAI default: `[-1, 1]`).
    pub clip_sample: ClipSample,
    /// What the model predicts.
    pub prediction_type: PredictionType,
    /// Inference grid (MONAI 1.6 default: [`TimestepSpacing::Linspace`]).
    pub timestep_spacing: TimestepSpacing,
    /// Offset added to the inference grid (see [`TimestepSpacing::timesteps`]).
    pub steps_offset: usize,
}

impl Default for DDPMConfig {
    /// MONAI's defaults: `linear_beta` 1e-4..2e-2 over 1000 steps, fixed_small, clipping to
    /// `[-1, 1]`, epsilon, MONAI 1.6 spacing.
    fn default() -> Self {
        Self {
            noise_schedule: NoiseScheduleConfig::default(),
            variance_type: VarianceType::default(),
            clip_sample: ClipSample::MONAI_DEFAULT,
            prediction_type: PredictionType::default(),
            timestep_spacing: TimestepSpacing::default(),
            steps_offset: 0,
        }
    }
}

impl DDPMConfig {
    fn from_monai_args(args: MonaiArgs) -> Result<Self> {
        Ok(Self {
            noise_schedule: args.noise_schedule()?,
            variance_type: MonaiArgs::parse(&args.variance_type, VarianceType::default())?,
            clip_sample: args.clip(true),
            prediction_type: MonaiArgs::parse(&args.prediction_type, PredictionType::default())?,
            timestep_spacing: MonaiArgs::parse(&args.timestep_spacing, TimestepSpacing::default())?,
            steps_offset: args.steps_offset.unwrap_or(0),
        })
    }
}

deserialize_via_monai_args!(DDPMConfig);

/// The DDPM sampler.
///
/// With `n` inference steps the step from `t` goes to `t' = t − ⌊T/n⌋` and uses
/// `β'_t = 1 − ᾱ_t/ᾱ_{t'}` in place of `β_t` (as diffusers); with `n = T` (the default after
/// construction, as in MONAI) `t' = t − 1` and this is MONAI's step exactly. Noise is added
/// for `t > 0` only.
#[derive(Debug, Clone)]
pub struct DDPMScheduler {
    config: DDPMConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<usize>,
    step_ratio: usize,
}

impl DDPMScheduler {
    /// A scheduler with `num_train_timesteps` inference steps.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an invalid schedule or clip range.
    pub fn new(config: DDPMConfig) -> Result<Self> {
        config.clip_sample.validate()?;
        let schedule = config.noise_schedule.build()?;
        let mut scheduler = Self {
            config,
            schedule,
            timesteps: Vec::new(),
            step_ratio: 1,
        };
        scheduler.set_timesteps(config.noise_schedule.num_train_timesteps)?;
        Ok(scheduler)
    }

    /// The configuration.
    pub fn config(&self) -> &DDPMConfig {
        &self.config
    }
}

impl Scheduler for DDPMScheduler {
    fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let t = self.schedule.num_train_timesteps();
        self.timesteps = self.config.timestep_spacing.timesteps(
            t,
            num_inference_steps,
            self.config.steps_offset,
        )?;
        self.step_ratio = t / num_inference_steps;
        Ok(())
    }

    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn is_stochastic(&self) -> bool {
        true
    }

    /// # Shapes
    /// `sample`, `noise`: `[B, C, …]`; `model_output`: `[B, C, …]`, or `[B, 2C, …]` (the
    /// variance in the second half) for the learned variance types.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let dtype = compute_dtype("sample", sample.dtype())?;
        let alpha_prod_t = self.schedule.alpha_cumprod(timestep)?;
        let prev_t = timestep as i64 - self.step_ratio as i64;
        let alpha_prod_prev = if prev_t >= 0 {
            self.schedule.alphas_cumprod()[prev_t as usize]
        } else {
            1.0
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_prev = 1.0 - alpha_prod_prev;
        let current_alpha = alpha_prod_t / alpha_prod_prev;
        let current_beta = 1.0 - current_alpha;
        // β̃_t, formula (7) of Ho et al.
        let posterior = beta_prod_prev / beta_prod_t * current_beta;

        // The model output proper, and the step's variance (a tensor when learned).
        let (model_output, variance) = match self.config.variance_type {
            VarianceType::FixedSmall => {
                (model_output.clone(), Variance::Fixed(posterior.max(1e-20)))
            }
            VarianceType::FixedLarge => (model_output.clone(), Variance::Fixed(current_beta)),
            VarianceType::Learned | VarianceType::LearnedRange => {
                let (out, v) = split_learned(model_output, sample)?;
                let v = v.to_dtype(dtype)?;
                let v = if self.config.variance_type == VarianceType::Learned {
                    v
                } else {
                    // f = (v + 1)/2; variance = f·β + (1 − f)·β̃ = β̃ + f·(β − β̃).
                    let half_range = 0.5 * (current_beta - posterior);
                    v.affine(half_range, half_range + posterior)?
                };
                (out, Variance::Learned(v))
            }
        };
        check_shape("model_output", sample.dims(), &model_output)?;
        let model_output = model_output.to_dtype(dtype)?;
        let x = sample.to_dtype(dtype)?;

        let pred_original =
            self.config
                .prediction_type
                .pred_original_sample(&model_output, &x, alpha_prod_t)?;
        let pred_original = self.config.clip_sample.apply(pred_original)?;

        // Posterior mean, formula (7) of Ho et al.
        let c_x0 = alpha_prod_prev.sqrt() * current_beta / beta_prod_t;
        let c_xt = current_alpha.sqrt() * beta_prod_prev / beta_prod_t;
        let mut prev = lin2(c_x0, &pred_original, c_xt, &x)?;

        if timestep > 0 {
            let noise = noise.ok_or(Error::NoiseRequired { timestep })?;
            check_shape("noise", sample.dims(), noise)?;
            let noise = noise.to_dtype(dtype)?;
            let scaled_noise = match variance {
                Variance::Fixed(v) => (noise * v.sqrt())?,
                Variance::Learned(v) => (v.sqrt()? * noise)?,
            };
            prev = (prev + scaled_noise)?;
        }
        Ok(StepOutput {
            prev_sample: prev.to_dtype(sample.dtype())?,
            pred_original_sample: pred_original.to_dtype(sample.dtype())?,
        })
    }
}

/// The variance of one DDPM step.
enum Variance {
    /// A host value.
    Fixed(f64),
    /// Per element, from the model.
    Learned(Tensor),
}

/// Splits a learned-variance model output `[B, 2C, …]` into the prediction and the variance
/// channels, checked against the sample `[B, C, …]`.
fn split_learned(model_output: &Tensor, sample: &Tensor) -> Result<(Tensor, Tensor)> {
    let mut expected = sample.dims().to_vec();
    if expected.len() < 2 {
        return Err(Error::ShapeMismatch {
            what: "sample (needs a channel axis)",
            expected: vec![expected.first().copied().unwrap_or(0), 0],
            got: expected,
        });
    }
    let channels = expected[1];
    expected[1] *= 2;
    check_shape(
        "model_output (learned variance: 2C channels)",
        &expected,
        model_output,
    )?;
    Ok((
        model_output.narrow(1, 0, channels)?,
        model_output.narrow(1, channels, channels)?,
    ))
}
