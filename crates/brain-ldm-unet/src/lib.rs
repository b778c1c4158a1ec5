//! MONAI's 3D `DiffusionModelUNet` on [candle](https://docs.rs/candle-core): the denoiser of
//! the brain latent diffusion model (Pinaya et al. 2022), built on `brain-ldm-nn`.
//!
//! * [`DiffusionModelUNetConfig`]: MONAI's constructor arguments (deserialises from a bundle's
//!   `diffusion_def`, old `num_channels` name included), MONAI's validation, and the public
//!   bundle's configuration [`DiffusionModelUNetConfig::brain_ldm`].
//! * [`DiffusionModelUNet`]: `new(&config, vb)` over any `VarBuilder` (a checkpoint, or a
//!   `VarMap` for training: every operation is differentiable), [`DiffusionModelUNet::load`]
//!   for `.safetensors` and PyTorch `.pt` files under MONAI core or old GenerativeModels key
//!   names ([`old_key_to_core`]), and
//!   [`forward(x, timesteps, context, class_labels)`](DiffusionModelUNet::forward).
//!
//! The forward pass follows MONAI 1.6 operation by operation: timestep embedding (cosines
//! first) → Linear → SiLU → Linear; `conv_in`; down levels of residual blocks (each followed
//! by self-attention or a spatial transformer where the level has attention) and a
//! downsampler (residual block with average pooling, or a strided convolution); a middle
//! block (residual block, attention, residual block); up levels over `cat([h, skip], 1)`
//! with the skips popped last-in first-out and an upsampler (residual block with nearest
//! upsampling, or nearest upsampling and a convolution); GroupNorm → SiLU → convolution.
//! Attention runs in query chunks ([`brain_ldm_nn::attention`]), so memory stays bounded for
//! large latents. Cross-attention to a one-token context (the brain bundle's covariates)
//! takes the exact shortcut `out_proj(to_v(context))` (the softmax over one key is 1) when
//! no gradient is tracked.
//!
//! One addition beyond MONAI, off by default:
//! [`context_embedding`](DiffusionModelUNetConfig::context_embedding) adds a linear map of
//! the context to the time embedding (as a class embedding is added), so that covariates
//! reach every residual block at every noise level; the built-in demo model uses it.
//!
//! Tensors are `[batch, channels, depth, height, width]`.
#![warn(missing_docs)]

mod blocks;
mod config;
mod error;
mod model;

pub use config::{DiffusionModelUNetConfig, PerLevel};
pub use error::{Result, UnetError};
pub use model::{convert_checkpoint, old_key_to_core, DiffusionModelUNet};
