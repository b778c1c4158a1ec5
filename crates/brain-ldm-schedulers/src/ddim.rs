//! DDIM (Song et al., arXiv 2010.02502), with deterministic inversion, as MONAI's
//! `DDIMScheduler`.

use candle_core::Tensor;

use crate::config::{deserialize_via_monai_args, MonaiArgs};
use crate::tensor_ops::{check_shape, compute_dtype, lin2};
use crate::{
    ClipSample, Error, NoiseSchedule, NoiseScheduleConfig, PredictionType, Result, Scheduler,
    StepOutput, TimestepSpacing,
};

/// Configuration of [`DDIMScheduler`]; deserialises from MONAI's `DDIMScheduler` arguments
/// plus `eta` and `timestep_spacing` (see [`crate::config`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DDIMConfig {
    /// Training timesteps and beta schedule.
    pub noise_schedule: NoiseScheduleConfig,
    /// Clipping of `x̂_0` (MONAI default: `[-1, 1]`).
    pub clip_sample: ClipSample,
    /// Use `ᾱ = 1` after the last step (true, MONAI's default and the bundle's) or `ᾱ_0`
    /// (false, Stable Diffusion's with `steps_offset = 1`).
    pub set_alpha_to_one: bool,
    /// Offset added to the inference grid (see [`TimestepSpacing::timesteps`]).
    pub steps_offset: usize,
    /// What the model predicts.
    pub prediction_type: PredictionType,
    /// Stochasticity in `[0, 1]`: 0 is deterministic DDIM, 1 has DDPM's posterior variance.
    /// (A `step` argument in MONAI; part of the configuration here.)
    pub eta: f64,
    /// Inference grid (default: MONAI 1.6's [`TimestepSpacing::Linspace`]).
    pub timestep_spacing: TimestepSpacing,
}

impl Default for DDIMConfig {
    /// MONAI's defaults: `linear_beta` 1e-4..2e-2 over 1000 steps, clipping to `[-1, 1]`,
    /// `set_alpha_to_one`, offset 0, epsilon, eta 0, MONAI 1.6 spacing.
    fn default() -> Self {
        Self {
            noise_schedule: NoiseScheduleConfig::default(),
            clip_sample: ClipSample::MONAI_DEFAULT,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::default(),
            eta: 0.0,
            timestep_spacing: TimestepSpacing::default(),
        }
    }
}

impl DDIMConfig {
    /// The public brain-LDM bundle's sampler (MONAI model zoo
    /// `brain_image_synthesis_latent_diffusion_model`, `configs/inference.json` and
    /// `scripts/sampler.py`): 1000 steps, `scaled_linear_beta` 0.0015..0.0205, no clipping,
    /// epsilon, eta 0, `set_alpha_to_one`, and GenerativeModels 0.2's leading spacing
    /// (50 steps: 980, 960, …, 0).
    pub fn brain_ldm() -> Self {
        Self {
            noise_schedule: NoiseScheduleConfig::brain_ldm(),
            clip_sample: ClipSample::None,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            eta: 0.0,
            timestep_spacing: TimestepSpacing::Leading,
        }
    }

    fn from_monai_args(args: MonaiArgs) -> Result<Self> {
        Ok(Self {
            noise_schedule: args.noise_schedule()?,
            clip_sample: args.clip(true),
            set_alpha_to_one: args.set_alpha_to_one.unwrap_or(true),
            steps_offset: args.steps_offset.unwrap_or(0),
            prediction_type: MonaiArgs::parse(&args.prediction_type, PredictionType::default())?,
            eta: args.eta.unwrap_or(0.0),
            timestep_spacing: MonaiArgs::parse(&args.timestep_spacing, TimestepSpacing::default())?,
        })
    }
}

deserialize_via_monai_args!(DDIMConfig);

/// The DDIM sampler.
///
/// The step from `t` goes to `t' = t − ⌊T/n⌋` (MONAI's and diffusers' rule, whatever the
/// spacing), with `ᾱ_{t'} = 1` (or `ᾱ_0`) once `t' < 0`:
/// `x_{t'} = sqrt(ᾱ_{t'})·x̂_0 + sqrt(1 − ᾱ_{t'} − σ²)·ε̂ + σ·z`,
/// `σ = eta·sqrt((1 − ᾱ_{t'})/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_{t'}))`.
#[derive(Debug, Clone)]
pub struct DDIMScheduler {
    config: DDIMConfig,
    schedule: NoiseSchedule,
    final_alpha_cumprod: f64,
    timesteps: Vec<usize>,
    step_ratio: usize,
}

impl DDIMScheduler {
    /// A scheduler with `num_train_timesteps` inference steps (MONAI's initial state).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an invalid schedule, clip range, `eta` outside `[0, 1]`
    /// or `steps_offset ≥ T`.
    pub fn new(config: DDIMConfig) -> Result<Self> {
        config.clip_sample.validate()?;
        if !(0.0..=1.0).contains(&config.eta) {
            return Err(Error::InvalidConfig {
                field: "eta",
                reason: format!("{} is outside [0, 1]", config.eta),
            });
        }
        let schedule = config.noise_schedule.build()?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            schedule.alphas_cumprod()[0]
        };
        let mut scheduler = Self {
            config,
            schedule,
            final_alpha_cumprod,
            timesteps: Vec::new(),
            step_ratio: 1,
        };
        scheduler.set_timesteps(config.noise_schedule.num_train_timesteps)?;
        Ok(scheduler)
    }

    /// The configuration.
    pub fn config(&self) -> &DDIMConfig {
        &self.config
    }

    fn alpha_prod_at(&self, t: i64) -> f64 {
        if t >= 0 {
            self.schedule.alphas_cumprod()[t as usize]
        } else {
            self.final_alpha_cumprod
        }
    }

    /// `x̂_0` (clipped) and `ε̂` from a model output, in the compute dtype, after the checks
    /// every step makes.
    fn estimates(
        &self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let dtype = compute_dtype("sample", sample.dtype())?;
        check_shape("model_output", sample.dims(), model_output)?;
        let alpha_prod_t = self.schedule.alpha_cumprod(timestep)?;
        let x = sample.to_dtype(dtype)?;
        let out = model_output.to_dtype(dtype)?;
        let pt = self.config.prediction_type;
        let pred_original = pt.pred_original_sample(&out, &x, alpha_prod_t)?;
        let pred_epsilon = pt.pred_epsilon(&out, &x, alpha_prod_t)?;
        let pred_original = self.config.clip_sample.apply(pred_original)?;
        Ok((pred_original, pred_epsilon))
    }

    /// One deterministic inversion step (MONAI's `reversed_step`; Dhariwal & Nichol
    /// appendix F): from `x_t` to the noisier `x_{t+⌊T/n⌋}`,
    /// `sqrt(ᾱ_{next})·x̂_0 + sqrt(1 − ᾱ_{next})·ε̂`. The result is in
    /// [`StepOutput::prev_sample`].
    ///
    /// To invert a sample, walk the grid backwards: for each `t` of
    /// `timesteps().iter().rev()` with `t + ⌊T/n⌋ < T`, evaluate the model at `(x, t)` and
    /// take this step.
    ///
    /// # Errors
    /// [`Error::TimestepOutOfRange`] when `t` or `t + ⌊T/n⌋` is not below `T`;
    /// [`Error::ShapeMismatch`], [`Error::UnsupportedDType`].
    pub fn reversed_step(
        &self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
    ) -> Result<StepOutput> {
        let next = timestep + self.step_ratio;
        let alpha_prod_next =
            *self
                .schedule
                .alphas_cumprod()
                .get(next)
                .ok_or(Error::TimestepOutOfRange {
                    timestep: next as i64,
                    num_train_timesteps: self.schedule.num_train_timesteps(),
                })?;
        let (pred_original, pred_epsilon) = self.estimates(model_output, timestep, sample)?;
        let next_sample = lin2(
            alpha_prod_next.sqrt(),
            &pred_original,
            (1.0 - alpha_prod_next).sqrt(),
            &pred_epsilon,
        )?;
        Ok(StepOutput {
            prev_sample: next_sample.to_dtype(sample.dtype())?,
            pred_original_sample: pred_original.to_dtype(sample.dtype())?,
        })
    }
}

impl Scheduler for DDIMScheduler {
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
        self.config.eta > 0.0
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let (pred_original, pred_epsilon) = self.estimates(model_output, timestep, sample)?;
        let alpha_prod_t = self.schedule.alphas_cumprod()[timestep];
        let alpha_prod_prev = self.alpha_prod_at(timestep as i64 - self.step_ratio as i64);
        let variance =
            (1.0 - alpha_prod_prev) / (1.0 - alpha_prod_t) * (1.0 - alpha_prod_t / alpha_prod_prev);
        let std_dev = self.config.eta * variance.sqrt();
        let mut prev = lin2(
            alpha_prod_prev.sqrt(),
            &pred_original,
            (1.0 - alpha_prod_prev - std_dev * std_dev).sqrt(),
            &pred_epsilon,
        )?;
        if self.config.eta > 0.0 {
            let noise = noise.ok_or(Error::NoiseRequired { timestep })?;
            check_shape("noise", sample.dims(), noise)?;
            prev = (prev + (noise.to_dtype(pred_original.dtype())? * std_dev)?)?;
        }
        Ok(StepOutput {
            prev_sample: prev.to_dtype(sample.dtype())?,
            pred_original_sample: pred_original.to_dtype(sample.dtype())?,
        })
    }
}
