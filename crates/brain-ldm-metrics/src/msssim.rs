//! Multi-scale SSIM (Wang, Simoncelli & Bovik 2003) as MONAI's `MultiScaleSSIMMetric`.
//!
//! At each of `S = weights.len()` scales the mean contrast sensitivity `cs_s` is taken,
//! then both images are 2× average-pooled (a trailing odd voxel is dropped); at the last
//! scale the mean SSIM replaces `cs`. The result is `Π_s relu(cs_s)^{w_s}`.

use ndarray::{ArrayBase, Data, Dimension};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::grid::{check_same_shape, Grid};
use crate::ssim::{check_fits, grid_ssim, KernelType, SsimConfig};

/// MONAI's default MS-SSIM scale weights (Wang et al. 2003), finest scale first.
pub const MONAI_MS_SSIM_WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];

/// MS-SSIM settings, named as MONAI's `MultiScaleSSIMMetric` arguments.
///
/// [`Default`] is MONAI's defaults: data range 1, Gaussian window of 11 with σ = 1.5,
/// k1 = 0.01, k2 = 0.03, the five weights [`MONAI_MS_SSIM_WEIGHTS`]. With five scales a
/// window of 11 needs ≥ 176 voxels per axis, more than the 160×224×160 brain volumes have;
/// there every size up to 10 fits (see [`MsSsimConfig::min_size`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MsSsimConfig {
    /// Value range of the images.
    pub data_range: f64,
    /// Window profile.
    pub kernel_type: KernelType,
    /// Window length along every spatial axis (the same at every scale).
    pub kernel_size: usize,
    /// Standard deviation of the Gaussian window, in voxels.
    pub kernel_sigma: f64,
    /// Luminance stability constant.
    pub k1: f64,
    /// Contrast stability constant.
    pub k2: f64,
    /// One exponent per scale, finest first.
    pub weights: Vec<f64>,
}

impl Default for MsSsimConfig {
    fn default() -> MsSsimConfig {
        let s = SsimConfig::default();
        MsSsimConfig {
            data_range: s.data_range,
            kernel_type: s.kernel_type,
            kernel_size: s.win_size,
            kernel_sigma: s.kernel_sigma,
            k1: s.k1,
            k2: s.k2,
            weights: MONAI_MS_SSIM_WEIGHTS.to_vec(),
        }
    }
}

impl MsSsimConfig {
    /// The same settings with another window length.
    pub fn with_kernel_size(mut self, kernel_size: usize) -> MsSsimConfig {
        self.kernel_size = kernel_size;
        self
    }

    /// The single-scale settings used at every scale.
    pub fn ssim_config(&self) -> SsimConfig {
        SsimConfig {
            data_range: self.data_range,
            kernel_type: self.kernel_type,
            win_size: self.kernel_size,
            kernel_sigma: self.kernel_sigma,
            k1: self.k1,
            k2: self.k2,
        }
    }

    /// The smallest axis length these settings accept.
    ///
    /// Two conditions, the larger wins: MONAI's own check, `n // (S−1)² ≥ kernel_size`
    /// with `S` scales (`max(1, S−1)²`), and that the window fits at the coarsest scale,
    /// `n // 2^(S−1) ≥ kernel_size`. For five scales both read `n ≥ 16·kernel_size`.
    pub fn min_size(&self) -> usize {
        let scales = self.weights.len();
        let monai_div = scales.saturating_sub(1).max(1).pow(2);
        let pool_div = 1usize << scales.saturating_sub(1);
        self.kernel_size * monai_div.max(pool_div)
    }

    /// Checks every setting's range.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the setting.
    pub fn validate(&self) -> Result<()> {
        self.ssim_config().validate()?;
        if self.weights.is_empty() || self.weights.len() > 16 {
            return Err(Error::InvalidConfig {
                name: "weights",
                value: format!("{:?}", self.weights),
                reason: "needs 1 to 16 scales",
            });
        }
        if let Some(w) = self.weights.iter().find(|w| !w.is_finite()) {
            return Err(Error::InvalidConfig {
                name: "weights",
                value: w.to_string(),
                reason: "must be finite",
            });
        }
        Ok(())
    }
}

/// MS-SSIM of two 2D (`[H, W]`) or 3D (`[D, H, W]`) images, as MONAI's
/// `MultiScaleSSIMMetric` on one single-channel pair.
///
/// # Errors
/// [`Error::BadRank`], [`Error::ShapeMismatch`], [`Error::NonFinite`],
/// [`Error::InvalidConfig`], and [`Error::TooSmall`] when an axis is shorter than
/// [`MsSsimConfig::min_size`] (the error names the axis and the size needed).
///
/// # Example
/// ```
/// use brain_ldm_metrics::{ms_ssim, MsSsimConfig};
/// use ndarray::Array3;
///
/// let cfg = MsSsimConfig::default().with_kernel_size(2); // needs ≥ 32 voxels per axis
/// let a = Array3::from_shape_fn((32, 32, 32), |(i, j, k)| ((i + 2 * j + 3 * k) % 5) as f32 / 5.0);
/// let b = a.mapv(|v| 0.9 * v);
/// let m = ms_ssim(&a, &b, &cfg)?;
/// assert!(m > 0.9 && m < 1.0);
/// # Ok::<(), brain_ldm_metrics::Error>(())
/// ```
pub fn ms_ssim<S1, S2, D>(
    y_pred: &ArrayBase<S1, D>,
    y: &ArrayBase<S2, D>,
    cfg: &MsSsimConfig,
) -> Result<f64>
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
    check_fits(&a, cfg.kernel_size, cfg.weights.len(), cfg.min_size())?;
    Ok(grid_ms_ssim(a, b, cfg))
}

/// MS-SSIM of two checked grids large enough for `cfg`.
fn grid_ms_ssim(a: Grid<'_>, b: Grid<'_>, cfg: &MsSsimConfig) -> f64 {
    let ssim_cfg = cfg.ssim_config();
    let win = ssim_cfg.window(a.rank);
    let last = cfg.weights.len() - 1;
    let mut product = 1.0f64;
    let (mut a, mut b) = (a, b);
    for (s, &w) in cfg.weights.iter().enumerate() {
        let sums = grid_ssim(&a, &b, &win, &ssim_cfg);
        let value = if s == last {
            sums.ssim_mean()
        } else {
            sums.cs_mean()
        };
        product *= value.max(0.0).powf(w);
        if s < last {
            a = a.avg_pool2();
            b = b.avg_pool2();
        }
    }
    product
}
