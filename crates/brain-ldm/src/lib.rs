//! brain-ldm: 3D brain MRI latent diffusion in Rust, after Pinaya et al. 2022 ("Brain Imaging
//! Generation with Latent Diffusion Models") and MONAI's implementation.
//!
//! This facade is the crate downstream projects depend on. It re-exports the workspace's
//! crates and adds the conditioned sampling pipeline:
//!
//! * [`LatentDiffusionPipeline`]: autoencoder + UNet + conditioning; [`open`] loads the public
//!   MONAI bundle folder as distributed (old-key `.pt` weights) or brain-ldm's own model
//!   folder, and [`convert_bundle`] turns the former into the latter.
//! * [`Covariates`] → [`Conditioning`] through [`CovariateScaling`] (the paper's ranges).
//! * [`SampleWriter`]: NIfTI + PNG preview + JSON sidecar per sample, resumable.
//! * [`fidelity`]: the paper's conditioning experiment on any model (covariate sweeps
//!   measured by volumetry, extrapolation, diversity), as tables and figure grids.
//! * [`LatentDiffusionPipeline::demo`]: a small model compiled in, to sample without
//!   downloading anything; [`LatentDiffusionPipeline::sample_batch`] samples many at once,
//!   with classifier-free guidance.
//!
//! ```no_run
//! use brain_ldm::{Covariates, LatentDiffusionPipeline, SamplingSettings, Sex};
//! let device = candle_core::Device::Cpu;
//! let pipeline = LatentDiffusionPipeline::open("brain_image_synthesis_latent_diffusion_model", &device)?;
//! let covariates = Covariates { sex: Sex::Female, age_years: 65.0,
//!     ventricular_volume_mm3: 30_000.0, brain_volume_mm3: 1.4e6 };
//! let conditioning = pipeline.covariate_scaling.normalise(&covariates)?;
//! let mut scheduler = pipeline.scheduler(&SamplingSettings::default())?;
//! let image = pipeline.sample(scheduler.as_mut(), &conditioning, 0, 0, &device, &mut |_, _| {})?;
//! assert_eq!(image.dims(), [1, 1, 160, 224, 160]);
//! # Ok::<(), brain_ldm::Error>(())
//! ```
//!
//! [`open`]: LatentDiffusionPipeline::open
#![warn(missing_docs)]

mod bundle;
mod covariates;
mod demo;
mod error;
pub mod fidelity;
mod model;
mod output;
mod pipeline;

pub use brain_ldm_autoencoder as autoencoder;
pub use brain_ldm_metrics as metrics;
pub use brain_ldm_nifti as nifti;
pub use brain_ldm_nn as nn;
pub use brain_ldm_schedulers as schedulers;
pub use brain_ldm_synth as synth;
pub use brain_ldm_unet as unet;

pub use brain_ldm_autoencoder::{AutoencoderKL, AutoencoderKLConfig};
pub use brain_ldm_schedulers::{NoiseGenerator, Scheduler, SchedulerKind, TimestepSpacing};
pub use brain_ldm_unet::{DiffusionModelUNet, DiffusionModelUNetConfig};
pub use bundle::BundleConfig;
pub use covariates::{Conditioning, CovariateScaling, Covariates, PartialCovariates, Sex};
pub use demo::DEMO_MODEL_NAME;
pub use error::{Error, Result};
pub use fidelity::{Fidelity, FidelityConfig, FidelityOutcome, FidelityReport};
pub use model::{convert_bundle, convert_model, ModelFolderConfig, MODEL_FOLDER_FORMAT};
pub use output::{SamplePaths, SampleRecord, SampleWriter, VoxelFormat};
pub use pipeline::{
    ConditioningMode, LatentDiffusionPipeline, SampleRequest, SamplingSettings,
    BUNDLE_IMAGE_AFFINE, NUM_COVARIATES,
};
