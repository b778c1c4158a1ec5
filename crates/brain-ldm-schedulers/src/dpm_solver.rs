//! DPM-Solver++ multistep (Lu et al., arXiv 2211.01095), order 1 or 2 ("2M"), as diffusers'
//! `DPMSolverMultistepScheduler` with `algorithm_type="dpmsolver++"`.
//!
//! With `σ_t = sqrt((1 − ᾱ_t)/ᾱ_t)`, `α_t = 1/sqrt(1 + σ_t²)`, `s_t = σ_t·α_t` and
//! `λ_t = ln(α_t/s_t)`, the probability-flow ODE in data prediction is integrated exactly
//! for the linear part:
//!
//! - first order (DDIM): `x_t = (s_t/s_s)·x_s − α_t·(e^{−h} − 1)·D_0`, `h = λ_t − λ_s`;
//! - second order, from the last two data predictions `m_0`, `m_1` with `r = h_0/h`,
//!   `D_0 = m_0`, `D_1 = (m_0 − m_1)/r`:
//!   midpoint `… − ½·α_t·(e^{−h} − 1)·D_1`, or heun `… + α_t·((e^{−h} − 1)/h + 1)·D_1`.
//!
//! The first step is first order; so is the last one when the final sigma is 0 (it returns
//! `x̂_0`), or with `lower_order_final` and fewer than 15 steps.

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;

use crate::config::{deserialize_via_monai_args, MonaiArgs};
use crate::tensor_ops::{check_shape, compute_dtype, lin2};
use crate::{
    ClipSample, Error, NoiseSchedule, NoiseScheduleConfig, PredictionType, Result, Scheduler,
    StepOutput, TimestepSpacing,
};

/// The second-order correction of DPM-Solver++ 2M (diffusers' `solver_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SolverType {
    /// diffusers' default: `− ½·α_t·(e^{−h} − 1)·D_1`.
    #[default]
    Midpoint,
    /// `+ α_t·((e^{−h} − 1)/h + 1)·D_1`: the exact integral of the linear-in-λ interpolant
    /// of the data predictions.
    Heun,
}

impl FromStr for SolverType {
    type Err = Error;

    /// Parses `midpoint` or `heun`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "midpoint" => Ok(Self::Midpoint),
            "heun" => Ok(Self::Heun),
            other => Err(Error::UnknownName {
                kind: "solver type",
                name: other.to_string(),
                expected: "midpoint, heun",
            }),
        }
    }
}

impl fmt::Display for SolverType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Midpoint => "midpoint",
            Self::Heun => "heun",
        })
    }
}

/// The noise level after the last step (diffusers' `final_sigmas_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FinalSigma {
    /// σ = 0: the last step returns the clean estimate (diffusers' default).
    #[default]
    Zero,
    /// σ of timestep 0, `sqrt((1 − ᾱ_0)/ᾱ_0)`.
    SigmaMin,
}

impl FromStr for FinalSigma {
    type Err = Error;

    /// Parses `zero` or `sigma_min`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "zero" => Ok(Self::Zero),
            "sigma_min" => Ok(Self::SigmaMin),
            other => Err(Error::UnknownName {
                kind: "final sigma type",
                name: other.to_string(),
                expected: "zero, sigma_min",
            }),
        }
    }
}

/// Configuration of [`DPMSolverMultistepScheduler`]; deserialises from MONAI-style schedule
/// arguments plus diffusers' names (`solver_order`, `solver_type`, `lower_order_final`,
/// `final_sigmas_type`, `timestep_spacing`; see [`crate::config`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DPMSolverConfig {
    /// Training timesteps and beta schedule.
    pub noise_schedule: NoiseScheduleConfig,
    /// What the model predicts.
    pub prediction_type: PredictionType,
    /// 1 (DPM-Solver++ 1 = DDIM) or 2 (2M, the default).
    pub solver_order: usize,
    /// Second-order correction.
    pub solver_type: SolverType,
    /// Take a first-order last step when there are fewer than 15 steps (diffusers' default
    /// true).
    pub lower_order_final: bool,
    /// Noise level after the last step.
    pub final_sigma: FinalSigma,
    /// Clipping of `x̂_0` (default none; diffusers has dynamic thresholding instead).
    pub clip_sample: ClipSample,
    /// Inference grid. Default here: [`TimestepSpacing::Trailing`], because the solver's
    /// last step goes to σ = 0 itself and a grid ending at t = 0 would spend a model
    /// evaluation at ᾱ_0 ≈ 1.
    pub timestep_spacing: TimestepSpacing,
    /// Offset added to the inference grid.
    pub steps_offset: usize,
}

impl Default for DPMSolverConfig {
    /// `linear_beta` 1e-4..2e-2 over 1000 steps (MONAI's default schedule), epsilon, order 2,
    /// midpoint, `lower_order_final`, final σ 0, no clipping, trailing spacing.
    fn default() -> Self {
        Self {
            noise_schedule: NoiseScheduleConfig::default(),
            prediction_type: PredictionType::default(),
            solver_order: 2,
            solver_type: SolverType::default(),
            lower_order_final: true,
            final_sigma: FinalSigma::default(),
            clip_sample: ClipSample::None,
            timestep_spacing: TimestepSpacing::Trailing,
            steps_offset: 0,
        }
    }
}

impl DPMSolverConfig {
    fn from_monai_args(args: MonaiArgs) -> Result<Self> {
        let d = Self::default();
        Ok(Self {
            noise_schedule: args.noise_schedule()?,
            prediction_type: MonaiArgs::parse(&args.prediction_type, d.prediction_type)?,
            solver_order: args.solver_order.unwrap_or(d.solver_order),
            solver_type: MonaiArgs::parse(&args.solver_type, d.solver_type)?,
            lower_order_final: args.lower_order_final.unwrap_or(d.lower_order_final),
            final_sigma: MonaiArgs::parse(&args.final_sigmas_type, d.final_sigma)?,
            clip_sample: args.clip(false),
            timestep_spacing: MonaiArgs::parse(&args.timestep_spacing, d.timestep_spacing)?,
            steps_offset: args.steps_offset.unwrap_or(0),
        })
    }
}

deserialize_via_monai_args!(DPMSolverConfig);

/// DPM-Solver++ multistep sampler (deterministic).
#[derive(Debug, Clone)]
pub struct DPMSolverMultistepScheduler {
    config: DPMSolverConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<usize>,
    /// σ of each grid timestep, then the final σ (`timesteps.len() + 1` values).
    sigmas: Vec<f64>,
    step_index: usize,
    /// The previous step's data prediction.
    last_x0: Option<Tensor>,
    lower_order_nums: usize,
}

/// `(α, s, λ)` of a noise level σ (`λ = +∞` at σ = 0).
fn alpha_sigma_lambda(sigma: f64) -> (f64, f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    let s = sigma * alpha;
    (alpha, s, alpha.ln() - s.ln())
}

impl DPMSolverMultistepScheduler {
    /// A scheduler with `num_train_timesteps` inference steps.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an invalid schedule or clip range, or `solver_order`
    /// other than 1 or 2.
    pub fn new(config: DPMSolverConfig) -> Result<Self> {
        if !(1..=2).contains(&config.solver_order) {
            return Err(Error::InvalidConfig {
                field: "solver_order",
                reason: format!("{} (supported: 1, 2)", config.solver_order),
            });
        }
        config.clip_sample.validate()?;
        let schedule = config.noise_schedule.build()?;
        let mut scheduler = Self {
            config,
            schedule,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            step_index: 0,
            last_x0: None,
            lower_order_nums: 0,
        };
        scheduler.set_timesteps(config.noise_schedule.num_train_timesteps)?;
        Ok(scheduler)
    }

    /// The configuration.
    pub fn config(&self) -> &DPMSolverConfig {
        &self.config
    }

    /// σ of each grid timestep followed by the final σ.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    fn sigma_of(&self, t: usize) -> f64 {
        let a = self.schedule.alphas_cumprod()[t];
        ((1.0 - a) / a).sqrt()
    }
}

impl Scheduler for DPMSolverMultistepScheduler {
    fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let t = self.schedule.num_train_timesteps();
        let timesteps = self.config.timestep_spacing.timesteps(
            t,
            num_inference_steps,
            self.config.steps_offset,
        )?;
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| self.sigma_of(t)).collect();
        sigmas.push(match self.config.final_sigma {
            FinalSigma::Zero => 0.0,
            FinalSigma::SigmaMin => self.sigma_of(0),
        });
        self.timesteps = timesteps;
        self.sigmas = sigmas;
        self.step_index = 0;
        self.last_x0 = None;
        self.lower_order_nums = 0;
        Ok(())
    }

    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
        _noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let i = self.step_index;
        let n = self.timesteps.len();
        let expected = *self
            .timesteps
            .get(i)
            .ok_or(Error::ScheduleFinished { num_steps: n })?;
        if timestep != expected {
            return Err(Error::UnexpectedTimestep {
                index: i,
                expected,
                got: timestep,
            });
        }
        let dtype = compute_dtype("sample", sample.dtype())?;
        check_shape("model_output", sample.dims(), model_output)?;
        let x = sample.to_dtype(dtype)?;
        let out = model_output.to_dtype(dtype)?;
        let x0 = self.config.prediction_type.pred_original_sample(
            &out,
            &x,
            self.schedule.alphas_cumprod()[timestep],
        )?;
        let x0 = self.config.clip_sample.apply(x0)?;

        let (sigma_s, sigma_t) = (self.sigmas[i], self.sigmas[i + 1]);
        let (_, s_s, lambda_s) = alpha_sigma_lambda(sigma_s);
        let (alpha_t, s_t, lambda_t) = alpha_sigma_lambda(sigma_t);
        let lower_order_final = i + 1 == n
            && (self.config.final_sigma == FinalSigma::Zero
                || (self.config.lower_order_final && n < 15));
        let prev = match &self.last_x0 {
            Some(m1)
                if self.config.solver_order == 2
                    && self.lower_order_nums >= 1
                    && !lower_order_final =>
            {
                let h = lambda_t - lambda_s;
                let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[i - 1]);
                let r = (lambda_s - lambda_s1) / h;
                // e^{−h} − 1
                let em1 = (-h).exp_m1();
                let (c_m0, c_m1) = match self.config.solver_type {
                    SolverType::Midpoint => {
                        let c = -0.5 * alpha_t * em1 / r;
                        (-alpha_t * em1 + c, -c)
                    }
                    SolverType::Heun => {
                        let c = alpha_t * (em1 / h + 1.0) / r;
                        (-alpha_t * em1 + c, -c)
                    }
                };
                (lin2(s_t / s_s, &x, c_m0, &x0)? + (m1 * c_m1)?)?
            }
            _ if sigma_t == 0.0 => x0.clone(),
            _ => {
                let em1 = (-(lambda_t - lambda_s)).exp_m1();
                lin2(s_t / s_s, &x, -alpha_t * em1, &x0)?
            }
        };
        self.last_x0 = Some(x0.clone());
        self.lower_order_nums = (self.lower_order_nums + 1).min(self.config.solver_order);
        self.step_index += 1;
        Ok(StepOutput {
            prev_sample: prev.to_dtype(sample.dtype())?,
            pred_original_sample: x0.to_dtype(sample.dtype())?,
        })
    }
}
