//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while preparing or running training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A TOML configuration is malformed or names a key that does not exist.
    #[error("{path}: {reason}")]
    Config {
        /// The configuration file (or `<config>` for one given as text).
        path: PathBuf,
        /// What is wrong, naming the key.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: `{key}` {reason}")]
    InvalidConfig {
        /// The key, as written in the TOML file (`optimizer.lr`).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The dataset is unusable: a missing column, a non-numeric or non-finite covariate, a
    /// missing image, no subject at all.
    #[error("dataset {path}: {reason}")]
    Dataset {
        /// The participants table, manifest or dataset folder.
        path: PathBuf,
        /// What is wrong, naming the row and column.
        reason: String,
    },
    /// An image has another shape than the first one of the dataset, or one the model cannot
    /// take.
    #[error("{path}: image shape {got:?}, expected {expected}")]
    ImageShape {
        /// The image.
        path: PathBuf,
        /// The shape that was expected.
        expected: String,
        /// The image's shape.
        got: Vec<usize>,
    },
    /// A NIfTI file could not be read.
    #[error("{path}: {source}")]
    Nifti {
        /// The image.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<brain_ldm_nifti::Error>,
    },
    /// A run folder to resume is missing, incomplete or was made with another configuration.
    #[error("cannot resume from {path}: {reason}")]
    Resume {
        /// The run folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The output folder already holds a run and `--resume` was not given.
    #[error("{path} already holds a training run: pass --resume to continue it or choose another folder")]
    OutputExists {
        /// The output folder.
        path: PathBuf,
    },
    /// A line of a run's `log.jsonl` is not a JSON object with a numeric `step`.
    #[error("{path}, line {line}: {reason}")]
    LossLog {
        /// The log.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A run's `log.jsonl` holds no loss to plot (no line, or no numeric loss on any line).
    #[error("{path}: no loss to plot")]
    EmptyLossLog {
        /// The log.
        path: PathBuf,
    },
    /// A PNG could not be encoded.
    #[error("{path}: cannot encode the PNG: {reason}")]
    Png {
        /// The PNG to write.
        path: PathBuf,
        /// The encoder's message.
        reason: String,
    },
    /// A tensor shape does not fit.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// The tensor.
        what: &'static str,
        /// The expected shape.
        expected: String,
        /// The actual shape.
        got: Vec<usize>,
    },
    /// The loss became NaN or infinite.
    #[error("step {step}: the loss is {value} (diverged); lower the learning rate or enable gradient clipping")]
    NonFiniteLoss {
        /// The optimiser step.
        step: u64,
        /// The loss.
        value: f64,
    },
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(Box<brain_ldm_nn::checkpoint::CheckpointError>),
    /// The autoencoder failed.
    #[error(transparent)]
    Autoencoder(Box<brain_ldm_autoencoder::AutoencoderError>),
    /// The UNet failed.
    #[error(transparent)]
    Unet(Box<brain_ldm_unet::UnetError>),
    /// The noise schedule failed.
    #[error(transparent)]
    Scheduler(Box<brain_ldm_schedulers::Error>),
    /// The facade (model folder, covariates) failed.
    #[error(transparent)]
    Model(Box<brain_ldm::Error>),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(Box<candle_core::Error>),
}

macro_rules! boxed_from {
    ($($variant:ident($ty:ty)),*) => {
        $(impl From<$ty> for TrainError {
            fn from(e: $ty) -> Self {
                TrainError::$variant(Box::new(e))
            }
        })*
    };
}

boxed_from!(
    Checkpoint(brain_ldm_nn::checkpoint::CheckpointError),
    Autoencoder(brain_ldm_autoencoder::AutoencoderError),
    Unet(brain_ldm_unet::UnetError),
    Scheduler(brain_ldm_schedulers::Error),
    Model(brain_ldm::Error),
    Candle(candle_core::Error)
);

/// This crate's result type.
pub type Result<T> = std::result::Result<T, TrainError>;

/// Wraps an I/O error with its path.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}
