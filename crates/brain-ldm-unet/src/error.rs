//! The error type of brain-ldm-unet.

/// Why building, loading or running a [`DiffusionModelUNet`](crate::DiffusionModelUNet) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnetError {
    /// The configuration is inconsistent; the message is MONAI's own where MONAI checks the
    /// same condition.
    #[error("invalid DiffusionModelUNet configuration: {0}")]
    Config(String),
    /// The configuration JSON could not be parsed.
    #[error("cannot parse the DiffusionModelUNet configuration JSON: {0}")]
    ConfigJson(#[from] serde_json::Error),
    /// An input tensor has the wrong shape for this model.
    #[error("DiffusionModelUNet input `{input}`: expected {expected}, got shape {got:?}")]
    InputShape {
        /// Which input (`x`, `timesteps`, `context` or `class_labels`).
        input: &'static str,
        /// What the model needs, in words.
        expected: String,
        /// The shape it was given.
        got: Vec<usize>,
    },
    /// An input was given that the model cannot use, or one it needs is missing.
    #[error("DiffusionModelUNet input `{input}`: {reason}")]
    Input {
        /// Which input.
        input: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A class label is outside `0..num_class_embeds`.
    #[error("class label {label} is out of range: the model has {num_class_embeds} classes")]
    ClassLabel {
        /// The offending label.
        label: i64,
        /// The number of classes the model embeds.
        num_class_embeds: usize,
    },
    /// The checkpoint does not fit the configuration (or cannot be read).
    #[error(transparent)]
    Checkpoint(#[from] brain_ldm_nn::checkpoint::CheckpointError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<UnetError> for candle_core::Error {
    fn from(e: UnetError) -> Self {
        match e {
            UnetError::Candle(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}

/// Results of this crate.
pub type Result<T, E = UnetError> = std::result::Result<T, E>;
