//! The public [`Scheduler`] trait: the contract between a sampling loop and a sampler.

use candle_core::Tensor;

use crate::{NoiseSchedule, PredictionType, Result};

/// What one reverse step gives back.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// The sample at the next timestep of the grid (less noisy), in the dtype of the `sample`
    /// passed to [`Scheduler::step`]; for [`crate::DDIMScheduler::reversed_step`] the
    /// noisier sample.
    pub prev_sample: Tensor,
    /// The clean-sample estimate `x̂_0` made from this step's model output (after clipping,
    /// where the scheduler clips), in the same dtype.
    pub pred_original_sample: Tensor,
}

/// A diffusion sampler over a discrete noise schedule.
///
/// # Contract
/// A sampling loop uses a scheduler like this (see `docs/schedulers.md`):
///
/// ```
/// use brain_ldm_schedulers::{DDIMConfig, DDIMScheduler, Scheduler};
/// use candle_core::{DType, Device, Tensor};
///
/// # fn model(x: &Tensor, _t: usize) -> candle_core::Result<Tensor> { x.zeros_like() }
/// let mut scheduler = DDIMScheduler::new(DDIMConfig::brain_ldm())?;
/// scheduler.set_timesteps(50)?;
/// let noise = Tensor::randn(0f32, 1.0, (1, 3, 4, 5, 4), &Device::Cpu)?;
/// let mut x = (noise * scheduler.init_noise_sigma())?;
/// for &t in scheduler.timesteps().to_vec().iter() {
///     let input = scheduler.scale_model_input(&x, t)?;
///     let out = model(&input, t)?; // conditioning, classifier-free guidance: here
///     // Stochastic schedulers need fresh N(0, 1) noise of the sample's shape.
///     let z = if scheduler.is_stochastic() { Some(x.randn_like(0.0, 1.0)?) } else { None };
///     x = scheduler.step(&out, t, &x, z.as_ref())?.prev_sample;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// - [`Scheduler::set_timesteps`] chooses the grid and resets any multistep history; it
///   fails with [`crate::Error::InvalidInferenceSteps`] when `n` exceeds the number of
///   training timesteps.
/// - [`Scheduler::timesteps`] lists the timesteps at which the model is evaluated, in order;
///   a scheduler that evaluates the model more than once per interval (Heun, PNDM's
///   Runge–Kutta warm-up) lists a timestep once per evaluation.
/// - [`Scheduler::step`] is called once per listed timestep, in order. Multistep schedulers
///   check the order ([`crate::Error::UnexpectedTimestep`]); single-step ones (DDPM, DDIM)
///   accept any timestep in range.
/// - Stochastic steps take their noise from the caller (`noise`, standard normal, the
///   sample's shape), so runs are reproducible; a stochastic step without it fails with
///   [`crate::Error::NoiseRequired`]; deterministic steps ignore it.
/// - Tensors may live on any device; f16/bf16 are computed in f32 and returned in the
///   sample's dtype.
///
/// The trait is object safe (`Box<dyn Scheduler>`); the methods with defaults suit schedulers
/// that work on the variance-preserving `x_t` directly.
pub trait Scheduler {
    /// The training noise schedule (for [`Scheduler::add_noise`] and friends).
    fn schedule(&self) -> &NoiseSchedule;

    /// What the model predicts.
    fn prediction_type(&self) -> PredictionType;

    /// Chooses `num_inference_steps` timesteps and resets any multistep state.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInferenceSteps`] when `num_inference_steps` is 0 or more than
    /// [`Scheduler::num_train_timesteps`] (or below the scheduler's minimum).
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()>;

    /// The timesteps at which to evaluate the model, in order.
    fn timesteps(&self) -> &[usize];

    /// One reverse step from `sample` at `timestep`, given the model's output there.
    ///
    /// # Shapes
    /// `model_output`, `sample`, `noise`: `[B, C, …]` (some schedulers accept a
    /// `model_output` with extra channels, e.g. DDPM's learned variance `[B, 2C, …]`).
    ///
    /// # Errors
    /// [`crate::Error::ShapeMismatch`], [`crate::Error::TimestepOutOfRange`],
    /// [`crate::Error::NoiseRequired`], [`crate::Error::UnexpectedTimestep`],
    /// [`crate::Error::ScheduleFinished`], [`crate::Error::UnsupportedDType`].
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput>;

    /// Number of training timesteps `T`.
    fn num_train_timesteps(&self) -> usize {
        self.schedule().num_train_timesteps()
    }

    /// Whether [`Scheduler::step`] needs a `noise` tensor (default: no).
    fn is_stochastic(&self) -> bool {
        false
    }

    /// Standard deviation of the initial noise: the loop starts from `N(0, 1)·init_noise_sigma`
    /// (default 1, the variance-preserving convention).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// The model's input at `timestep` from the loop's sample (default: the sample itself).
    /// Schedulers that keep a rescaled sample (e.g. variance-exploding Euler/Heun) map it
    /// back to `x_t` here.
    ///
    /// # Errors
    /// Implementation-defined; the default never fails.
    fn scale_model_input(&self, sample: &Tensor, timestep: usize) -> Result<Tensor> {
        let _ = timestep;
        Ok(sample.clone())
    }

    /// Noises clean samples to per-sample timesteps (see [`NoiseSchedule::add_noise`]).
    ///
    /// # Errors
    /// As [`NoiseSchedule::add_noise`].
    fn add_noise(
        &self,
        original_samples: &Tensor,
        noise: &Tensor,
        timesteps: &Tensor,
    ) -> Result<Tensor> {
        self.schedule()
            .add_noise(original_samples, noise, timesteps)
    }

    /// The velocity target (see [`NoiseSchedule::get_velocity`]).
    ///
    /// # Errors
    /// As [`NoiseSchedule::get_velocity`].
    fn get_velocity(&self, sample: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        self.schedule().get_velocity(sample, noise, timesteps)
    }

    /// The training target for [`Scheduler::prediction_type`] (see
    /// [`NoiseSchedule::training_target`]).
    ///
    /// # Errors
    /// As [`NoiseSchedule::training_target`].
    fn training_target(
        &self,
        original_samples: &Tensor,
        noise: &Tensor,
        timesteps: &Tensor,
    ) -> Result<Tensor> {
        self.schedule()
            .training_target(self.prediction_type(), original_samples, noise, timesteps)
    }
}

/// The schedulers of this crate, by name (for command lines: `ddpm|ddim|pndm|dpm++`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// [`crate::DDPMScheduler`].
    Ddpm,
    /// [`crate::DDIMScheduler`].
    Ddim,
    /// [`crate::PNDMScheduler`].
    Pndm,
    /// [`crate::DPMSolverMultistepScheduler`] (DPM-Solver++ 2M).
    DpmSolverPlusPlus,
}

impl SchedulerKind {
    /// The canonical name (`ddpm`, `ddim`, `pndm`, `dpm++`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddpm => "ddpm",
            Self::Ddim => "ddim",
            Self::Pndm => "pndm",
            Self::DpmSolverPlusPlus => "dpm++",
        }
    }

    /// A scheduler of this kind over `noise_schedule`, for a model predicting
    /// `prediction_type`, without clipping (latents are unbounded), on the grid `spacing`
    /// (PNDM always uses leading spacing, as MONAI). Every other option is the scheduler's
    /// default: DDPM fixed_small; DDIM eta 0 with `set_alpha_to_one`; PNDM with its
    /// Runge–Kutta warm-up; DPM-Solver++ 2M midpoint.
    ///
    /// ```
    /// use brain_ldm_schedulers::{NoiseScheduleConfig, PredictionType, SchedulerKind, TimestepSpacing};
    ///
    /// let kind: SchedulerKind = "dpm++".parse()?;
    /// let mut scheduler = kind.build(
    ///     NoiseScheduleConfig::brain_ldm(),
    ///     PredictionType::Epsilon,
    ///     TimestepSpacing::Leading,
    /// )?;
    /// scheduler.set_timesteps(20)?;
    /// assert_eq!(scheduler.timesteps()[0], 950);
    /// # Ok::<(), brain_ldm_schedulers::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] for an invalid schedule.
    pub fn build(
        self,
        noise_schedule: crate::NoiseScheduleConfig,
        prediction_type: PredictionType,
        spacing: crate::TimestepSpacing,
    ) -> Result<Box<dyn Scheduler + Send + Sync>> {
        let clip_sample = crate::ClipSample::None;
        Ok(match self {
            Self::Ddpm => Box::new(crate::DDPMScheduler::new(crate::DDPMConfig {
                noise_schedule,
                prediction_type,
                clip_sample,
                timestep_spacing: spacing,
                ..Default::default()
            })?),
            Self::Ddim => Box::new(crate::DDIMScheduler::new(crate::DDIMConfig {
                noise_schedule,
                prediction_type,
                clip_sample,
                timestep_spacing: spacing,
                ..Default::default()
            })?),
            Self::Pndm => Box::new(crate::PNDMScheduler::new(crate::PNDMConfig {
                noise_schedule,
                prediction_type,
                ..Default::default()
            })?),
            Self::DpmSolverPlusPlus => Box::new(crate::DPMSolverMultistepScheduler::new(
                crate::DPMSolverConfig {
                    noise_schedule,
                    prediction_type,
                    clip_sample,
                    timestep_spacing: spacing,
                    ..Default::default()
                },
            )?),
        })
    }
}

impl std::fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SchedulerKind {
    type Err = crate::Error;

    /// Parses `ddpm`, `ddim`, `pndm`, `dpm++` (aliases `dpmsolver++`, `dpm-solver++`),
    /// case-insensitively.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ddpm" => Ok(Self::Ddpm),
            "ddim" => Ok(Self::Ddim),
            "pndm" => Ok(Self::Pndm),
            "dpm++" | "dpmsolver++" | "dpm-solver++" => Ok(Self::DpmSolverPlusPlus),
            _ => Err(crate::Error::UnknownName {
                kind: "scheduler",
                name: s.to_string(),
                expected: "ddpm, ddim, pndm, dpm++",
            }),
        }
    }
}
