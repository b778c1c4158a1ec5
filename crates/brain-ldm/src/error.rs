//! The facade's error type.

use std::path::PathBuf;

/// Errors of the pipeline, model loading and sample output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A model folder or bundle is incomplete or inconsistent.
    #[error("model folder {path}: {reason}")]
    Bundle {
        /// The folder or file at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A covariate or conditioning value is unusable.
    #[error("invalid covariates: {0}")]
    InvalidCovariate(String),
    /// The request does not fit the model (shapes, counts, settings).
    #[error("{0}")]
    InvalidRequest(String),
    /// Writing a PNG preview failed.
    #[error("cannot write PNG {path}: {reason}")]
    Png {
        /// The destination file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// From the autoencoder.
    #[error(transparent)]
    Autoencoder(Box<brain_ldm_autoencoder::AutoencoderError>),
    /// From the diffusion UNet.
    #[error(transparent)]
    Unet(Box<brain_ldm_unet::UnetError>),
    /// From a scheduler.
    #[error(transparent)]
    Scheduler(Box<brain_ldm_schedulers::Error>),
    /// From NIfTI reading or writing.
    #[error(transparent)]
    Nifti(Box<brain_ldm_nifti::Error>),
    /// From checkpoint loading or saving.
    #[error(transparent)]
    Checkpoint(Box<brain_ldm_nn::checkpoint::CheckpointError>),
    /// From a tensor operation.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A setting of the fidelity experiment is out of range.
    #[error("fidelity setting {name} = {value}: {reason}")]
    InvalidSetting {
        /// The setting (as named in `FidelityConfig` and on the command line).
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A folder of real images (a cohort) is unusable.
    #[error("cohort {path}: {reason}")]
    Cohort {
        /// The folder or file at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// From an image metric (MS-SSIM).
    #[error(transparent)]
    Metrics(Box<brain_ldm_metrics::Error>),
    /// From the volumetry of a generated brain.
    #[error(transparent)]
    Volumetry(Box<brain_ldm_synth::SynthError>),
}

/// Boxes the errors of the other crates (they are large; boxing keeps `Result`s small).
macro_rules! from_boxed {
    ($($variant:ident: $source:ty),* $(,)?) => {
        $(impl From<$source> for Error {
            fn from(e: $source) -> Self {
                Error::$variant(Box::new(e))
            }
        })*
    };
}

from_boxed!(
    Autoencoder: brain_ldm_autoencoder::AutoencoderError,
    Unet: brain_ldm_unet::UnetError,
    Scheduler: brain_ldm_schedulers::Error,
    Nifti: brain_ldm_nifti::Error,
    Checkpoint: brain_ldm_nn::checkpoint::CheckpointError,
    Metrics: brain_ldm_metrics::Error,
    Volumetry: brain_ldm_synth::SynthError,
);

/// The facade's result type.
pub type Result<T> = std::result::Result<T, Error>;
