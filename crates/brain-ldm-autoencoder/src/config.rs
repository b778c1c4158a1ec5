//! The constructor arguments of MONAI's `AutoencoderKL`, under MONAI's names.

use crate::error::{AutoencoderError, Result};
use serde::{Deserialize, Serialize};

/// Residual blocks per level: one count for every level, or one per level (MONAI accepts an
/// `int` or a sequence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NumResBlocks {
    /// The same number of residual blocks at every level.
    All(usize),
    /// One count per level, as long as `channels`.
    PerLevel(Vec<usize>),
}

/// Configuration of [`crate::AutoencoderKL`]: the arguments of MONAI's
/// `monai.networks.nets.AutoencoderKL` (MONAI ≥ 1.4), with its defaults.
///
/// Deserialises from the JSON of a MONAI bundle's `autoencoder_def` (unknown keys such as
/// `_target_` are ignored; the GenerativeModels 0.2 name `num_channels` is accepted for
/// `channels`). `use_checkpoint` and `use_flash_attention` only change how PyTorch computes
/// (activation checkpointing, fused attention kernel), not the result; they are accepted and
/// have no effect here.
///
/// ```
/// use brain_ldm_autoencoder::AutoencoderKLConfig;
/// let cfg: AutoencoderKLConfig = serde_json::from_str(
///     r#"{"spatial_dims": 3, "num_channels": [64, 128, 128, 128], "num_res_blocks": 2,
///         "attention_levels": [false, false, false, false],
///         "with_encoder_nonlocal_attn": false, "with_decoder_nonlocal_attn": false}"#,
/// ).unwrap();
/// assert_eq!(cfg, AutoencoderKLConfig::brain_ldm());
/// assert_eq!(cfg.res_blocks_per_level().unwrap(), vec![2, 2, 2, 2]);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoencoderKLConfig {
    /// Number of spatial dimensions; only 3 is supported.
    pub spatial_dims: usize,
    /// Image channels in.
    #[serde(default = "one")]
    pub in_channels: usize,
    /// Image channels out.
    #[serde(default = "one")]
    pub out_channels: usize,
    /// Residual blocks per level (default 2 at each of 4 levels).
    #[serde(default = "default_num_res_blocks")]
    pub num_res_blocks: NumResBlocks,
    /// Feature channels per level (default `[32, 64, 64, 64]`); GenerativeModels 0.2 called
    /// it `num_channels`.
    #[serde(default = "default_channels", alias = "num_channels")]
    pub channels: Vec<usize>,
    /// Which levels carry a spatial self-attention block after each residual block
    /// (default `[false, false, true, true]`).
    #[serde(default = "default_attention_levels")]
    pub attention_levels: Vec<bool>,
    /// Latent channels (default 3).
    #[serde(default = "three")]
    pub latent_channels: usize,
    /// Groups of every GroupNorm (default 32).
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    /// Epsilon of every GroupNorm (default 1e-6).
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    /// Residual + attention + residual blocks at the end of the encoder (default true).
    #[serde(default = "yes")]
    pub with_encoder_nonlocal_attn: bool,
    /// Residual + attention + residual blocks at the start of the decoder (default true).
    #[serde(default = "yes")]
    pub with_decoder_nonlocal_attn: bool,
    /// PyTorch activation checkpointing; no effect here.
    #[serde(default)]
    pub use_checkpoint: bool,
    /// Upsample with a 2×2×2 stride-2 transposed convolution (`deconv`) instead of nearest
    /// ×2 then a 3×3×3 convolution (`postconv`).
    #[serde(default)]
    pub use_convtranspose: bool,
    /// Attention blocks end with the `out_proj` linear layer (default true).
    #[serde(default = "yes")]
    pub include_fc: bool,
    /// Attention blocks project q, k, v with one `qkv` linear layer instead of `to_q`, `to_k`,
    /// `to_v`.
    #[serde(default)]
    pub use_combined_linear: bool,
    /// PyTorch's fused attention kernel; no effect here.
    #[serde(default)]
    pub use_flash_attention: bool,
}

fn one() -> usize {
    1
}
fn three() -> usize {
    3
}
fn thirty_two() -> usize {
    32
}
fn yes() -> bool {
    true
}
fn default_eps() -> f64 {
    1e-6
}
fn default_num_res_blocks() -> NumResBlocks {
    NumResBlocks::PerLevel(vec![2, 2, 2, 2])
}
fn default_channels() -> Vec<usize> {
    vec![32, 64, 64, 64]
}
fn default_attention_levels() -> Vec<bool> {
    vec![false, false, true, true]
}

impl Default for AutoencoderKLConfig {
    /// MONAI's defaults (3D): channels `[32, 64, 64, 64]`, attention at the two deepest
    /// levels, non-local attention in encoder and decoder.
    fn default() -> Self {
        Self {
            spatial_dims: 3,
            in_channels: 1,
            out_channels: 1,
            num_res_blocks: default_num_res_blocks(),
            channels: default_channels(),
            attention_levels: default_attention_levels(),
            latent_channels: 3,
            norm_num_groups: 32,
            norm_eps: 1e-6,
            with_encoder_nonlocal_attn: true,
            with_decoder_nonlocal_attn: true,
            use_checkpoint: false,
            use_convtranspose: false,
            include_fc: true,
            use_combined_linear: false,
            use_flash_attention: false,
        }
    }
}

impl AutoencoderKLConfig {
    /// The autoencoder of the public brain-LDM bundle (`brain_image_synthesis_latent_diffusion_model`,
    /// `configs/inference.json`, `autoencoder_def`): 1 → 1 channels, channels
    /// `[64, 128, 128, 128]`, latent 3, 2 residual blocks per level, 32 groups, eps 1e-6, no
    /// attention anywhere. A 160×224×160 image becomes a 3×20×28×20 latent.
    pub fn brain_ldm() -> Self {
        Self {
            num_res_blocks: NumResBlocks::All(2),
            channels: vec![64, 128, 128, 128],
            attention_levels: vec![false; 4],
            with_encoder_nonlocal_attn: false,
            with_decoder_nonlocal_attn: false,
            ..Self::default()
        }
    }

    /// Parses the JSON of a bundle's `autoencoder_def` (or a fixture's `config`) and validates it.
    ///
    /// # Errors
    /// [`AutoencoderError::ConfigJson`] for malformed JSON, [`AutoencoderError::InvalidConfig`]
    /// as [`Self::validate`].
    pub fn from_json(json: &str) -> Result<Self> {
        let cfg: Self =
            serde_json::from_str(json).map_err(|source| AutoencoderError::ConfigJson { source })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Residual blocks at each level.
    ///
    /// # Errors
    /// [`AutoencoderError::InvalidConfig`] when a per-level list is not as long as `channels`.
    pub fn res_blocks_per_level(&self) -> Result<Vec<usize>> {
        match &self.num_res_blocks {
            NumResBlocks::All(n) => Ok(vec![*n; self.channels.len()]),
            NumResBlocks::PerLevel(v) if v.len() == self.channels.len() => Ok(v.clone()),
            NumResBlocks::PerLevel(_) => Err(invalid(
                "`num_res_blocks` should be a single integer or a tuple of integers with the same \
                 length as `channels`.",
            )),
        }
    }

    /// Downsampling factor per spatial axis: `2^(levels − 1)`.
    pub fn downsampling_factor(&self) -> usize {
        1 << self.channels.len().saturating_sub(1)
    }

    /// Checks the configuration as MONAI's constructor does (same messages), plus what MONAI
    /// leaves to PyTorch to fail on later.
    ///
    /// # Errors
    /// [`AutoencoderError::InvalidConfig`] naming the problem.
    pub fn validate(&self) -> Result<()> {
        if self.spatial_dims != 3 {
            return Err(invalid(format!(
                "spatial_dims must be 3 (brain-ldm is 3D only), got {}",
                self.spatial_dims
            )));
        }
        if self.channels.is_empty() {
            return Err(invalid("channels must not be empty"));
        }
        if self.norm_num_groups == 0 {
            return Err(invalid("norm_num_groups must be positive"));
        }
        if self
            .channels
            .iter()
            .any(|c| c % self.norm_num_groups != 0 || *c == 0)
        {
            return Err(invalid(
                "AutoencoderKL expects all channels being multiple of norm_num_groups",
            ));
        }
        if self.channels.len() != self.attention_levels.len() {
            return Err(invalid(
                "AutoencoderKL expects channels being same size of attention_levels",
            ));
        }
        self.res_blocks_per_level()?;
        if self.in_channels == 0 || self.out_channels == 0 || self.latent_channels == 0 {
            return Err(invalid(
                "in_channels, out_channels and latent_channels must be positive",
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(invalid(format!(
                "norm_eps must be positive and finite, got {}",
                self.norm_eps
            )));
        }
        Ok(())
    }
}

fn invalid(reason: impl Into<String>) -> AutoencoderError {
    AutoencoderError::InvalidConfig {
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_messages_match_monai() {
        let mut cfg = AutoencoderKLConfig::brain_ldm();
        cfg.norm_num_groups = 48;
        let msg = cfg.validate().unwrap_err().to_string();
        assert!(msg.contains("multiple of norm_num_groups"), "{msg}");

        let mut cfg = AutoencoderKLConfig::brain_ldm();
        cfg.attention_levels = vec![false; 3];
        let msg = cfg.validate().unwrap_err().to_string();
        assert!(msg.contains("same size of attention_levels"), "{msg}");

        let mut cfg = AutoencoderKLConfig::brain_ldm();
        cfg.num_res_blocks = NumResBlocks::PerLevel(vec![1, 2]);
        let msg = cfg.validate().unwrap_err().to_string();
        assert!(
            msg.contains("`num_res_blocks` should be a single integer"),
            "{msg}"
        );

        let mut cfg = AutoencoderKLConfig::brain_ldm();
        cfg.spatial_dims = 2;
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn json_names_defaults_and_alias() {
        let cfg = AutoencoderKLConfig::from_json(r#"{"spatial_dims": 3}"#).unwrap();
        assert_eq!(cfg, AutoencoderKLConfig::default());
        let cfg = AutoencoderKLConfig::from_json(
            r#"{"_target_": "generative.networks.nets.AutoencoderKL", "spatial_dims": 3,
                "num_channels": [8, 16], "attention_levels": [false, true],
                "num_res_blocks": [1, 3], "norm_num_groups": 4}"#,
        )
        .unwrap();
        assert_eq!(cfg.channels, vec![8, 16]);
        assert_eq!(cfg.res_blocks_per_level().unwrap(), vec![1, 3]);
        assert!(matches!(
            AutoencoderKLConfig::from_json("{"),
            Err(AutoencoderError::ConfigJson { .. })
        ));
    }
}
