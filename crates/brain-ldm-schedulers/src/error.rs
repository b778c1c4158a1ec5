//! The crate's error type.

use candle_core::DType;

/// Everything that can go wrong configuring a scheduler or taking a step.
///
/// Each variant carries the offending values, so the message alone says what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `set_timesteps(n)` with `n` outside `min..=max` (`max` is the number of training
    /// timesteps: a model trained on `T` steps cannot be sampled with more).
    #[error("invalid number of inference steps {requested}: must be in {min}..={max}")]
    InvalidInferenceSteps {
        /// The number asked for.
        requested: usize,
        /// The smallest number this scheduler accepts.
        min: usize,
        /// The largest number this scheduler accepts (the number of training timesteps).
        max: usize,
    },

    /// A timestep outside `0..num_train_timesteps` (as given, or as a step would reach it).
    #[error("timestep {timestep} out of range 0..{num_train_timesteps}")]
    TimestepOutOfRange {
        /// The timestep.
        timestep: i64,
        /// The number of training timesteps `T`; valid timesteps are `0..T`.
        num_train_timesteps: usize,
    },

    /// A timestep tensor holding a value that is not a whole number.
    #[error("timestep {value} is not an integer")]
    NonIntegerTimestep {
        /// The value found.
        value: f64,
    },

    /// A multistep scheduler was stepped at a timestep other than the next one of its grid
    /// (its history only makes sense in order).
    #[error("step {index}: expected timestep {expected}, got {got}")]
    UnexpectedTimestep {
        /// Position in [`crate::Scheduler::timesteps`] of the step that was due.
        index: usize,
        /// The timestep that was due.
        expected: usize,
        /// The timestep passed.
        got: usize,
    },

    /// `step` was called after the last timestep of the grid; call `set_timesteps` again.
    #[error("all {num_steps} steps already taken; call set_timesteps to start again")]
    ScheduleFinished {
        /// Length of the timestep grid.
        num_steps: usize,
    },

    /// A name that does not parse (scheduler, schedule, prediction type, spacing, ...).
    #[error("unknown {kind} {name:?}; expected one of: {expected}")]
    UnknownName {
        /// What was being parsed, e.g. `"prediction type"`.
        kind: &'static str,
        /// The name given.
        name: String,
        /// The accepted names.
        expected: &'static str,
    },

    /// A tensor whose shape does not fit the others.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// Which tensor, e.g. `"noise"`.
        what: &'static str,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape given.
        got: Vec<usize>,
    },

    /// A tensor of a dtype schedulers do not compute in (integer samples, ...).
    #[error("{what}: unsupported dtype {dtype:?} (expected f16, bf16, f32 or f64)")]
    UnsupportedDType {
        /// Which tensor.
        what: &'static str,
        /// Its dtype.
        dtype: DType,
    },

    /// A stochastic step (DDPM at `t > 0`, DDIM with `eta > 0`) was given no noise.
    #[error("step at timestep {timestep} is stochastic and needs a noise tensor (got None)")]
    NoiseRequired {
        /// The timestep of the step.
        timestep: usize,
    },

    /// A configuration value outside its valid range.
    #[error("invalid configuration: {field}: {reason}")]
    InvalidConfig {
        /// The field (MONAI's argument name).
        field: &'static str,
        /// What is wrong with it, including the value.
        reason: String,
    },

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// An error raised by a scheduler implemented outside this crate (the trait's methods
    /// return this crate's [`Result`], so foreign implementations box their own errors here).
    #[error("custom scheduler: {0}")]
    Custom(Box<dyn std::error::Error + Send + Sync>),
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
