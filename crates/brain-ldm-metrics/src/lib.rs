//! Evaluation metrics for 3D brain MRI generation, computed as MONAI computes them.
//!
//! - [`ssim`] / [`ssim_and_cs`]: SSIM, Gaussian or uniform window, 2D or 3D
//!   (MONAI's `SSIMMetric`);
//! - [`ms_ssim`]: multi-scale SSIM (MONAI's `MultiScaleSSIMMetric`);
//! - [`psnr`], [`mse`], [`mae`]: voxel-wise errors (MONAI's `PSNRMetric`, `MSEMetric`,
//!   `MAEMetric`);
//! - [`mmd`]: linear-kernel unbiased MMD (MONAI's `MMDMetric`);
//! - [`fid`] / [`frechet_distance`]: Fréchet distance of feature sets (MONAI's
//!   `FIDMetric`), with a [`FeatureExtractor`] trait for the network;
//! - [`diversity`]: the paper's mean MS-SSIM over random distinct pairs of a set;
//! - [`evaluate`]: all of it for a real and a fake set, as one [`EvalReport`].
//!
//! Inputs are plain f32 `ndarray` arrays: a single-channel image is `[H, W]` or
//! `[D, H, W]` (MONAI's `[B, C, ...]` batches are per-image calls here). Filtering is
//! separable, valid-mode (no padding, as MONAI's `F.conv3d`), parallel over output
//! planes with rayon, in f64 from the f32 voxels on. Parity with
//! MONAI 1.6.1 is tested against `tests/fixtures/monai/metrics.safetensors`.
//!
//! # Example
//! ```
//! use brain_ldm_metrics::{ms_ssim, psnr, MsSsimConfig};
//! use ndarray::Array3;
//!
//! let real = Array3::from_shape_fn((64, 64, 64), |(i, j, k)| ((i * 7 + j * 3 + k) % 11) as f32 / 11.0);
//! let fake = real.mapv(|v| (v * 0.9 + 0.05).min(1.0));
//! let m = ms_ssim(&real, &fake, &MsSsimConfig::default().with_kernel_size(4))?;
//! let p = psnr(&fake, &real, 1.0)?;
//! assert!(m > 0.5 && p > 20.0);
//! # Ok::<(), brain_ldm_metrics::Error>(())
//! ```
#![warn(missing_docs)]

mod diversity;
mod error;
mod fid;
mod filter;
mod grid;
mod linalg;
mod mmd;
mod msssim;
mod regression;
mod report;
mod source;
mod ssim;

pub use diversity::{diversity, sample_pairs, DiversityConfig, DiversityReport, PairScore};
pub use error::{Error, Result};
pub use fid::{fid, frechet_distance, FeatureStats, FID_EPSILON};
pub use mmd::mmd;
pub use msssim::{ms_ssim, MsSsimConfig, MONAI_MS_SSIM_WEIGHTS};
pub use regression::{mae, mse, psnr};
pub use report::{evaluate, EvalOptions, EvalReport, PairedConfig, PairedReport, PairedScore};
pub use source::{extract_features, FeatureExtractor, Progress, VolumeSource};
pub use ssim::{ssim, ssim_and_cs, KernelType, SsimAndCs, SsimConfig};
