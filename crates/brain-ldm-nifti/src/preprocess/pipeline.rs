//! The chain that brings a scan into the model's input space.

use std::borrow::Cow;

use crate::error::Result;
use crate::orientation::AxisCodes;
use crate::preprocess::reorient::reorient_if_needed;
use crate::preprocess::resample::resample_if_needed;
use crate::preprocess::{crop_or_pad, scale_min_max, scale_percentiles, Interpolation};
use crate::volume::Volume;

/// How intensities are brought to [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IntensityScaling {
    /// [`scale_min_max`].
    MinMax,
    /// [`scale_percentiles`] with these percentiles (0–100).
    Percentile {
        /// Lower percentile.
        lower: f64,
        /// Upper percentile.
        upper: f64,
    },
}

/// Steps of [`PreprocessOptions::apply`], each skipped when `None`. They run in this order:
/// reorient, resample, crop/pad (centred, zero fill), scale.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessOptions {
    /// Target orientation.
    pub orientation: Option<AxisCodes>,
    /// Target voxel size (mm) per axis, after reorientation.
    pub spacing: Option<[f64; 3]>,
    /// Interpolation for resampling.
    pub interpolation: Interpolation,
    /// Target shape, after reorientation.
    pub shape: Option<[usize; 3]>,
    /// Intensity scaling, applied last.
    pub scaling: Option<IntensityScaling>,
}

impl PreprocessOptions {
    /// The brain LDM's input space (Pinaya et al. 2022: 1 mm, 160×224×160, intensities in
    /// [0, 1]) in RAS order, min-max scaled, trilinear.
    pub fn brain_ldm() -> PreprocessOptions {
        PreprocessOptions {
            orientation: Some(AxisCodes::RAS),
            spacing: Some([1.0; 3]),
            interpolation: Interpolation::Linear,
            shape: Some([160, 224, 160]),
            scaling: Some(IntensityScaling::MinMax),
        }
    }

    /// Runs the steps on `volume`.
    ///
    /// # Errors
    /// Those of the steps (bad affine, bad spacing, shape or percentiles).
    ///
    /// # Example
    /// ```no_run
    /// use brain_ldm_nifti::preprocess::PreprocessOptions;
    ///
    /// let vol = brain_ldm_nifti::read("T1w.nii.gz")?;
    /// let input = PreprocessOptions::brain_ldm().apply(&vol)?;
    /// let tensor = input.to_tensor(&candle_core::Device::Cpu)?; // (1, 1, 160, 224, 160)
    /// # Ok::<(), brain_ldm_nifti::Error>(())
    /// ```
    pub fn apply(&self, volume: &Volume) -> Result<Volume> {
        // Steps that change nothing are skipped without copying.
        let mut v = Cow::Borrowed(volume);
        if let Some(target) = self.orientation {
            if let Some(out) = reorient_if_needed(&v, target)? {
                v = Cow::Owned(out);
            }
        }
        if let Some(spacing) = self.spacing {
            if let Some(out) = resample_if_needed(&v, spacing, self.interpolation)? {
                v = Cow::Owned(out);
            }
        }
        if let Some(shape) = self.shape {
            if v.shape() != shape {
                v = Cow::Owned(crop_or_pad(&v, shape, 0.0)?);
            }
        }
        Ok(match self.scaling {
            Some(IntensityScaling::MinMax) => scale_min_max(&v),
            Some(IntensityScaling::Percentile { lower, upper }) => {
                scale_percentiles(&v, lower, upper)?
            }
            None => v.into_owned(),
        })
    }
}
