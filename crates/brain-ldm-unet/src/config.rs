//! The constructor arguments of MONAI's `DiffusionModelUNet`.

use crate::error::{Result, UnetError};
use serde::{Deserialize, Serialize};

/// One value for every level, or one value per level (MONAI accepts `int | Sequence[int]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerLevel {
    /// The same value at every level.
    All(usize),
    /// One value per level, from the highest resolution down.
    Each(Vec<usize>),
}

impl PerLevel {
    /// The per-level values for `levels` levels, or `None` when a list has another length.
    pub fn resolve(&self, levels: usize) -> Option<Vec<usize>> {
        match self {
            PerLevel::All(v) => Some(vec![*v; levels]),
            PerLevel::Each(v) if v.len() == levels => Some(v.clone()),
            PerLevel::Each(_) => None,
        }
    }
}

impl From<usize> for PerLevel {
    fn from(v: usize) -> Self {
        PerLevel::All(v)
    }
}

impl From<Vec<usize>> for PerLevel {
    fn from(v: Vec<usize>) -> Self {
        PerLevel::Each(v)
    }
}

/// The arguments of MONAI's `DiffusionModelUNet(...)` (MONAI ≥ 1.4 names; GenerativeModels
/// 0.2's `num_channels` is accepted for `channels`). Defaults are MONAI's.
///
/// Deserialises from the JSON of a MONAI bundle's `diffusion_def` (unknown keys such as
/// `_target_` are ignored). Check it with [`validate`](Self::validate);
/// [`DiffusionModelUNet::new`](crate::DiffusionModelUNet::new) validates too.
///
/// ```
/// use brain_ldm_unet::DiffusionModelUNetConfig;
/// let cfg = DiffusionModelUNetConfig::from_json(r#"{
///     "spatial_dims": 3, "in_channels": 7, "out_channels": 3,
///     "num_channels": [256, 512, 768], "attention_levels": [false, true, true],
///     "num_head_channels": [0, 512, 768], "num_res_blocks": 2, "norm_num_groups": 32,
///     "norm_eps": 1e-6, "resblock_updown": true, "with_conditioning": true,
///     "transformer_num_layers": 1, "cross_attention_dim": 4, "upcast_attention": true
/// }"#)?;
/// assert_eq!(cfg, DiffusionModelUNetConfig::brain_ldm());
/// # Ok::<(), brain_ldm_unet::UnetError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffusionModelUNetConfig {
    /// Number of spatial dimensions; only 3 is supported.
    #[serde(default = "default_spatial_dims")]
    pub spatial_dims: usize,
    /// Input channels (the bundle: 3 latent + 4 covariate channels).
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Residual blocks per level (the up path has one more per level).
    #[serde(default = "default_num_res_blocks")]
    pub num_res_blocks: PerLevel,
    /// Output channels of each level.
    #[serde(default = "default_channels", alias = "num_channels")]
    pub channels: Vec<usize>,
    /// Whether each level has attention (self-attention, or a spatial transformer when
    /// `with_conditioning`). The middle block always has attention.
    #[serde(default = "default_attention_levels")]
    pub attention_levels: Vec<bool>,
    /// Groups of every GroupNorm.
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: usize,
    /// Epsilon of every GroupNorm (the transformers' LayerNorms use 1e-5, as MONAI).
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    /// Down/up-sample with residual blocks (average pooling / nearest upsampling inside)
    /// instead of a strided convolution / nearest upsampling followed by a convolution.
    #[serde(default)]
    pub resblock_updown: bool,
    /// Channels per attention head, at every level or per level; ignored at levels without
    /// attention. The middle block uses the last level's value.
    #[serde(default = "default_num_head_channels")]
    pub num_head_channels: PerLevel,
    /// Use spatial transformers (self- and cross-attention to a context) instead of plain
    /// self-attention blocks.
    #[serde(default)]
    pub with_conditioning: bool,
    /// Transformer blocks per spatial transformer.
    #[serde(default = "default_transformer_num_layers")]
    pub transformer_num_layers: usize,
    /// Width of the context tokens (required with `with_conditioning`).
    #[serde(default)]
    pub cross_attention_dim: Option<usize>,
    /// Number of classes for class conditioning (an embedding added to the time embedding).
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    /// Also add a learned linear map of the context (its mean over tokens) to the time
    /// embedding (weights `context_embedding.{weight,bias}`), so that the conditioning reaches
    /// every residual block through its timestep projection, differently at each timestep,
    /// besides the cross-attention. Not part of MONAI (off by default, and not written to
    /// JSON when off, so MONAI's constructor accepts the configuration); requires
    /// `with_conditioning`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub context_embedding: bool,
    /// Compute the transformers' attention scores in f32 (matters for f16/bf16 weights).
    #[serde(default)]
    pub upcast_attention: bool,
    /// Dropout of the transformers during training; this port runs them in evaluation mode
    /// (no dropout), so it only has to be valid.
    #[serde(default)]
    pub dropout_cattn: f64,
    /// Whether the self-attention blocks have an output projection (`out_proj`).
    #[serde(default = "default_true")]
    pub include_fc: bool,
    /// Whether the self-attention blocks project q, k, v with one `qkv` linear layer.
    #[serde(default)]
    pub use_combined_linear: bool,
    /// MONAI's switch to PyTorch's fused attention; the result is the same, so it is
    /// accepted and ignored (attention here is always chunked over queries).
    #[serde(default)]
    pub use_flash_attention: bool,
}

fn default_spatial_dims() -> usize {
    3
}
fn default_num_res_blocks() -> PerLevel {
    PerLevel::Each(vec![2, 2, 2, 2])
}
fn default_channels() -> Vec<usize> {
    vec![32, 64, 64, 64]
}
fn default_attention_levels() -> Vec<bool> {
    vec![false, false, true, true]
}
fn default_norm_num_groups() -> usize {
    32
}
fn default_norm_eps() -> f64 {
    1e-6
}
fn default_num_head_channels() -> PerLevel {
    PerLevel::All(8)
}
fn default_transformer_num_layers() -> usize {
    1
}
fn default_true() -> bool {
    true
}

impl DiffusionModelUNetConfig {
    /// MONAI's defaults with the given channel counts.
    pub fn new(in_channels: usize, out_channels: usize) -> Self {
        Self {
            spatial_dims: default_spatial_dims(),
            in_channels,
            out_channels,
            num_res_blocks: default_num_res_blocks(),
            channels: default_channels(),
            attention_levels: default_attention_levels(),
            norm_num_groups: default_norm_num_groups(),
            norm_eps: default_norm_eps(),
            resblock_updown: false,
            num_head_channels: default_num_head_channels(),
            with_conditioning: false,
            transformer_num_layers: default_transformer_num_layers(),
            cross_attention_dim: None,
            num_class_embeds: None,
            context_embedding: false,
            upcast_attention: false,
            dropout_cattn: 0.0,
            include_fc: true,
            use_combined_linear: false,
            use_flash_attention: false,
        }
    }

    /// The diffusion UNet of the public brain-LDM bundle
    /// (`brain_image_synthesis_latent_diffusion_model`, `configs/inference.json`,
    /// `diffusion_def`): in 7 (3 latent + 4 covariates), out 3, channels 256/512/768,
    /// 2 res blocks, attention at levels 2–3 with one head each (head channels 0/512/768),
    /// resblock up/down, cross-attention to a 4-wide context, 1 transformer layer,
    /// upcast attention, 32 groups, eps 1e-6. 553.2 M parameters.
    pub fn brain_ldm() -> Self {
        Self {
            num_res_blocks: PerLevel::All(2),
            channels: vec![256, 512, 768],
            attention_levels: vec![false, true, true],
            num_head_channels: PerLevel::Each(vec![0, 512, 768]),
            resblock_updown: true,
            with_conditioning: true,
            cross_attention_dim: Some(4),
            upcast_attention: true,
            ..Self::new(7, 3)
        }
    }

    /// Parses a configuration JSON (MONAI or GenerativeModels argument names) and validates it.
    ///
    /// # Errors
    /// [`UnetError::ConfigJson`] for malformed JSON, [`UnetError::Config`] as
    /// [`validate`](Self::validate).
    pub fn from_json(json: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(json)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the configuration as MONAI's constructor does, plus the conditions under which
    /// MONAI would fail later (zero heads, head sizes that do not divide a self-attention
    /// block's channels, zero sizes).
    ///
    /// # Errors
    /// [`UnetError::Config`] naming the first violated condition.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(UnetError::Config(msg));
        if self.spatial_dims != 3 {
            return fail(format!(
                "only spatial_dims = 3 is supported, got {}",
                self.spatial_dims
            ));
        }
        if self.with_conditioning && self.cross_attention_dim.is_none() {
            return fail("DiffusionModelUNet expects dimension of the cross-attention conditioning (cross_attention_dim) when using with_conditioning.".into());
        }
        if self.cross_attention_dim.is_some() && !self.with_conditioning {
            return fail("DiffusionModelUNet expects with_conditioning=True when specifying the cross_attention_dim.".into());
        }
        if self.context_embedding && !self.with_conditioning {
            return fail(
                "context_embedding needs with_conditioning = true (it embeds the cross-attention context)"
                    .into(),
            );
        }
        if !(0.0..=1.0).contains(&self.dropout_cattn) {
            return fail("Dropout cannot be negative or >1.0!".into());
        }
        if self.channels.is_empty() {
            return fail("channels must not be empty".into());
        }
        if self.norm_num_groups == 0
            || self
                .channels
                .iter()
                .any(|c| *c == 0 || c % self.norm_num_groups != 0)
        {
            return fail(format!(
                "DiffusionModelUNet expects all num_channels being multiple of norm_num_groups (channels {:?}, norm_num_groups {})",
                self.channels, self.norm_num_groups
            ));
        }
        if self.channels.len() != self.attention_levels.len() {
            return fail(
                "DiffusionModelUNet expects num_channels being same size of attention_levels"
                    .into(),
            );
        }
        let levels = self.channels.len();
        let Some(heads) = self.num_head_channels.resolve(levels) else {
            return fail("num_head_channels should have the same length as attention_levels. For the i levels without attention, i.e. `attention_level[i]=False`, the num_head_channels[i] will be ignored.".into());
        };
        let Some(res_blocks) = self.num_res_blocks.resolve(levels) else {
            return fail("`num_res_blocks` should be a single integer or a tuple of integers with the same length as `num_channels`.".into());
        };
        if res_blocks.contains(&0) {
            return fail(format!(
                "num_res_blocks must be at least 1 at every level, got {res_blocks:?}"
            ));
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            return fail("in_channels and out_channels must be positive".into());
        }
        if self.with_conditioning && self.transformer_num_layers == 0 {
            return fail("transformer_num_layers must be at least 1".into());
        }
        if self.cross_attention_dim == Some(0) {
            return fail("cross_attention_dim must be positive".into());
        }
        if self.num_class_embeds == Some(0) {
            return fail("num_class_embeds must be positive".into());
        }
        // Levels with attention, and the middle block (always attention, last level's heads).
        let attended = (0..levels)
            .filter(|&i| self.attention_levels[i])
            .map(|i| (format!("level {i}"), self.channels[i], heads[i]))
            .chain(std::iter::once((
                "the middle block".to_string(),
                self.channels[levels - 1],
                heads[levels - 1],
            )));
        for (place, channels, head) in attended {
            if head == 0 || head > channels {
                return fail(format!(
                    "{place}: num_head_channels {head} must be between 1 and the level's {channels} channels"
                ));
            }
            if !self.with_conditioning && channels % head != 0 {
                return fail(format!(
                    "{place}: num_channels must be divisible by num_head_channels ({channels} channels, {head} per head)"
                ));
            }
        }
        Ok(())
    }

    /// Number of levels (`channels.len()`).
    pub fn levels(&self) -> usize {
        self.channels.len()
    }

    /// Residual blocks of each level (down path), or `None` when the list has the wrong length.
    pub fn num_res_blocks_per_level(&self) -> Option<Vec<usize>> {
        self.num_res_blocks.resolve(self.levels())
    }

    /// Channels per head of each level, or `None` when the list has the wrong length.
    pub fn num_head_channels_per_level(&self) -> Option<Vec<usize>> {
        self.num_head_channels.resolve(self.levels())
    }

    /// Width of the time embedding: `4 · channels[0]`.
    pub fn time_embed_dim(&self) -> usize {
        self.channels.first().copied().unwrap_or(0) * 4
    }

    /// The factor every spatial size of the input must be divisible by: `2^(levels − 1)`.
    pub fn spatial_divisor(&self) -> usize {
        1 << self.levels().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(cfg: &DiffusionModelUNetConfig) -> String {
        match cfg.validate() {
            Err(UnetError::Config(msg)) => msg,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn json_names_and_defaults() {
        // GenerativeModels 0.2 name `num_channels`, per-level lists, an unknown `_target_`.
        let cfg = DiffusionModelUNetConfig::from_json(
            r#"{"_target_": "generative.networks.nets.DiffusionModelUNet", "spatial_dims": 3,
                "in_channels": 3, "out_channels": 3, "num_channels": [32, 64],
                "attention_levels": [false, true], "num_res_blocks": [1, 2],
                "num_head_channels": [0, 32]}"#,
        )
        .unwrap();
        assert_eq!(cfg.channels, [32, 64]);
        assert_eq!(cfg.num_res_blocks_per_level().unwrap(), [1, 2]);
        assert_eq!(cfg.num_head_channels_per_level().unwrap(), [0, 32]);
        // MONAI's defaults for everything else.
        assert_eq!(cfg.norm_num_groups, 32);
        assert_eq!(cfg.norm_eps, 1e-6);
        assert_eq!(cfg.transformer_num_layers, 1);
        assert!(cfg.include_fc && !cfg.use_combined_linear && !cfg.with_conditioning);
        assert_eq!(cfg.time_embed_dim(), 128);
        assert_eq!(cfg.spatial_divisor(), 2);
        // MONAI's own default configuration is valid.
        DiffusionModelUNetConfig::new(1, 1).validate().unwrap();
        assert_eq!(DiffusionModelUNetConfig::new(1, 1).spatial_divisor(), 8);
        assert!(matches!(
            DiffusionModelUNetConfig::from_json("{\"in_channels\": 1}"),
            Err(UnetError::ConfigJson(_))
        ));
    }

    #[test]
    fn monai_validation_errors() {
        let base = DiffusionModelUNetConfig::brain_ldm();
        base.validate().unwrap();

        let mut c = base.clone();
        c.cross_attention_dim = None;
        assert!(err(&c).contains("expects dimension of the cross-attention conditioning"));
        let mut c = base.clone();
        c.with_conditioning = false;
        assert!(err(&c).contains("expects with_conditioning=True"));
        let mut c = base.clone();
        c.dropout_cattn = 1.5;
        assert!(err(&c).contains("Dropout cannot be negative"));
        let mut c = base.clone();
        c.channels = vec![256, 512, 760];
        assert!(err(&c).contains("multiple of norm_num_groups"));
        let mut c = base.clone();
        c.attention_levels = vec![false, true];
        assert!(err(&c).contains("same size of attention_levels"));
        let mut c = base.clone();
        c.num_head_channels = PerLevel::Each(vec![0, 512]);
        assert!(err(&c).contains("num_head_channels should have the same length"));
        let mut c = base.clone();
        c.num_res_blocks = PerLevel::Each(vec![2, 2]);
        assert!(err(&c).contains("`num_res_blocks` should be a single integer"));
        // Where MONAI fails later (division by zero, indivisible heads), an error up front.
        let mut c = base.clone();
        c.num_head_channels = PerLevel::Each(vec![0, 0, 768]);
        assert!(err(&c).contains("level 1: num_head_channels 0"));
        let mut c = base.clone();
        c.num_head_channels = PerLevel::Each(vec![0, 512, 0]);
        assert!(err(&c).contains("level 2"));
        let mut c = base.clone();
        c.attention_levels = vec![false, false, false];
        c.num_head_channels = PerLevel::All(0);
        assert!(err(&c).contains("the middle block"));
        let mut c = base.clone();
        c.with_conditioning = false;
        c.cross_attention_dim = None;
        c.num_head_channels = PerLevel::Each(vec![0, 512, 500]);
        assert!(err(&c).contains("divisible by num_head_channels"));
        let mut c = base;
        c.spatial_dims = 2;
        assert!(err(&c).contains("spatial_dims"));
    }
}
