//! The crate's error type.

use brain_ldm_nn::checkpoint::CheckpointError;

/// Errors of configuring, loading and running the autoencoder and the discriminator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AutoencoderError {
    /// The configuration is not one MONAI would build (MONAI's message where it has one).
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// The configuration JSON could not be parsed.
    #[error("cannot parse the configuration JSON: {source}")]
    ConfigJson {
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A checkpoint could not be read, does not fit the model, or could not be written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// An input tensor has the wrong shape.
    #[error("{what}: expected {expected}, got shape {got:?}")]
    InputShape {
        /// Which input.
        what: &'static str,
        /// What was expected, in words.
        expected: String,
        /// The shape received.
        got: Vec<usize>,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with [`AutoencoderError`].
pub type Result<T, E = AutoencoderError> = std::result::Result<T, E>;
