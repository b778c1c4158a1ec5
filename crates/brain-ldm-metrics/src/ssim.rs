//! SSIM (Wang et al. 2004) as MONAI's `SSIMMetric` / `compute_ssim_and_cs`.
//!
//! Per voxel of the valid region (no padding: a `k`-wide window fits `n − k + 1` times
//! along an axis of `n` voxels), with local means μ, variances σ² and covariance σxy
//! from the window, `c1 = (k1·L)²`, `c2 = (k2·L)²` and `L` the data range:
//!
//! `cs = (2σxy + c2)/(σx² + σy² + c2)`, `ssim = (2μxμy + c1)/(μx² + μy² + c1) · cs`;
//!
//! the metric is the mean of the `ssim` map. Inputs are f32; the filtering, the maps and
//! their sums are f64 (MONAI: f32 throughout).

use ndarray::{ArrayBase, Data, Dimension};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::filter::{gaussian_1d, ssim_sums, uniform_1d, SsimSums, Window};
use crate::grid::{check_same_shape, Grid};

/// The window's profile (MONAI's `KernelType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelType {
    /// Gaussian of standard deviation `kernel_sigma`, normalised to sum 1 (MONAI's default).
    #[default]
    Gaussian,
    /// Box: every tap `1/size`.
    Uniform,
}

/// SSIM settings, named as MONAI's `SSIMMetric` arguments.
///
/// [`Default`] is MONAI's defaults: data range 1, Gaussian window of 11 with σ = 1.5,
/// k1 = 0.01, k2 = 0.03. The window is isotropic (MONAI also accepts one size per axis).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SsimConfig {
    /// Value range of the images, `L` (1 for images scaled to [0, 1]).
    pub data_range: f64,
    /// Window profile.
    pub kernel_type: KernelType,
    /// Window length along every spatial axis.
    pub win_size: usize,
    /// Standard deviation of the Gaussian window, in voxels (ignored for uniform).
    pub kernel_sigma: f64,
    /// Luminance stability constant.
    pub k1: f64,
    /// Contrast stability constant.
    pub k2: f64,
}

impl Default for SsimConfig {
    fn default() -> SsimConfig {
        SsimConfig {
            data_range: 1.0,
            kernel_type: KernelType::Gaussian,
            win_size: 11,
            kernel_sigma: 1.5,
            k1: 0.01,
            k2: 0.03,
        }
    }
}

impl SsimConfig {
    /// The same settings with another window profile and length.
    pub fn with_kernel(mut self, kernel_type: KernelType, win_size: usize) -> SsimConfig {
        self.kernel_type = kernel_type;
        self.win_size = win_size;
        self
    }

    /// Checks every setting's range.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |name, value: String, reason| {
            Err(Error::InvalidConfig {
                name,
                value,
                reason,
            })
        };
        if !(self.data_range.is_finite() && self.data_range > 0.0) {
            return bad(
                "data_range",
                self.data_range.to_string(),
                "must be finite and > 0",
            );
        }
        if self.win_size == 0 {
            return bad("win_size", "0".into(), "must be ≥ 1");
        }
        if self.kernel_type == KernelType::Gaussian
            && !(self.kernel_sigma.is_finite() && self.kernel_sigma > 0.0)
        {
            return bad(
                "kernel_sigma",
                self.kernel_sigma.to_string(),
                "must be finite and > 0",
            );
        }
        for (name, v) in [("k1", self.k1), ("k2", self.k2)] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(name, v.to_string(), "must be finite and ≥ 0");
            }
        }
        Ok(())
    }

    /// The separable window for images with `rank` (2 or 3) spatial axes.
    pub(crate) fn window(&self, rank: usize) -> Window {
        let one = match self.kernel_type {
            KernelType::Gaussian => gaussian_1d(self.win_size, self.kernel_sigma),
            KernelType::Uniform => uniform_1d(self.win_size),
        };
        let depth = if rank == 3 { one.clone() } else { vec![1.0] };
        Window {
            taps: [depth, one.clone(), one],
        }
    }

    /// `(c1, c2) = ((k1·L)², (k2·L)²)`.
    pub(crate) fn constants(&self) -> (f64, f64) {
        let c1 = (self.k1 * self.data_range).powi(2);
        let c2 = (self.k2 * self.data_range).powi(2);
        (c1, c2)
    }
}

/// Mean SSIM and mean contrast sensitivity of one image pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SsimAndCs {
    /// Mean of the SSIM map.
    pub ssim: f64,
    /// Mean of the contrast-sensitivity map (used by MS-SSIM).
    pub cs: f64,
}

/// SSIM of two 2D (`[H, W]`) or 3D (`[D, H, W]`) images, as MONAI's `SSIMMetric` on one
/// single-channel pair.
///
/// # Errors
/// [`Error::BadRank`], [`Error::ShapeMismatch`], [`Error::TooSmall`] (an axis shorter
/// than the window), [`Error::NonFinite`], [`Error::InvalidConfig`].
///
/// # Example
/// ```
/// use brain_ldm_metrics::{ssim, SsimConfig};
/// use ndarray::Array3;
///
/// let a = Array3::from_shape_fn((12, 12, 12), |(i, j, k)| ((i * j + k) % 7) as f32 / 7.0);
/// let s = ssim(&a, &a, &SsimConfig::default())?;
/// assert!((s - 1.0).abs() < 1e-6);
/// # Ok::<(), brain_ldm_metrics::Error>(())
/// ```
pub fn ssim<S1, S2, D>(
    y_pred: &ArrayBase<S1, D>,
    y: &ArrayBase<S2, D>,
    cfg: &SsimConfig,
) -> Result<f64>
where
    S1: Data<Elem = f32>,
    S2: Data<Elem = f32>,
    D: Dimension,
{
    Ok(ssim_and_cs(y_pred, y, cfg)?.ssim)
}

/// Mean SSIM and mean contrast sensitivity (MONAI's `compute_ssim_and_cs`, averaged).
///
/// # Errors
/// As [`ssim`].
pub fn ssim_and_cs<S1, S2, D>(
    y_pred: &ArrayBase<S1, D>,
    y: &ArrayBase<S2, D>,
    cfg: &SsimConfig,
) -> Result<SsimAndCs>
where
    S1: Data<Elem = f32>,
    S2: Data<Elem = f32>,
    D: Dimension,
{
    cfg.validate()?;
    let a = Grid::new(y_pred, "y_pred")?;
    let b = Grid::new(y, "y")?;
    check_same_shape(&a, &b)?;
    a.check_finite("y_pred")?;
    b.check_finite("y")?;
    check_fits(&a, cfg.win_size, 1, cfg.win_size)?;
    let sums = grid_ssim(&a, &b, &cfg.window(a.rank), cfg);
    Ok(SsimAndCs {
        ssim: sums.ssim_mean(),
        cs: sums.cs_mean(),
    })
}

/// SSIM sums of two checked grids.
pub(crate) fn grid_ssim(a: &Grid<'_>, b: &Grid<'_>, win: &Window, cfg: &SsimConfig) -> SsimSums {
    let (c1, c2) = cfg.constants();
    ssim_sums(a, b, win, c1, c2)
}

/// Fails unless every spatial axis of `g` has at least `needed` voxels.
///
/// # Errors
/// [`Error::TooSmall`] for the first axis that is too short.
pub(crate) fn check_fits(
    g: &Grid<'_>,
    kernel_size: usize,
    scales: usize,
    needed: usize,
) -> Result<()> {
    match g.spatial().iter().position(|&n| n < needed) {
        None => Ok(()),
        Some(axis) => Err(Error::TooSmall {
            axis,
            size: g.spatial()[axis],
            kernel_size,
            scales,
            needed,
        }),
    }
}
