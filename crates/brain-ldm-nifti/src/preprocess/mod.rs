//! Preprocessing: reorientation, resampling, intensity scaling, crop/pad, and the chain to the
//! model's input ([`PreprocessOptions`]).
//!
//! Every function takes a [`Volume`](crate::Volume) and returns a new one whose affine keeps
//! each voxel's world position (resampling: each sample's).

mod crop;
mod intensity;
mod pipeline;
mod reorient;
mod resample;

pub use crop::{crop_foreground, crop_or_pad, crop_or_pad_roi};
pub use intensity::{percentile, scale_min_max, scale_percentiles};
pub use pipeline::{IntensityScaling, PreprocessOptions};
pub use reorient::{reorient, reorient_to_ras};
pub use resample::{resample, Interpolation};
