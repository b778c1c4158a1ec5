//! `DiffusionModelUNet`: construction, loading and the forward pass.

use crate::blocks::{
    conv, zero_conv, AttentionBlock, DownBlock, Downsampler, MidBlock, Norm, Resample, ResnetBlock,
    SpatialAttentionBlock, SpatialTransformer, TransformerSpec, UpBlock, Upsampler,
};
use crate::config::DiffusionModelUNetConfig;
use crate::error::{Result, UnetError};
use brain_ldm_nn::checkpoint::Checkpoint;
use brain_ldm_nn::{group_norm, linear, timestep_embedding, Conv3d, GroupNorm, Linear};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};
use std::path::Path;

/// MONAI's 3D `DiffusionModelUNet` (`monai.networks.nets.diffusion_model_unet`, MONAI 1.6):
/// the denoiser of a latent diffusion model, with a sinusoidal timestep embedding, residual
/// blocks, self-attention or spatial transformers (cross-attention to a context) and
/// optional class conditioning.
///
/// Weights load by MONAI's state-dict names ([`new`](Self::new) on any [`VarBuilder`];
/// [`load`](Self::load) for files, including checkpoints saved under the old MONAI
/// GenerativeModels 0.2 names). Every operation is differentiable, so the model can be
/// built on a [`candle_nn::VarMap`] and trained; it always runs in evaluation mode
/// (no dropout).
///
/// ```
/// use brain_ldm_unet::{DiffusionModelUNet, DiffusionModelUNetConfig};
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
///
/// let mut cfg = DiffusionModelUNetConfig::new(3, 3);
/// cfg.channels = vec![8, 16];
/// cfg.attention_levels = vec![false, true];
/// cfg.num_res_blocks = 1.into();
/// cfg.num_head_channels = 8.into();
/// cfg.norm_num_groups = 4;
/// cfg.with_conditioning = true;
/// cfg.cross_attention_dim = Some(4);
///
/// let dev = Device::Cpu;
/// let vars = VarMap::new();
/// let unet = DiffusionModelUNet::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &dev))?;
/// let x = Tensor::randn(0f32, 1., (2, 3, 8, 8, 8), &dev)?;
/// let t = Tensor::new(&[10u32, 500], &dev)?;
/// let context = Tensor::rand(0f32, 1., (2, 1, 4), &dev)?;
/// let y = unet.forward(&x, &t, Some(&context), None)?;
/// assert_eq!(y.dims(), &[2, 3, 8, 8, 8]);
/// # Ok::<(), brain_ldm_unet::UnetError>(())
/// ```
#[derive(Debug, Clone)]
pub struct DiffusionModelUNet {
    config: DiffusionModelUNetConfig,
    conv_in: Conv3d,
    time_embed: (Linear, Linear),
    class_embedding: Option<Embedding>,
    context_embedding: Option<Linear>,
    down_blocks: Vec<DownBlock>,
    middle_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    out_norm: GroupNorm,
    out_conv: Conv3d,
    /// Inner widths of the spatial transformers (self-attention stands in for
    /// cross-attention when no context is given, which needs `cross_attention_dim` = width).
    transformer_widths: Vec<usize>,
}

impl DiffusionModelUNet {
    /// Builds the network, fetching every weight from `vb` under MONAI's state-dict key
    /// (`conv_in.conv.weight`, `down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight`,
    /// …). On a [`candle_nn::VarMap`] the layers MONAI zero-initialises (`zero_module`: the
    /// second convolution of each residual block, the transformers' `proj_out`, the output
    /// convolution) start at zero.
    ///
    /// # Errors
    /// [`UnetError::Config`] for an invalid configuration (wrapped in a candle error), or a
    /// candle error naming a missing or mis-shaped key.
    pub fn new(config: &DiffusionModelUNetConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        config.validate()?;
        let levels = config.levels();
        let ch = &config.channels;
        let (Some(res_blocks), Some(heads)) = (
            config.num_res_blocks_per_level(),
            config.num_head_channels_per_level(),
        ) else {
            // `validate` has checked the lengths.
            return Err(UnetError::Config("per-level list of the wrong length".into()).into());
        };
        let norm = Norm {
            groups: config.norm_num_groups,
            eps: config.norm_eps,
        };
        let temb = config.time_embed_dim();
        let mut transformer_widths = Vec::new();

        // The attention a level gets (None when it has none).
        let mut attention = |channels: usize, head: usize, vb: VarBuilder| {
            if config.with_conditioning {
                let spec = TransformerSpec {
                    channels,
                    head_channels: head,
                    layers: config.transformer_num_layers,
                    context_dim: config.cross_attention_dim.unwrap_or(0),
                    upcast: config.upcast_attention,
                    include_fc: config.include_fc,
                    combined: config.use_combined_linear,
                };
                transformer_widths.push(spec.inner_dim());
                Ok(AttentionBlock::Transformer(SpatialTransformer::new(
                    &spec, norm, vb,
                )?))
            } else {
                Ok::<_, candle_core::Error>(AttentionBlock::SelfAttention(
                    SpatialAttentionBlock::new(
                        channels,
                        head,
                        config.include_fc,
                        config.use_combined_linear,
                        norm,
                        vb,
                    )?,
                ))
            }
        };

        let conv_in = conv(config.in_channels, ch[0], 3, 1, 1, vb.pp("conv_in"))?;
        let te = vb.pp("time_embed");
        let time_embed = (
            linear(ch[0], temb, te.pp(0))?,
            linear(temb, temb, te.pp(2))?,
        );
        let class_embedding = match config.num_class_embeds {
            Some(n) => Some(candle_nn::embedding(n, temb, vb.pp("class_embedding"))?),
            None => None,
        };
        let context_embedding = match (config.context_embedding, config.cross_attention_dim) {
            (true, Some(width)) => Some(linear(width, temb, vb.pp("context_embedding"))?),
            _ => None,
        };

        let mut down_blocks = Vec::with_capacity(levels);
        let mut output = ch[0];
        for i in 0..levels {
            let input = output;
            output = ch[i];
            let vb = vb.pp("down_blocks").pp(i);
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..res_blocks[i] {
                let c_in = if j == 0 { input } else { output };
                resnets.push(ResnetBlock::new(
                    c_in,
                    output,
                    temb,
                    Resample::None,
                    norm,
                    vb.pp("resnets").pp(j),
                )?);
                if config.attention_levels[i] {
                    attentions.push(attention(output, heads[i], vb.pp("attentions").pp(j))?);
                }
            }
            let downsampler = if i + 1 == levels {
                None
            } else if config.resblock_updown {
                Some(Downsampler::Resnet(Box::new(ResnetBlock::new(
                    output,
                    output,
                    temb,
                    Resample::Down,
                    norm,
                    vb.pp("downsampler"),
                )?)))
            } else {
                Some(Downsampler::Conv(conv(
                    output,
                    output,
                    3,
                    1,
                    2,
                    vb.pp("downsampler").pp("op"),
                )?))
            };
            down_blocks.push(DownBlock {
                resnets,
                attentions,
                downsampler,
            });
        }

        let last = ch[levels - 1];
        let mb = vb.pp("middle_block");
        let middle_block = MidBlock {
            resnet_1: ResnetBlock::new(last, last, temb, Resample::None, norm, mb.pp("resnet_1"))?,
            attention: attention(last, heads[levels - 1], mb.pp("attention"))?,
            resnet_2: ResnetBlock::new(last, last, temb, Resample::None, norm, mb.pp("resnet_2"))?,
        };

        let mut up_blocks = Vec::with_capacity(levels);
        let rev = |i: usize| levels - 1 - i;
        let mut output = ch[levels - 1];
        for i in 0..levels {
            let prev_output = output;
            output = ch[rev(i)];
            let input = ch[rev((i + 1).min(levels - 1))];
            let n = res_blocks[rev(i)] + 1;
            let vb = vb.pp("up_blocks").pp(i);
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..n {
                let skip = if j + 1 == n { input } else { output };
                let c_in = if j == 0 { prev_output } else { output };
                resnets.push(ResnetBlock::new(
                    c_in + skip,
                    output,
                    temb,
                    Resample::None,
                    norm,
                    vb.pp("resnets").pp(j),
                )?);
                if config.attention_levels[rev(i)] {
                    attentions.push(attention(output, heads[rev(i)], vb.pp("attentions").pp(j))?);
                }
            }
            let upsampler = if i + 1 == levels {
                None
            } else if config.resblock_updown {
                Some(Upsampler::Resnet(Box::new(ResnetBlock::new(
                    output,
                    output,
                    temb,
                    Resample::Up,
                    norm,
                    vb.pp("upsampler"),
                )?)))
            } else {
                Some(Upsampler::Conv(conv(
                    output,
                    output,
                    3,
                    1,
                    1,
                    vb.pp("upsampler").pp("postconv"),
                )?))
            };
            up_blocks.push(UpBlock {
                resnets,
                attentions,
                upsampler,
            });
        }

        let out_norm = group_norm(norm.groups, ch[0], norm.eps, vb.pp("out").pp(0))?;
        let out_conv = zero_conv(ch[0], config.out_channels, 3, vb.pp("out").pp(2))?;
        Ok(Self {
            config: config.clone(),
            conv_in,
            time_embed,
            class_embedding,
            context_embedding,
            down_blocks,
            middle_block,
            up_blocks,
            out_norm,
            out_conv,
            transformer_widths,
        })
    }

    /// Loads a checkpoint file and builds the model from it, checking that the file holds
    /// exactly the model's weights with the right shapes.
    ///
    /// `.safetensors` files and PyTorch pickled state dicts (`.pt`, `.pth`, `.ckpt`, `.bin`)
    /// are read; keys may use MONAI core names or the old MONAI GenerativeModels 0.2 names
    /// of the public brain-LDM bundle's `model.pt` (see [`old_key_to_core`]). Weights are
    /// converted to `dtype`.
    ///
    /// # Errors
    /// [`UnetError::Checkpoint`]: the file cannot be read, or one
    /// [`CheckpointError::Mismatch`](brain_ldm_nn::checkpoint::CheckpointError::Mismatch)
    /// listing every missing, unexpected and mis-shaped key; [`UnetError::Config`] for an
    /// invalid configuration.
    ///
    /// ```no_run
    /// use brain_ldm_unet::{DiffusionModelUNet, DiffusionModelUNetConfig};
    /// let cfg = DiffusionModelUNetConfig::brain_ldm();
    /// let unet = DiffusionModelUNet::load(
    ///     "models/model.pt", &cfg, candle_core::DType::F32, &candle_core::Device::Cpu)?;
    /// # Ok::<(), brain_ldm_unet::UnetError>(())
    /// ```
    pub fn load(
        path: impl AsRef<Path>,
        config: &DiffusionModelUNetConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let checkpoint = Checkpoint::load(path, device)?;
        Self::from_checkpoint(checkpoint, config, dtype)
    }

    /// Builds the model from checkpoint tensors already in memory (MONAI core or old
    /// GenerativeModels key names, no prefix), with the same strict fit as [`load`](Self::load).
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn from_checkpoint(
        checkpoint: Checkpoint,
        config: &DiffusionModelUNetConfig,
        dtype: DType,
    ) -> Result<Self> {
        config.validate()?;
        let checkpoint = checkpoint.rename(old_key_to_core);
        Ok(checkpoint.build(dtype, |vb| Self::new(config, vb))?)
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &DiffusionModelUNetConfig {
        &self.config
    }

    /// Predicts the noise (or velocity / sample, as trained) for `x` at `timesteps`.
    ///
    /// # Shapes
    /// - `x`: `[b, in_channels, d, h, w]`, every spatial size divisible by
    ///   [`spatial_divisor`](DiffusionModelUNetConfig::spatial_divisor) (`2^(levels−1)`);
    /// - `timesteps`: `[b]` (or `[1]`, shared by the batch), any numeric dtype;
    /// - `context`: `[b, tokens, cross_attention_dim]`, only for a model `with_conditioning`
    ///   (the brain bundle: `[b, 1, 4]`, the covariates). Without it the transformers attend
    ///   to the voxels themselves, as MONAI does, which needs `cross_attention_dim` equal to
    ///   their width; a model with `context_embedding` requires it;
    /// - `class_labels`: `[b]` (or `[1]`) integers in `0..num_class_embeds`, required exactly
    ///   when the model has `num_class_embeds`;
    /// - output: `[b, out_channels, d, h, w]`.
    ///
    /// # Errors
    /// [`UnetError::InputShape`], [`UnetError::Input`] or [`UnetError::ClassLabel`] for
    /// inputs that do not fit the model (checked before any computation); [`UnetError::Candle`]
    /// when a tensor operation fails (e.g. `x` on another dtype than the weights).
    pub fn forward(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: Option<&Tensor>,
        class_labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.check_inputs(x, timesteps, context, class_labels)?;
        let cfg = &self.config;

        // 1. time (and class, and context) embedding; every residual block uses silu(emb).
        let t_emb = timestep_embedding(timesteps, cfg.channels[0], 10000.0)?.to_dtype(x.dtype())?;
        let mut emb = self
            .time_embed
            .1
            .forward(&self.time_embed.0.forward(&t_emb)?.silu()?)?;
        if let (Some(embedding), Some(labels)) = (&self.class_embedding, class_labels) {
            let ids = labels.to_dtype(DType::U32)?;
            emb = emb.broadcast_add(&embedding.forward(&ids)?.to_dtype(x.dtype())?)?;
        }
        if let (Some(embedding), Some(context)) = (&self.context_embedding, context) {
            emb = emb.broadcast_add(&embedding.forward(&context.mean(1)?)?)?;
        }
        let emb_act = emb.silu()?;

        // 2. down, keeping the skip connections.
        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            h = block.forward(h, &emb_act, context, &mut skips)?;
        }
        // 3. middle, 4. up (skips popped last-in first-out).
        h = self.middle_block.forward(&h, &emb_act, context)?;
        for block in &self.up_blocks {
            h = block.forward(h, &emb_act, context, &mut skips)?;
        }
        // 5. out: GroupNorm, SiLU, convolution.
        Ok(self.out_conv.forward(&self.out_norm.forward_silu(&h)?)?)
    }

    /// Validates the inputs of [`forward`](Self::forward).
    fn check_inputs(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: Option<&Tensor>,
        class_labels: Option<&Tensor>,
    ) -> Result<()> {
        let cfg = &self.config;
        let div = cfg.spatial_divisor();
        let dims = x.dims();
        if dims.len() != 5
            || dims[1] != cfg.in_channels
            || dims[2..].iter().any(|&s| s == 0 || s % div != 0)
            || dims[0] == 0
        {
            return Err(UnetError::InputShape {
                input: "x",
                expected: format!(
                    "[batch, {}, d, h, w] with d, h, w positive multiples of {div}",
                    cfg.in_channels
                ),
                got: dims.to_vec(),
            });
        }
        let b = dims[0];
        let per_sample = |input: &'static str, t: &Tensor| {
            let d = t.dims();
            if d.len() != 1 || (d[0] != b && d[0] != 1) {
                return Err(UnetError::InputShape {
                    input,
                    expected: format!("[{b}] (one per sample) or [1]"),
                    got: d.to_vec(),
                });
            }
            Ok(())
        };
        per_sample("timesteps", timesteps)?;
        match (context, cfg.cross_attention_dim) {
            (Some(_), None) => {
                return Err(UnetError::Input {
                    input: "context",
                    reason: "model should have with_conditioning = True if context is provided"
                        .into(),
                })
            }
            (Some(c), Some(width)) => {
                let d = c.dims();
                if d.len() != 3 || d[0] != b || d[1] == 0 || d[2] != width {
                    return Err(UnetError::InputShape {
                        input: "context",
                        expected: format!("[{b}, tokens ≥ 1, {width}]"),
                        got: d.to_vec(),
                    });
                }
            }
            (None, Some(_)) if cfg.context_embedding => {
                return Err(UnetError::Input {
                    input: "context",
                    reason: "required by the model's context_embedding".into(),
                })
            }
            (None, Some(width)) => {
                if let Some(w) = self.transformer_widths.iter().find(|&&w| w != width) {
                    return Err(UnetError::Input {
                        input: "context",
                        reason: format!(
                            "required: without it the transformers attend to their own {w}-wide tokens, \
                             but their key/value projections take {width}-wide input"
                        ),
                    });
                }
            }
            (None, None) => {}
        }
        match (class_labels, cfg.num_class_embeds) {
            (None, Some(_)) => Err(UnetError::Input {
                input: "class_labels",
                reason: "class_labels should be provided when num_class_embeds > 0".into(),
            }),
            (Some(_), None) => Err(UnetError::Input {
                input: "class_labels",
                reason: "the model has no class embedding (num_class_embeds is None)".into(),
            }),
            (Some(labels), Some(n)) => {
                per_sample("class_labels", labels)?;
                if !labels.dtype().is_int() {
                    return Err(UnetError::Input {
                        input: "class_labels",
                        reason: format!("must be integers, got {:?}", labels.dtype()),
                    });
                }
                for label in labels.to_dtype(DType::I64)?.to_vec1::<i64>()? {
                    if label < 0 || label as u64 >= n as u64 {
                        return Err(UnetError::ClassLabel {
                            label,
                            num_class_embeds: n,
                        });
                    }
                }
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }
}

/// Maps an old MONAI GenerativeModels 0.2 key to its MONAI core name (what
/// `DiffusionModelUNet.load_old_state_dict` does), or `None` when the key is already a core
/// name:
///
/// - transformer attention output projections `…attn1.to_out.0.*` / `…attn2.to_out.0.*` →
///   `…attn1.out_proj.*` / `…attn2.out_proj.*` (the brain bundle's `model.pt`);
/// - self-attention blocks `X.to_q/to_k/to_v.*` → `X.attn.to_q/to_k/to_v.*` and
///   `X.proj_attn.*` → `X.attn.out_proj.*` (MONAI maps `proj_attn` to `out_proj`, although
///   GenerativeModels 0.2 created `proj_attn` without applying it);
/// - plain upsamplers `up_blocks.N.upsampler.conv.conv.*` →
///   `up_blocks.N.upsampler.postconv.conv.*`.
///
/// ```
/// use brain_ldm_unet::old_key_to_core;
/// assert_eq!(
///     old_key_to_core("middle_block.attention.transformer_blocks.0.attn2.to_out.0.bias").as_deref(),
///     Some("middle_block.attention.transformer_blocks.0.attn2.out_proj.bias"),
/// );
/// assert_eq!(
///     old_key_to_core("down_blocks.2.attentions.0.to_q.weight").as_deref(),
///     Some("down_blocks.2.attentions.0.attn.to_q.weight"),
/// );
/// assert_eq!(old_key_to_core("conv_in.conv.weight"), None);
/// ```
pub fn old_key_to_core(key: &str) -> Option<String> {
    let parts: Vec<&str> = key.split('.').collect();
    let n = parts.len();
    if n < 3 {
        return None;
    }
    let (owner, layer, param) = (parts[n - 3], parts[n - 2], parts[n - 1]);
    if !matches!(param, "weight" | "bias") {
        return None;
    }
    let head = parts[..n - 2].join(".");
    // `…attnK.to_out.0.param`
    if n >= 4 && parts[n - 3] == "to_out" && parts[n - 2] == "0" {
        let block = parts[n - 4];
        if matches!(block, "attn1" | "attn2") {
            return Some(format!("{}.out_proj.{param}", parts[..n - 3].join(".")));
        }
        return None;
    }
    let in_transformer = parts.contains(&"transformer_blocks");
    match layer {
        "to_q" | "to_k" | "to_v"
            if !in_transformer && !matches!(owner, "attn" | "attn1" | "attn2") =>
        {
            Some(format!("{head}.attn.{layer}.{param}"))
        }
        "proj_attn" if !in_transformer => Some(format!("{head}.attn.out_proj.{param}")),
        "conv" if owner == "conv" && n >= 4 && parts[n - 4] == "upsampler" => Some(format!(
            "{}.postconv.conv.{param}",
            parts[..n - 3].join(".")
        )),
        _ => None,
    }
}

/// Converts a UNet checkpoint (`.safetensors` or PyTorch `.pt`, MONAI core or old
/// GenerativeModels key names) into a `.safetensors` file under MONAI core names, after
/// checking that it fits `config`. The file is written to a temporary name and renamed, so
/// `dst` is either complete or untouched. Safetensors files load faster than pickles.
///
/// # Errors
/// As [`DiffusionModelUNet::load`], plus
/// [`CheckpointError::Write`](brain_ldm_nn::checkpoint::CheckpointError::Write).
///
/// ```no_run
/// use brain_ldm_unet::{convert_checkpoint, DiffusionModelUNetConfig};
/// convert_checkpoint("models/model.pt", "models/unet.safetensors", &DiffusionModelUNetConfig::brain_ldm())?;
/// # Ok::<(), brain_ldm_unet::UnetError>(())
/// ```
pub fn convert_checkpoint(
    src: impl AsRef<Path>,
    dst: impl AsRef<Path>,
    config: &DiffusionModelUNetConfig,
) -> Result<()> {
    config.validate()?;
    let checkpoint = Checkpoint::load(src, &Device::Cpu)?.rename(old_key_to_core);
    let dtype = checkpoint
        .tensors()
        .values()
        .next()
        .map_or(DType::F32, Tensor::dtype);
    checkpoint.build(dtype, |vb| DiffusionModelUNet::new(config, vb))?;
    checkpoint.save_safetensors(dst)?;
    Ok(())
}
