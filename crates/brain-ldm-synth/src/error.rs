//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while generating, writing or measuring brains.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    /// A dataset of zero subjects was asked for.
    #[error("the number of subjects must be at least 1 (got {got})")]
    ZeroSubjects {
        /// The number asked for.
        got: usize,
    },
    /// More subjects than the six-digit BIDS labels `sub-NNNNNN` can name.
    #[error("at most {max} subjects fit the six-digit labels (got {got})")]
    TooManySubjects {
        /// The number asked for.
        got: usize,
        /// The largest number allowed.
        max: usize,
    },
    /// A voxel size other than 1, 2 or 4 mm.
    #[error("unknown voxel size {got} mm (expected 1, 2 or 4)")]
    UnknownVoxelSize {
        /// The voxel size asked for, in mm.
        got: f64,
    },
    /// The output path exists and is not a directory.
    #[error("output path {path} exists and is not a directory")]
    OutputIsFile {
        /// The offending path.
        path: PathBuf,
    },
    /// The output directory cannot be created or written to.
    #[error("output directory {path} is not writable: {source}")]
    NotWritable {
        /// The offending path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The output directory already holds files and resuming was not asked for.
    #[error("output directory {path} is not empty (pass resume to continue a dataset there)")]
    OutputNotEmpty {
        /// The offending path.
        path: PathBuf,
    },
    /// Resuming into a dataset made with other settings.
    #[error("cannot resume {path}: it was made with {key} = {found}, this run uses {expected}")]
    ResumeMismatch {
        /// The dataset_description.json that disagrees.
        path: PathBuf,
        /// The disagreeing key.
        key: String,
        /// The value in the file.
        found: String,
        /// The value of this run.
        expected: String,
    },
    /// An image that is not a 3D volume.
    #[error("{path}: expected a 3D image, got shape {shape:?}")]
    NotThreeD {
        /// The file read.
        path: PathBuf,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// An image with no voxel above zero, or with non-finite values.
    #[error("cannot measure an image {reason}")]
    BadImage {
        /// What is wrong with it.
        reason: String,
    },
    /// An affine whose voxel axes are not 1, 2 or 4 mm and axis-aligned.
    #[error("affine has voxel sizes {got:?} mm; volumetry needs axis-aligned voxels")]
    BadAffine {
        /// The diagonal of the affine.
        got: [f64; 3],
    },
    /// The embedded template did not decode to what it should be.
    #[error("embedded template {file}: {reason}")]
    Template {
        /// The template file.
        file: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A NIfTI file could not be read or written (the message names the file).
    #[error(transparent)]
    Nifti(Box<brain_ldm_nifti::Error>),
    /// An existing file of the dataset could not be parsed.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Any other I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// JSON encoding or decoding failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl From<brain_ldm_nifti::Error> for SynthError {
    fn from(e: brain_ldm_nifti::Error) -> Self {
        SynthError::Nifti(Box::new(e))
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, SynthError>;
