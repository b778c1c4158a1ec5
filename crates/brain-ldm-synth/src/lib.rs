//! Synthetic brain subjects with known covariates and ground-truth labels, made from the
//! real MNI152 template, and label-free volumetry of any T1 in MNI space.
//!
//! - [`generate_subject`]: one subject in memory (T1 in [0, 1], labels, affine, the drawn
//!   [`Covariates`] and the counted [`labels::Volumes`]); a pure function of
//!   `(seed, index)` and the [`VoxelSize`] (1, 2 or 4 mm over the paper's 160 × 224 × 160 mm
//!   field of view).
//! - [`bids::write_dataset`]: a resumable BIDS-style dataset with progress reporting.
//! - [`volumetry::measure_volumes`]: ventricular, brain and intracranial volume of a T1.
//!
//! Arrays are `ndarray` arrays indexed `[i, j, k]` along the NIfTI voxel axes (RAS), in
//! Fortran order (x fastest, as NIfTI stores them). The template (ICBM 2009a symmetric,
//! © McConnell Brain Imaging Centre, see `data/mni152/LICENSE`) is compiled into the
//! library and decoded on first use. The models are described in `docs/synth.md`.
//!
//! ```
//! use brain_ldm_synth::{generate_subject, volumetry::measure_volumes, SynthConfig, VoxelSize};
//! let cfg = SynthConfig { seed: 7, voxel_size: VoxelSize::Mm4 };
//! let s = generate_subject(&cfg, 3)?;
//! let measured = measure_volumes(s.t1.view(), &s.affine)?;
//! assert!(measured.icv > 0.0 && s.volumes.icv > 0.0);
//! # Ok::<(), brain_ldm_synth::SynthError>(())
//! ```
#![warn(missing_docs)]

pub mod bids;
pub mod covariates;
pub mod error;
mod generate;
pub mod grid;
pub mod labels;
mod ops;
mod rng;
mod spline;
mod template;
pub mod volumetry;

pub use covariates::{draw_covariates, Covariates, Sex};
pub use error::{Result, SynthError};
pub use generate::{generate_subject, Subject, SynthConfig};
pub use grid::VoxelSize;
