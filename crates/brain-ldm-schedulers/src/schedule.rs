//! Noise schedules (betas, alphas, cumulative products) as MONAI defines them, and the
//! helpers every scheduler shares: [`NoiseSchedule::add_noise`],
//! [`NoiseSchedule::get_velocity`], [`NoiseSchedule::training_target`] and the SNR.
//!
//! All host maths is f64 on `Vec<f64>`. MONAI computes the same schedules in f32; the two
//! agree to a relative 1e-6 (see the parity tests).

use std::str::FromStr;

use candle_core::Tensor;

use crate::tensor_ops::{check_shape, compute_dtype, per_sample, timesteps_vec};
use crate::{Error, PredictionType, Result};

/// `n` evenly spaced values from `start` to `end`, both included (`numpy.linspace`); one
/// value (`start`) when `n == 1`, none when `n == 0`.
///
/// ```
/// use brain_ldm_schedulers::linspace;
/// assert_eq!(linspace(0.0, 1.0, 5), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
/// ```
pub fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let last = (n - 1) as f64;
            (0..n)
                .map(|i| {
                    if i == n - 1 {
                        end
                    } else {
                        start + (end - start) * (i as f64 / last)
                    }
                })
                .collect()
        }
    }
}

/// A beta schedule with its parameters; the names and defaults are MONAI's `NoiseSchedules`.
///
/// Parsing ([`FromStr`]) takes a name and gives MONAI's default parameters: `linear_beta`,
/// `scaled_linear_beta`, `sigmoid_beta`, `cosine`, and the older GenerativeModels/diffusers
/// names `linear`, `scaled_linear`, `sigmoid`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BetaSchedule {
    /// `betas = linspace(beta_start, beta_end, T)`.
    LinearBeta {
        /// First beta (MONAI default 1e-4).
        beta_start: f64,
        /// Last beta (MONAI default 2e-2).
        beta_end: f64,
    },
    /// `betas = linspace(sqrt(beta_start), sqrt(beta_end), T)²` (Stable Diffusion's, and the
    /// brain-LDM bundle's with 0.0015..0.0205).
    ScaledLinearBeta {
        /// First beta (MONAI default 1e-4).
        beta_start: f64,
        /// Last beta (MONAI default 2e-2).
        beta_end: f64,
    },
    /// `betas = sigmoid(linspace(-sig_range, sig_range, T))·(beta_end − beta_start) + beta_start`.
    SigmoidBeta {
        /// Lower asymptote (MONAI default 1e-4).
        beta_start: f64,
        /// Upper asymptote (MONAI default 2e-2).
        beta_end: f64,
        /// Half-width of the sigmoid's input range (MONAI default 6).
        sig_range: f64,
    },
    /// The cosine schedule of Nichol & Dhariwal (arXiv 2102.09672), as MONAI computes it:
    /// `ᾱ(x) = cos(((x/T) + s)/(1 + s)·π/2)²` normalised to `ᾱ(0) = 1` on `x = 0..=T`,
    /// `betas = clip(1 − ᾱ(x+1)/ᾱ(x), 0, 0.999)`, and `alphas_cumprod` re-accumulated from
    /// the clipped betas.
    Cosine {
        /// Offset that keeps the first betas away from 0 (MONAI default 8e-3).
        s: f64,
    },
}

impl BetaSchedule {
    /// MONAI's default `beta_start`.
    pub const DEFAULT_BETA_START: f64 = 1e-4;
    /// MONAI's default `beta_end`.
    pub const DEFAULT_BETA_END: f64 = 2e-2;
    /// MONAI's default `sig_range` of `sigmoid_beta`.
    pub const DEFAULT_SIG_RANGE: f64 = 6.0;
    /// MONAI's default `s` of `cosine`.
    pub const DEFAULT_COSINE_S: f64 = 8e-3;

    /// MONAI's name of this schedule (`linear_beta`, `scaled_linear_beta`, `sigmoid_beta`,
    /// `cosine`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::LinearBeta { .. } => "linear_beta",
            Self::ScaledLinearBeta { .. } => "scaled_linear_beta",
            Self::SigmoidBeta { .. } => "sigmoid_beta",
            Self::Cosine { .. } => "cosine",
        }
    }

    /// The `num_train_timesteps` betas of this schedule.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `num_train_timesteps` is 0 or a parameter gives betas
    /// outside `[0, 1)`.
    pub fn betas(&self, num_train_timesteps: usize) -> Result<Vec<f64>> {
        let t = num_train_timesteps;
        if t == 0 {
            return Err(Error::InvalidConfig {
                field: "num_train_timesteps",
                reason: "must be at least 1".into(),
            });
        }
        let betas = match *self {
            Self::LinearBeta {
                beta_start,
                beta_end,
            } => linspace(beta_start, beta_end, t),
            Self::ScaledLinearBeta {
                beta_start,
                beta_end,
            } => {
                if beta_start < 0.0 || beta_end < 0.0 {
                    return Err(Error::InvalidConfig {
                        field: "beta_start",
                        reason: format!(
                            "scaled_linear_beta needs beta_start, beta_end ≥ 0, got {beta_start}, {beta_end}"
                        ),
                    });
                }
                linspace(beta_start.sqrt(), beta_end.sqrt(), t)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            Self::SigmoidBeta {
                beta_start,
                beta_end,
                sig_range,
            } => linspace(-sig_range, sig_range, t)
                .into_iter()
                .map(|x| 1.0 / (1.0 + (-x).exp()) * (beta_end - beta_start) + beta_start)
                .collect(),
            Self::Cosine { s } => {
                let x = linspace(0.0, t as f64, t + 1);
                let f = |x: f64| {
                    let c = ((x / t as f64 + s) / (1.0 + s) * std::f64::consts::PI * 0.5).cos();
                    c * c
                };
                let a0 = f(x[0]);
                let ac: Vec<f64> = x.iter().map(|&x| f(x) / a0).collect();
                ac.windows(2)
                    .map(|w| (1.0 - w[1] / w[0]).clamp(0.0, 0.999))
                    .collect()
            }
        };
        if let Some((i, b)) = betas
            .iter()
            .enumerate()
            .find(|(_, b)| !(0.0..1.0).contains(*b))
        {
            return Err(Error::InvalidConfig {
                field: "schedule",
                reason: format!("{}: beta[{i}] = {b} is outside [0, 1)", self.name()),
            });
        }
        Ok(betas)
    }
}

impl FromStr for BetaSchedule {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let (beta_start, beta_end) = (Self::DEFAULT_BETA_START, Self::DEFAULT_BETA_END);
        match s {
            "linear_beta" | "linear" => Ok(Self::LinearBeta {
                beta_start,
                beta_end,
            }),
            "scaled_linear_beta" | "scaled_linear" => Ok(Self::ScaledLinearBeta {
                beta_start,
                beta_end,
            }),
            "sigmoid_beta" | "sigmoid" => Ok(Self::SigmoidBeta {
                beta_start,
                beta_end,
                sig_range: Self::DEFAULT_SIG_RANGE,
            }),
            "cosine" => Ok(Self::Cosine {
                s: Self::DEFAULT_COSINE_S,
            }),
            other => Err(Error::UnknownName {
                kind: "noise schedule",
                name: other.to_string(),
                expected: "linear_beta, scaled_linear_beta, sigmoid_beta, cosine (or linear, scaled_linear, sigmoid)",
            }),
        }
    }
}

/// The training noise process: how many timesteps, and which schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseScheduleConfig {
    /// Number of training timesteps `T` (MONAI default 1000).
    pub num_train_timesteps: usize,
    /// The beta schedule (MONAI default `linear_beta` 1e-4..2e-2).
    pub schedule: BetaSchedule,
}

impl Default for NoiseScheduleConfig {
    /// MONAI's defaults: 1000 steps, `linear_beta` from 1e-4 to 2e-2.
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            schedule: BetaSchedule::LinearBeta {
                beta_start: BetaSchedule::DEFAULT_BETA_START,
                beta_end: BetaSchedule::DEFAULT_BETA_END,
            },
        }
    }
}

impl NoiseScheduleConfig {
    /// The brain-LDM bundle's schedule (`configs/inference.json` of MONAI's
    /// `brain_image_synthesis_latent_diffusion_model`): 1000 steps, `scaled_linear_beta`
    /// 0.0015..0.0205.
    pub fn brain_ldm() -> Self {
        Self {
            num_train_timesteps: 1000,
            schedule: BetaSchedule::ScaledLinearBeta {
                beta_start: 0.0015,
                beta_end: 0.0205,
            },
        }
    }

    /// Builds the schedule's tables.
    ///
    /// # Errors
    /// As [`BetaSchedule::betas`].
    pub fn build(&self) -> Result<NoiseSchedule> {
        NoiseSchedule::from_betas(self.schedule.betas(self.num_train_timesteps)?)
    }
}

/// The tables of a noise schedule: `betas`, `alphas = 1 − betas` and
/// `alphas_cumprod = cumprod(alphas)` (written ᾱ), indexed by timestep `0..T`, in f64.
///
/// The forward process is `x_t = sqrt(ᾱ_t)·x_0 + sqrt(1 − ᾱ_t)·ε`.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f64>,
    alphas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    /// The schedule of `config` (same as [`NoiseScheduleConfig::build`]).
    ///
    /// # Errors
    /// As [`BetaSchedule::betas`].
    pub fn new(config: &NoiseScheduleConfig) -> Result<Self> {
        config.build()
    }

    /// A schedule from explicit betas (for schedules this crate does not define).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `betas` is empty or a beta is outside `[0, 1)`.
    pub fn from_betas(betas: Vec<f64>) -> Result<Self> {
        if betas.is_empty() {
            return Err(Error::InvalidConfig {
                field: "betas",
                reason: "empty".into(),
            });
        }
        if let Some((i, b)) = betas
            .iter()
            .enumerate()
            .find(|(_, b)| !(0.0..1.0).contains(*b))
        {
            return Err(Error::InvalidConfig {
                field: "betas",
                reason: format!("beta[{i}] = {b} is outside [0, 1)"),
            });
        }
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let alphas_cumprod = alphas
            .iter()
            .scan(1.0, |acc, a| {
                *acc *= a;
                Some(*acc)
            })
            .collect();
        Ok(Self {
            betas,
            alphas,
            alphas_cumprod,
        })
    }

    /// Number of training timesteps `T`.
    pub fn num_train_timesteps(&self) -> usize {
        self.betas.len()
    }

    /// `β_t` for `t` in `0..T`.
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    /// `α_t = 1 − β_t`.
    pub fn alphas(&self) -> &[f64] {
        &self.alphas
    }

    /// `ᾱ_t = ∏_{s ≤ t} α_s`.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// `ᾱ_t` of one timestep.
    ///
    /// # Errors
    /// [`Error::TimestepOutOfRange`] unless `t < T`.
    pub fn alpha_cumprod(&self, t: usize) -> Result<f64> {
        self.alphas_cumprod
            .get(t)
            .copied()
            .ok_or(Error::TimestepOutOfRange {
                timestep: t as i64,
                num_train_timesteps: self.num_train_timesteps(),
            })
    }

    /// Signal-to-noise ratio `ᾱ_t / (1 − ᾱ_t)` of one timestep (for min-SNR loss weights).
    ///
    /// # Errors
    /// [`Error::TimestepOutOfRange`] unless `t < T`.
    pub fn snr(&self, t: usize) -> Result<f64> {
        let a = self.alpha_cumprod(t)?;
        Ok(a / (1.0 - a))
    }

    /// The SNR of each sample's timestep, as a 1-D f32 tensor on the device of `timesteps`.
    ///
    /// # Shapes
    /// `timesteps`: `[B]` (any integer or float dtype holding whole numbers) → `[B]`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] unless `timesteps` is 1-D, [`Error::NonIntegerTimestep`],
    /// [`Error::TimestepOutOfRange`].
    pub fn snr_per_sample(&self, timesteps: &Tensor) -> Result<Tensor> {
        let batch = timesteps.dims().first().copied().unwrap_or(0);
        let ts = timesteps_vec(timesteps, batch, self.num_train_timesteps())?;
        let snr = ts
            .iter()
            .map(|&t| self.snr(t))
            .collect::<Result<Vec<f64>>>()?;
        per_sample(&snr, 1, candle_core::DType::F32, timesteps.device())
    }

    /// Noises clean samples to per-sample timesteps:
    /// `sqrt(ᾱ_t)·x_0 + sqrt(1 − ᾱ_t)·ε` (MONAI's `Scheduler.add_noise`).
    ///
    /// # Shapes
    /// `original_samples`, `noise`: `[B, …]`; `timesteps`: `[B]`, one timestep per sample
    /// (integer or whole-valued float dtype) → `[B, …]` in the dtype of `original_samples`
    /// (computed in f32 for f16/bf16).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`], [`Error::TimestepOutOfRange`], [`Error::NonIntegerTimestep`],
    /// [`Error::UnsupportedDType`].
    ///
    /// ```
    /// use brain_ldm_schedulers::NoiseScheduleConfig;
    /// use candle_core::{Device, Tensor};
    ///
    /// let schedule = NoiseScheduleConfig::brain_ldm().build()?;
    /// let x0 = Tensor::ones((2, 3, 4, 4, 4), candle_core::DType::F32, &Device::Cpu)?;
    /// let noise = x0.zeros_like()?;
    /// let t = Tensor::new(&[0u32, 999], &Device::Cpu)?; // one timestep per sample
    /// let xt = schedule.add_noise(&x0, &noise, &t)?;
    /// let first = xt.get(1)?.flatten_all()?.to_vec1::<f32>()?[0];
    /// assert!((first as f64 - schedule.alphas_cumprod()[999].sqrt()).abs() < 1e-6);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_noise(
        &self,
        original_samples: &Tensor,
        noise: &Tensor,
        timesteps: &Tensor,
    ) -> Result<Tensor> {
        self.combine(
            original_samples,
            noise,
            timesteps,
            "original_samples",
            |a| (a.sqrt(), (1.0 - a).sqrt()),
        )
    }

    /// The velocity target of v-prediction: `sqrt(ᾱ_t)·ε − sqrt(1 − ᾱ_t)·x_0`
    /// (MONAI's `Scheduler.get_velocity`).
    ///
    /// # Shapes
    /// As [`NoiseSchedule::add_noise`]: `sample` (the clean `x_0`) and `noise` `[B, …]`,
    /// `timesteps` `[B]`.
    ///
    /// # Errors
    /// As [`NoiseSchedule::add_noise`].
    pub fn get_velocity(
        &self,
        sample: &Tensor,
        noise: &Tensor,
        timesteps: &Tensor,
    ) -> Result<Tensor> {
        self.combine(sample, noise, timesteps, "sample", |a| {
            (-(1.0 - a).sqrt(), a.sqrt())
        })
    }

    /// The regression target of a denoiser trained with `prediction_type` on
    /// `x_t = add_noise(x_0, ε, t)`: `ε` (epsilon), `x_0` (sample) or the velocity
    /// (v_prediction).
    ///
    /// # Shapes
    /// As [`NoiseSchedule::add_noise`].
    ///
    /// # Errors
    /// As [`NoiseSchedule::add_noise`] (shapes and timesteps are checked for every type).
    pub fn training_target(
        &self,
        prediction_type: PredictionType,
        original_samples: &Tensor,
        noise: &Tensor,
        timesteps: &Tensor,
    ) -> Result<Tensor> {
        match prediction_type {
            PredictionType::Epsilon => {
                self.check_batch(original_samples, noise, timesteps, "original_samples")?;
                Ok(noise.clone())
            }
            PredictionType::Sample => {
                self.check_batch(original_samples, noise, timesteps, "original_samples")?;
                Ok(original_samples.clone())
            }
            PredictionType::VPrediction => self.get_velocity(original_samples, noise, timesteps),
        }
    }

    fn check_batch(
        &self,
        x: &Tensor,
        noise: &Tensor,
        timesteps: &Tensor,
        what: &'static str,
    ) -> Result<Vec<usize>> {
        compute_dtype(what, x.dtype())?;
        check_shape("noise", x.dims(), noise)?;
        let batch = x.dims().first().copied().ok_or(Error::ShapeMismatch {
            what,
            expected: vec![0, 0],
            got: Vec::new(),
        })?;
        timesteps_vec(timesteps, batch, self.num_train_timesteps())
    }

    /// `c_x(ᾱ_t)·x + c_n(ᾱ_t)·noise` with per-sample coefficients.
    fn combine(
        &self,
        x: &Tensor,
        noise: &Tensor,
        timesteps: &Tensor,
        what: &'static str,
        coeffs: impl Fn(f64) -> (f64, f64),
    ) -> Result<Tensor> {
        let ts = self.check_batch(x, noise, timesteps, what)?;
        let dtype = compute_dtype(what, x.dtype())?;
        let (cx, cn): (Vec<f64>, Vec<f64>) =
            ts.iter().map(|&t| coeffs(self.alphas_cumprod[t])).unzip();
        let rank = x.rank();
        let cx = per_sample(&cx, rank, dtype, x.device())?;
        let cn = per_sample(&cn, rank, dtype, x.device())?;
        let out = (x.to_dtype(dtype)?.broadcast_mul(&cx)?
            + noise.to_dtype(dtype)?.broadcast_mul(&cn)?)?;
        Ok(out.to_dtype(x.dtype())?)
    }
}
