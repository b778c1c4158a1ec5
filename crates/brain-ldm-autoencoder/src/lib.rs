//! MONAI's 3D KL autoencoder (`AutoencoderKL`) and patch discriminator
//! (`PatchDiscriminator`) on [candle](https://docs.rs/candle-core), computing what MONAI
//! computes and loading the weights people already have.
//!
//! * [`AutoencoderKL`] with MONAI's configuration surface ([`AutoencoderKLConfig`], which
//!   deserialises from a bundle's `autoencoder_def`): [`AutoencoderKL::encode`] →
//!   (mu, sigma), [`AutoencoderKL::sample`] with the noise passed in,
//!   [`AutoencoderKL::decode`], [`AutoencoderKL::reconstruct`].
//! * Weights by MONAI's state-dict names: safetensors, PyTorch pickles (`.pt`), and the old
//!   GenerativeModels 0.2 names of the public brain-LDM bundle ([`upgrade_old_keys`]). A
//!   checkpoint that does not fit gives one error listing every missing, unexpected and
//!   mis-shaped key.
//! * Full-resolution inference with bounded memory: large layers run in depth slabs
//!   ([`Streaming`]), so the 160×224×160 decode holds roughly one layer's input and output.
//! * [`PatchDiscriminator`] for adversarial training.
//!
//! Tensors are `[batch, channels, depth, height, width]`.
//!
//! ```no_run
//! use brain_ldm_autoencoder::{AutoencoderKL, AutoencoderKLConfig};
//! use candle_core::{DType, Device, Tensor};
//!
//! let dev = Device::Cpu;
//! let ae = AutoencoderKL::load("models/autoencoder.pt", &AutoencoderKLConfig::brain_ldm(), &dev)?;
//! let z = Tensor::randn(0f32, 1.0, (1, 3, 20, 28, 20), &dev)?;
//! let image = ae.decode(&z)?; // [1, 1, 160, 224, 160]
//! # Ok::<(), brain_ldm_autoencoder::AutoencoderError>(())
//! ```
#![warn(missing_docs)]

mod autoencoder;
mod blocks;
mod config;
mod discriminator;
mod error;
mod stream;

pub use autoencoder::{upgrade_old_keys, AutoencoderKL};
pub use blocks::Streaming;
pub use config::{AutoencoderKLConfig, NumResBlocks};
pub use discriminator::{Activation, NormKind, PatchDiscriminator, PatchDiscriminatorConfig};
pub use error::{AutoencoderError, Result};
