//! Diffusion noise schedules and samplers for brain-ldm, on candle tensors, matching MONAI.
//!
//! - [`NoiseSchedule`]: MONAI's schedules ([`BetaSchedule`]: `linear_beta`,
//!   `scaled_linear_beta`, `sigmoid_beta`, `cosine`) as f64 tables, and the helpers every
//!   scheduler shares: [`NoiseSchedule::add_noise`], [`NoiseSchedule::get_velocity`] and
//!   [`NoiseSchedule::training_target`] with one timestep per sample, and the SNR.
//! - [`Scheduler`]: the public contract of a sampler (`set_timesteps`, `timesteps`, `step`,
//!   `init_noise_sigma`, `scale_model_input`, …), implemented by [`DDPMScheduler`],
//!   [`DDIMScheduler`] (with [`DDIMScheduler::reversed_step`] for inversion),
//!   [`PNDMScheduler`] and [`DPMSolverMultistepScheduler`] (DPM-Solver++ 2M), and open to
//!   implementations in other crates (see `examples/custom_scheduler.rs`).
//! - Options are enums in each config ([`PredictionType`], [`ClipSample`], [`VarianceType`],
//!   [`TimestepSpacing`], …), parsed from MONAI's names ([`std::str::FromStr`]) and
//!   deserialised from MONAI's constructor arguments ([`config`]).
//! - Timestep spacing is explicit ([`TimestepSpacing`]); DDPM and DDIM default to MONAI 1.6's
//!   (`Linspace`), PNDM uses `Leading` as MONAI does, DPM-Solver++ defaults to `Trailing`;
//!   [`DDIMConfig::brain_ldm`] is the public bundle's sampler (GenerativeModels 0.2's
//!   `Leading`: 980, 960, …, 0).
//!
//! Stochastic steps take their noise as an argument, so sampling is reproducible; a
//! [`NoiseGenerator`] owned by the caller draws it (and the initial noise) from a seed. Tensors
//! may be on any device; f16/bf16 are computed in f32 and returned in their own dtype.
//!
//! ```
//! use brain_ldm_schedulers::{DDIMConfig, DDIMScheduler, Scheduler};
//! use candle_core::{Device, Tensor};
//!
//! let mut ddim = DDIMScheduler::new(DDIMConfig::brain_ldm())?;
//! ddim.set_timesteps(50)?;
//! assert_eq!(&ddim.timesteps()[..3], &[980, 960, 940]);
//!
//! // Training: noise a batch to one timestep per sample.
//! let x0 = Tensor::zeros((2, 3, 4, 5, 4), candle_core::DType::F32, &Device::Cpu)?;
//! let eps = x0.ones_like()?;
//! let t = Tensor::new(&[10u32, 900], &Device::Cpu)?;
//! let noisy = ddim.add_noise(&x0, &eps, &t)?;
//! let target = ddim.training_target(&x0, &eps, &t)?; // epsilon
//! assert_eq!(noisy.dims(), target.dims());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod config;
mod ddim;
mod ddpm;
mod dpm_solver;
mod error;
mod noise;
mod pndm;
mod prediction;
mod schedule;
mod scheduler;
mod spacing;
mod tensor_ops;

pub use ddim::{DDIMConfig, DDIMScheduler};
pub use ddpm::{DDPMConfig, DDPMScheduler, VarianceType};
pub use dpm_solver::{DPMSolverConfig, DPMSolverMultistepScheduler, FinalSigma, SolverType};
pub use error::{Error, Result};
pub use noise::NoiseGenerator;
pub use pndm::{PNDMConfig, PNDMScheduler};
pub use prediction::{ClipSample, PredictionType};
pub use schedule::{linspace, BetaSchedule, NoiseSchedule, NoiseScheduleConfig};
pub use scheduler::{Scheduler, SchedulerKind, StepOutput};
pub use spacing::TimestepSpacing;
