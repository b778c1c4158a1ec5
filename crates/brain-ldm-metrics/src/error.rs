//! The crate's error type.

/// Everything that can go wrong when computing a metric.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two inputs that must have the same shape do not.
    #[error("shape mismatch: {what}: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// Which inputs were compared (e.g. `"y_pred vs y"`).
        what: String,
        /// The shape of the first input (the reference).
        expected: Vec<usize>,
        /// The shape of the second input.
        got: Vec<usize>,
    },
    /// An input has a number of dimensions the metric does not support.
    #[error("{what}: expected a {expected} array, got shape {got:?}")]
    BadRank {
        /// Which input.
        what: String,
        /// What was expected, in words (e.g. `"2D or 3D"`).
        expected: &'static str,
        /// The shape received.
        got: Vec<usize>,
    },
    /// A volume is too small along one axis for the window (at the coarsest scale for
    /// MS-SSIM).
    #[error(
        "volume too small: axis {axis} has {size} voxels, but a window of {kernel_size} \
         over {scales} scale(s) needs at least {needed}"
    )]
    TooSmall {
        /// The spatial axis (0-based, first spatial axis = 0).
        axis: usize,
        /// Its size in voxels.
        size: usize,
        /// The window size along that axis.
        kernel_size: usize,
        /// The number of scales (1 for SSIM).
        scales: usize,
        /// The smallest size that works.
        needed: usize,
    },
    /// An input holds NaN or an infinity.
    #[error("{what} holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// Which input (e.g. `"y_pred"`, `"features of set a"`).
        what: String,
        /// Row-major flat index of the first non-finite value.
        index: usize,
        /// The value found.
        value: f32,
    },
    /// A set has fewer samples than the metric needs.
    #[error("{what}: needs at least {needed} samples, got {got}")]
    TooFewSamples {
        /// Which set.
        what: String,
        /// The minimum.
        needed: usize,
        /// The number given.
        got: usize,
    },
    /// More distinct pairs were requested than the set has.
    #[error("{requested} distinct pairs requested, but a set of {samples} has only {available}")]
    TooManyPairs {
        /// Pairs requested.
        requested: usize,
        /// Samples in the set.
        samples: usize,
        /// Distinct unordered pairs available, `samples·(samples−1)/2`.
        available: usize,
    },
    /// A configuration value is out of its valid range.
    #[error("invalid setting {name} = {value}: {reason}")]
    InvalidConfig {
        /// The setting (MONAI's argument name).
        name: &'static str,
        /// Its value, printed.
        value: String,
        /// What is required.
        reason: &'static str,
    },
    /// A numerical routine failed (e.g. an eigensolver did not converge).
    #[error("numerical failure in {what}: {detail}")]
    Numerical {
        /// The routine.
        what: &'static str,
        /// What happened.
        detail: String,
    },
    /// Loading a volume from a [`crate::VolumeSource`] failed.
    #[error("loading volume {index} ({name}): {source}")]
    Load {
        /// Index in the source.
        index: usize,
        /// The source's name for it (e.g. the file path).
        name: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A [`crate::FeatureExtractor`] failed.
    #[error("feature extraction of volume {index}: {source}")]
    Extractor {
        /// Index of the volume in its set.
        index: usize,
        /// The extractor's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
