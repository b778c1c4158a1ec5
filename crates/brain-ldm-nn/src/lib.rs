//! 3D neural-network layers on [candle](https://docs.rs/candle-core): the building blocks
//! every brain-ldm model shares.
//!
//! candle has no 3D convolution, 3D upsampling or 3D pooling; this crate adds them once, fast
//! on the CPU and differentiable, with weights in PyTorch's layout so MONAI checkpoints load
//! as they are:
//!
//! * [`ops::conv3d`] / [`Conv3d`]: tiled-GEMM 3D convolution (any stride, asymmetric zero
//!   padding), its backward pass, and [`ops::conv3d_reference`] built from candle's `conv2d`
//!   (used off the CPU and as the test oracle); [`ops::conv_transpose3d`] /
//!   [`ConvTranspose3d`].
//! * [`ops::upsample_nearest3d`], [`ops::avg_pool3d`].
//! * [`GroupNorm`] (with a fused SiLU, and whole-volume statistics for applying it slab by
//!   slab), [`LayerNorm`], [`Linear`] (candle-nn's keys, shapes and initialisation,
//!   its bias added by [`ops::add_channel_bias`], whose gradient sums the rows in parallel).
//! * [`attention`]: multi-head scaled-dot-product attention in query chunks, so memory stays
//!   bounded for large volumes; optional f32 softmax for half-precision inputs.
//! * [`timestep_embedding`]: MONAI's sinusoidal embedding (cosines first);
//!   [`ops::geglu`]: the gated GELU of MONAI's transformer feed-forward;
//!   [`ops::concat_channels`]: the skip connections' channel concatenation;
//!   [`ops::add_channel_bias`]: a per-channel (or per-sample and channel) bias.
//!
//! * [`LargeBlockCache`]: a global allocator that reuses the large blocks slab-wise
//!   full-size inference frees and allocates again, instead of faulting in fresh pages.
//! * [`checkpoint`]: safetensors and PyTorch-pickle checkpoints, key renaming, a strict fit
//!   check that lists every missing, unexpected or mis-shaped key, safetensors export.
//!
//! Tensors are `[batch, channels, depth, height, width]`, row-major.
//!
//! # Errors
//! Layers implement [`candle_core::Module`], so they return candle errors; invalid input is
//! reported as an [`NnError`] wrapped in [`candle_core::Error::Wrapped`], whose message names
//! the operation and the shapes at fault.
#![warn(missing_docs)]

mod activation;
mod attention;
mod bias;
pub mod checkpoint;
mod concat;
mod conv;
mod embedding;
mod error;
mod large_blocks;
mod linear;
mod math;
mod norm;
mod resample;
mod storage;

pub use attention::{attention, AttentionConfig};
pub use conv::{
    conv3d_layer, conv_transpose3d_layer, Conv3d, Conv3dConfig, ConvTranspose3d,
    ConvTranspose3dConfig,
};
pub use embedding::timestep_embedding;
pub use error::NnError;
pub use large_blocks::{LargeBlockCache, LARGE_BLOCK_BYTES};
pub use linear::{linear, linear_no_bias, Linear};
pub use norm::{group_norm, layer_norm, GroupNorm, GroupNormStatistics, LayerNorm};

/// Functional forms of the 3D operations.
pub mod ops {
    pub use crate::activation::geglu;
    pub use crate::bias::add_channel_bias;
    pub use crate::concat::concat_channels;
    pub use crate::conv::{conv3d, conv3d_reference, conv_transpose3d};
    pub use crate::resample::{avg_pool3d, upsample_nearest3d, upsample_nearest3d_reference};
}
