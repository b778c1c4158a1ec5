//! Training both stages of the brain latent diffusion model (Pinaya et al. 2022) on candle's
//! autograd, MONAI-exact in losses and gradients.
//!
//! * [`losses`]: L1, KL (MONAI's tutorials), least-squares patch adversarial loss (MONAI's
//!   `PatchAdversarialLoss`), MSE diffusion loss with ε, v or x₀ targets, and the
//!   [`losses::PerceptualLoss`] trait (no pretrained network ships: see its docs).
//! * [`optim`]: Adam/AdamW identical to PyTorch's with exportable state, gradient accumulation
//!   and global-norm clipping, warm-up and cosine decay, EMA.
//! * [`data`]: BIDS folders and CSV/TSV manifests, covariates by column name, min/max scaling
//!   on the training set, deterministic shuffling per (seed, epoch), a loader thread.
//! * [`AutoencoderTrainer`] (stage 1) and [`DiffusionTrainer`] (stage 2, cached latents,
//!   conditioning dropout, EMA), configured by [`AutoencoderTrainConfig`] /
//!   [`DiffusionTrainConfig`] (TOML), writing checkpoints that resume exactly and, for
//!   stage 2, a model folder `brain_ldm::LatentDiffusionPipeline::open` loads; each run
//!   logs every step to `log.jsonl`, drawn as `loss.png` by [`plot_losses`].
#![warn(missing_docs)]

mod autoencoder;
pub mod config;
pub mod data;
mod diffusion;
mod error;
mod latents;
pub mod losses;
pub mod optim;
mod plot;
mod run;

pub use autoencoder::AutoencoderTrainer;
pub use config::{AutoencoderTrainConfig, DiffusionTrainConfig};
pub use diffusion::DiffusionTrainer;
pub use error::{Result, TrainError};
pub use latents::LATENT_CACHE;
pub use plot::plot_losses;
pub use run::{seeded_init, StepLosses, StepReport};
