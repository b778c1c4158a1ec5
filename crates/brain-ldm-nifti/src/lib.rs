//! NIfTI-1 / NIfTI-2 reading and writing, and preprocessing into the brain LDM's input space.
//!
//! nibabel is the reference: the voxels are nibabel's `img.get_fdata()` (as f32), the affine
//! is `img.affine`, orientation codes are `aff2axcodes`, and reorientation to RAS is
//! `as_closest_canonical`.
//!
//! - Reading ([`read()`], [`ReadOptions`]): `.nii`, `.nii.gz`, `.hdr`/`.img` pairs (gzipped or
//!   not); NIfTI-1 and NIfTI-2; little- and big-endian; uint8, int8, int16, uint16, int32,
//!   uint32, int64, uint64, float32, float64; 3D, or one volume of a 4D file. Values become
//!   `raw · scl_slope + scl_inter` (in f64, stored f32) unless `scl_slope` is 0 or not finite.
//!   The header is checked before any allocation sized from it.
//! - Writing ([`write()`], [`WriteOptions`]): `.nii` / `.nii.gz`, any of those datatypes
//!   (integer types with automatic `scl_slope`/`scl_inter` when needed), sform and qform both
//!   set from the affine, through a temporary file renamed into place.
//! - [`Volume`]: the voxels as an `ndarray` indexed `[i, j, k]` in the file's voxel order (the
//!   file stores `i` fastest; in memory `k` is contiguous), the affine, the source header.
//!   [`Volume::to_tensor`] gives a candle tensor (1, 1, D, H, W) with D = i, H = j, W = k.
//! - [`preprocess`]: reorient, resample, scale intensities, crop/pad, crop to foreground, and
//!   [`preprocess::PreprocessOptions::brain_ldm`], the model's input space (RAS, 1 mm,
//!   160×224×160, [0, 1]).
//!
//! ```no_run
//! use brain_ldm_nifti::{preprocess::PreprocessOptions, read, write};
//!
//! let vol = read("sub-01_T1w.nii.gz")?;
//! let input = PreprocessOptions::brain_ldm().apply(&vol)?;
//! write(&input, "sub-01_model-input.nii.gz")?;
//! # Ok::<(), brain_ldm_nifti::Error>(())
//! ```
#![warn(missing_docs)]

pub mod affine;
mod datatype;
mod error;
mod header;
mod layout;
mod orientation;
pub mod preprocess;
mod read;
mod volume;
mod write;

pub use affine::{header_affine, Affine, AffineSource};
pub use datatype::{ByteOrder, DataType};
pub use error::{Error, Result};
pub use header::{NiftiHeader, NiftiVersion, NIFTI1_HEADER_SIZE, NIFTI2_HEADER_SIZE};
pub use orientation::{io_orientation, AxisCode, AxisCodes};
pub use read::{read, read_header, ReadOptions, DEFAULT_MAX_VOXELS};
pub use volume::{Stats, Volume};
pub use write::{write, WriteOptions, XFORM_ALIGNED_ANAT};
