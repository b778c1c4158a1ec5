//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong reading, writing or preprocessing a volume.
///
/// File errors name the file and carry the offending values, so the message alone says
/// what is wrong with which file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error while opening, reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A gzip stream that cannot be decompressed (corrupt or cut short).
    #[error("{path}: corrupt or truncated gzip stream: {source}")]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decompressor's error.
        source: std::io::Error,
    },

    /// The file ends before the header does.
    #[error("{path}: truncated header: need {expected} bytes, the file has {got}")]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
        /// Bytes needed (348 for NIfTI-1, 540 for NIfTI-2, or the data offset).
        expected: u64,
        /// Bytes present.
        got: u64,
    },

    /// The first field (`sizeof_hdr`) is neither 348 (NIfTI-1) nor 540 (NIfTI-2) in either byte order.
    #[error("{path}: not a NIfTI file: sizeof_hdr is {sizeof_hdr} (little-endian reading), expected 348 or 540")]
    NotNifti {
        /// The file.
        path: PathBuf,
        /// The first four bytes read as a little-endian i32.
        sizeof_hdr: i32,
    },

    /// The magic string is not the one this kind of file must have.
    #[error("{path}: wrong magic {got:?}, expected {expected:?}")]
    WrongMagic {
        /// The file.
        path: PathBuf,
        /// The magic expected (e.g. `n+1`, or `ni1` for a `.hdr`/`.img` pair).
        expected: String,
        /// The magic found (lossy text).
        got: String,
    },

    /// The header's `dim` field is not a valid 3D or 4D image shape.
    #[error("{path}: invalid dimensions {dim:?}: {reason}")]
    BadDimensions {
        /// The file.
        path: PathBuf,
        /// The header's `dim` (dim\[0\] = number of dimensions).
        dim: [i64; 8],
        /// What is wrong.
        reason: String,
    },

    /// The header claims more voxels than the reader's limit; nothing was allocated.
    #[error("{path}: header claims {voxels} voxels in one volume, more than the limit {limit}")]
    TooManyVoxels {
        /// The file.
        path: PathBuf,
        /// Voxels claimed by the header for one 3D volume.
        voxels: u128,
        /// The limit ([`ReadOptions::max_voxels`](crate::ReadOptions::max_voxels)).
        limit: u64,
    },

    /// The data holds fewer bytes than the header's dimensions and datatype require.
    #[error("{path}: data too short for the header's dimensions {shape:?} ({datatype}): need {expected} bytes after offset {offset}, got {got}")]
    DataLength {
        /// The file holding the data.
        path: PathBuf,
        /// The shape claimed by the header (i, j, k and volumes).
        shape: Vec<usize>,
        /// The datatype (numpy name).
        datatype: String,
        /// Data offset in bytes.
        offset: u64,
        /// Bytes needed.
        expected: u128,
        /// Bytes present after the offset.
        got: u64,
    },

    /// `vox_offset` is impossible (negative, fractional, or inside the header of a single file).
    #[error("{path}: invalid vox_offset {vox_offset}: {reason}")]
    BadVoxOffset {
        /// The file.
        path: PathBuf,
        /// The header's `vox_offset`.
        vox_offset: f64,
        /// What is wrong.
        reason: String,
    },

    /// The datatype code is not defined by the NIfTI standard.
    #[error("{path}: unknown datatype code {code}")]
    UnknownDatatype {
        /// The file.
        path: PathBuf,
        /// The header's `datatype`.
        code: i32,
    },

    /// The datatype is standard but not a real scalar this crate reads (complex, RGB, float128).
    #[error("{path}: unsupported datatype {name} (code {code}); supported: uint8, int8, int16, uint16, int32, uint32, int64, uint64, float32, float64")]
    UnsupportedDatatype {
        /// The file.
        path: PathBuf,
        /// The header's `datatype`.
        code: i32,
        /// Its NIfTI name.
        name: &'static str,
    },

    /// A valid `scl_slope` with a non-finite `scl_inter` (nibabel raises here too).
    #[error("{path}: valid scl_slope {slope} but non-finite scl_inter {inter}")]
    BadScaling {
        /// The file.
        path: PathBuf,
        /// `scl_slope`.
        slope: f64,
        /// `scl_inter`.
        inter: f64,
    },

    /// The (scaled) data holds NaN or infinity.
    #[error("{path}: non-finite value {value} at voxel {index:?} (i, j, k) of volume {volume}")]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// Voxel index (i, j, k) of the first non-finite value.
        index: [usize; 3],
        /// Volume index (0 for 3D files).
        volume: usize,
        /// The value.
        value: f32,
    },

    /// A 4D file with several volumes was read without choosing one.
    #[error("{path}: 4D file with {volumes} volumes: choose one with ReadOptions::volume (CLI: --volume)")]
    VolumeNotChosen {
        /// The file.
        path: PathBuf,
        /// Number of volumes.
        volumes: usize,
    },

    /// The chosen volume does not exist.
    #[error("{path}: volume {volume} requested but the file has {volumes}")]
    VolumeOutOfRange {
        /// The file.
        path: PathBuf,
        /// The requested volume.
        volume: usize,
        /// Number of volumes.
        volumes: usize,
    },

    /// The output file name does not end in `.nii` or `.nii.gz`.
    #[error("{path}: output must end in .nii or .nii.gz")]
    BadExtension {
        /// The file.
        path: PathBuf,
    },

    /// Data that cannot be stored in the requested integer datatype (NaN or infinity).
    #[error("{path}: cannot store non-finite value {value} as {datatype}")]
    NotRepresentable {
        /// The output file.
        path: PathBuf,
        /// The datatype (numpy name).
        datatype: String,
        /// The offending value.
        value: f32,
    },

    /// An orientation string that is not three distinct axis codes from L/R, P/A, I/S.
    #[error("invalid orientation {codes:?}: expected three letters, one each of L/R, P/A, I/S (e.g. RAS)")]
    BadOrientation {
        /// The string given.
        codes: String,
    },

    /// An affine whose 3×3 part has a zero or non-finite column (no voxel size).
    #[error("affine has invalid voxel sizes {voxel_sizes:?}")]
    BadAffine {
        /// Column norms of the affine's 3×3 part.
        voxel_sizes: [f64; 3],
    },

    /// An invalid argument to a preprocessing function.
    #[error("invalid {name}: {value}")]
    BadArgument {
        /// The argument.
        name: &'static str,
        /// Its value and what is wrong with it.
        value: String,
    },

    /// Crop to foreground found no voxel above the threshold.
    #[error("no voxel above the foreground threshold {threshold}")]
    EmptyForeground {
        /// The threshold.
        threshold: f32,
    },

    /// A tensor whose shape is not (1, 1, D, H, W) or (D, H, W).
    #[error("tensor shape {got:?} is not (1, 1, D, H, W) or (D, H, W)")]
    TensorShape {
        /// The tensor's shape.
        got: Vec<usize>,
    },

    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
