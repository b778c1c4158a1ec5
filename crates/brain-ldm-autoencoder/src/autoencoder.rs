//! MONAI's `AutoencoderKL`: encoder, decoder and the three 1×1×1 latent convolutions.

use crate::blocks::{AttentionBlock, Block, Norm, ResBlock, Streaming};
use crate::config::AutoencoderKLConfig;
use crate::error::{AutoencoderError, Result};
use brain_ldm_nn::checkpoint::Checkpoint;
use brain_ldm_nn::{conv3d_layer, Conv3d, Conv3dConfig};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::path::Path;

/// A list of blocks run one after the other (`encoder.blocks` / `decoder.blocks`).
#[derive(Debug, Clone)]
struct Blocks(Vec<Block>);

impl Blocks {
    fn forward(&self, mut x: Tensor, s: Option<&Streaming>) -> candle_core::Result<Tensor> {
        let mut i = 0;
        while i < self.0.len() {
            if let (Some(s), Some(next)) = (s, self.0.get(i + 1)) {
                if let Some(y) = self.0[i].forward_norm_conv(next, &x, s) {
                    x = y?;
                    i += 2;
                    continue;
                }
            }
            x = self.0[i].forward(x, s)?;
            i += 1;
        }
        Ok(x)
    }
}

fn encoder(
    cfg: &AutoencoderKLConfig,
    res: &[usize],
    vb: VarBuilder,
) -> candle_core::Result<Blocks> {
    let (g, eps) = (cfg.norm_num_groups, cfg.norm_eps);
    let ch = &cfg.channels;
    let attn = |c: usize, vb: VarBuilder| {
        AttentionBlock::new(c, g, eps, cfg.include_fc, cfg.use_combined_linear, vb)
            .map(|a| Block::Attention(Box::new(a)))
    };
    let mut blocks = Vec::new();
    let vb = vb.pp("blocks");
    blocks.push(Block::conv(cfg.in_channels, ch[0], vb.pp(0))?);
    let mut c_out = ch[0];
    for (level, &c) in ch.iter().enumerate() {
        let mut c_in = c_out;
        c_out = c;
        for _ in 0..res[level] {
            let i = blocks.len();
            blocks.push(Block::Res(Box::new(ResBlock::new(
                c_in,
                c_out,
                g,
                eps,
                vb.pp(i),
            )?)));
            c_in = c_out;
            if cfg.attention_levels[level] {
                let i = blocks.len();
                blocks.push(attn(c_in, vb.pp(i))?);
            }
        }
        if level + 1 < ch.len() {
            let i = blocks.len();
            blocks.push(Block::downsample(c_in, vb.pp(i))?);
        }
    }
    let last = ch[ch.len() - 1];
    if cfg.with_encoder_nonlocal_attn {
        let i = blocks.len();
        blocks.push(Block::Res(Box::new(ResBlock::new(
            last,
            last,
            g,
            eps,
            vb.pp(i),
        )?)));
        blocks.push(attn(last, vb.pp(i + 1))?);
        blocks.push(Block::Res(Box::new(ResBlock::new(
            last,
            last,
            g,
            eps,
            vb.pp(i + 2),
        )?)));
    }
    let i = blocks.len();
    blocks.push(Block::Norm(Norm::new(last, g, eps, vb.pp(i))?));
    blocks.push(Block::conv(last, cfg.latent_channels, vb.pp(i + 1))?);
    Ok(Blocks(blocks))
}

fn decoder(
    cfg: &AutoencoderKLConfig,
    res: &[usize],
    vb: VarBuilder,
) -> candle_core::Result<Blocks> {
    let (g, eps) = (cfg.norm_num_groups, cfg.norm_eps);
    let rev: Vec<usize> = cfg.channels.iter().rev().copied().collect();
    let attn = |c: usize, vb: VarBuilder| {
        AttentionBlock::new(c, g, eps, cfg.include_fc, cfg.use_combined_linear, vb)
            .map(|a| Block::Attention(Box::new(a)))
    };
    let vb = vb.pp("blocks");
    let mut blocks = vec![Block::conv(cfg.latent_channels, rev[0], vb.pp(0))?];
    if cfg.with_decoder_nonlocal_attn {
        blocks.push(Block::Res(Box::new(ResBlock::new(
            rev[0],
            rev[0],
            g,
            eps,
            vb.pp(1),
        )?)));
        blocks.push(attn(rev[0], vb.pp(2))?);
        blocks.push(Block::Res(Box::new(ResBlock::new(
            rev[0],
            rev[0],
            g,
            eps,
            vb.pp(3),
        )?)));
    }
    let levels = rev.len();
    let mut c_out = rev[0];
    for (i, &c) in rev.iter().enumerate() {
        let level = levels - 1 - i;
        let mut c_in = c_out;
        c_out = c;
        for _ in 0..res[level] {
            let n = blocks.len();
            blocks.push(Block::Res(Box::new(ResBlock::new(
                c_in,
                c_out,
                g,
                eps,
                vb.pp(n),
            )?)));
            c_in = c_out;
            if cfg.attention_levels[level] {
                let n = blocks.len();
                blocks.push(attn(c_in, vb.pp(n))?);
            }
        }
        if i + 1 < levels {
            let n = blocks.len();
            blocks.push(Block::upsample(c_in, cfg.use_convtranspose, vb.pp(n))?);
        }
    }
    let n = blocks.len();
    blocks.push(Block::Norm(Norm::new(c_out, g, eps, vb.pp(n))?));
    blocks.push(Block::conv(c_out, cfg.out_channels, vb.pp(n + 1))?);
    Ok(Blocks(blocks))
}

/// MONAI's 3D `AutoencoderKL` (KL-regularised autoencoder of latent diffusion models).
///
/// Weights load by MONAI's state-dict names ([`AutoencoderKL::new`] on any
/// [`VarBuilder`], [`AutoencoderKL::load`] for a file, including the public brain-LDM
/// bundle's `autoencoder.pt` under its old GenerativeModels 0.2 names).
///
/// # Memory
/// In inference, layers whose activations reach [`Streaming::min_elements`] run in depth
/// slabs (see [`AutoencoderKL::with_streaming`]), so decoding a 3×20×28×20 latent to
/// 160×224×160 holds about one layer's input and output at a time. Those paths write into
/// tensors in place and carry no gradient: for training on large volumes, turn streaming off.
///
/// # Shapes
/// Images `[b, in_channels, d, h, w]`; latents `[b, latent_channels, d/f, h/f, w/f]` with
/// `f = 2^(levels − 1)` (for sizes divisible by `f`).
///
/// ```
/// use brain_ldm_autoencoder::{AutoencoderKL, AutoencoderKLConfig, NumResBlocks};
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
///
/// let cfg = AutoencoderKLConfig {
///     channels: vec![8, 8],
///     attention_levels: vec![false, false],
///     num_res_blocks: NumResBlocks::All(1),
///     norm_num_groups: 4,
///     with_encoder_nonlocal_attn: false,
///     with_decoder_nonlocal_attn: false,
///     ..AutoencoderKLConfig::default()
/// };
/// let vars = VarMap::new();
/// let ae = AutoencoderKL::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu))?;
/// let x = Tensor::zeros((1, 1, 8, 8, 8), DType::F32, &Device::Cpu)?;
/// let (mu, sigma) = ae.encode(&x)?;
/// assert_eq!(mu.dims(), &[1, 3, 4, 4, 4]);
/// let z = ae.sample(&mu, &sigma, &mu.randn_like(0.0, 1.0)?)?;
/// assert_eq!(ae.decode(&z)?.dims(), &[1, 1, 8, 8, 8]);
/// # Ok::<(), brain_ldm_autoencoder::AutoencoderError>(())
/// ```
#[derive(Debug, Clone)]
pub struct AutoencoderKL {
    config: AutoencoderKLConfig,
    encoder: Blocks,
    decoder: Blocks,
    quant_conv_mu: Conv3d,
    quant_conv_log_sigma: Conv3d,
    post_quant_conv: Conv3d,
    streaming: Option<Streaming>,
}

fn latent_conv(c: usize, vb: VarBuilder) -> candle_core::Result<Conv3d> {
    conv3d_layer(c, c, 1, Conv3dConfig::new(0, 1), vb.pp("conv"))
}

impl AutoencoderKL {
    /// Builds the model from `vb`, whose keys are MONAI core's state-dict names
    /// (`encoder.blocks.0.conv.weight`, …, `post_quant_conv.conv.bias`). On a `VarMap`
    /// this initialises a trainable model.
    ///
    /// # Errors
    /// An invalid configuration ([`AutoencoderError::InvalidConfig`] wrapped in a candle
    /// error), or a missing or mis-shaped weight (the candle error names the key).
    pub fn new(config: &AutoencoderKLConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        config.validate().map_err(candle_core::Error::wrap)?;
        let res = config
            .res_blocks_per_level()
            .map_err(candle_core::Error::wrap)?;
        let l = config.latent_channels;
        Ok(Self {
            encoder: encoder(config, &res, vb.pp("encoder"))?,
            decoder: decoder(config, &res, vb.pp("decoder"))?,
            quant_conv_mu: latent_conv(l, vb.pp("quant_conv_mu"))?,
            quant_conv_log_sigma: latent_conv(l, vb.pp("quant_conv_log_sigma"))?,
            post_quant_conv: latent_conv(l, vb.pp("post_quant_conv"))?,
            config: config.clone(),
            streaming: Some(Streaming::default()),
        })
    }

    /// Loads weights from a checkpoint file: `.safetensors` or a PyTorch pickled state dict
    /// (`.pt`, `.pth`, `.ckpt`), under MONAI core's names or the old GenerativeModels 0.2
    /// names (converted by [`upgrade_old_keys`]), onto `device` in f32.
    ///
    /// # Errors
    /// [`AutoencoderError::InvalidConfig`]; [`AutoencoderError::Checkpoint`] when the file
    /// cannot be read, or does not fit the configuration (one error listing every missing,
    /// unexpected and mis-shaped key).
    ///
    /// ```no_run
    /// use brain_ldm_autoencoder::{AutoencoderKL, AutoencoderKLConfig};
    /// let ae = AutoencoderKL::load(
    ///     "models/autoencoder.pt",
    ///     &AutoencoderKLConfig::brain_ldm(),
    ///     &candle_core::Device::Cpu,
    /// )?;
    /// # Ok::<(), brain_ldm_autoencoder::AutoencoderError>(())
    /// ```
    pub fn load(
        path: impl AsRef<Path>,
        config: &AutoencoderKLConfig,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let checkpoint = Checkpoint::load(path, device)?;
        Self::from_checkpoint(&checkpoint, config, DType::F32)
    }

    /// Builds the model from checkpoint tensors (old names upgraded first), checking that
    /// every key is used with the right shape.
    ///
    /// # Errors
    /// As [`AutoencoderKL::load`].
    pub fn from_checkpoint(
        checkpoint: &Checkpoint,
        config: &AutoencoderKLConfig,
        dtype: DType,
    ) -> Result<Self> {
        config.validate()?;
        let upgraded = upgrade_old_keys(checkpoint.clone(), config)?;
        Ok(upgraded.build(dtype, |vb| Self::new(config, vb))?)
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &AutoencoderKLConfig {
        &self.config
    }

    /// Sets when inference runs in memory-bounded depth slabs (`None`: never, which keeps
    /// every operation differentiable). The default is [`Streaming::default`].
    pub fn with_streaming(mut self, streaming: Option<Streaming>) -> Self {
        self.streaming = streaming;
        self
    }

    fn check_input(&self, x: &Tensor, what: &'static str, channels: usize) -> Result<()> {
        if x.rank() != 5 || x.dim(1)? != channels || x.dims().contains(&0) {
            return Err(AutoencoderError::InputShape {
                what,
                expected: format!("[batch, {channels}, depth, height, width], no empty axis"),
                got: x.dims().to_vec(),
            });
        }
        Ok(())
    }

    /// Encodes images into the latent mean and standard deviation:
    /// `mu = quant_conv_mu(h)`, `sigma = exp(clamp(quant_conv_log_sigma(h), −30, 20) / 2)`.
    ///
    /// # Errors
    /// [`AutoencoderError::InputShape`] when `x` is not `[b, in_channels, d, h, w]`.
    pub fn encode(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check_input(x, "image", self.config.in_channels)?;
        let h = self.encoder.forward(x.clone(), self.streaming.as_ref())?;
        let mu = self.quant_conv_mu.forward(&h)?;
        let log_var = self
            .quant_conv_log_sigma
            .forward(&h)?
            .clamp(-30f32, 20f32)?;
        let sigma = (log_var / 2.0)?.exp()?;
        Ok((mu, sigma))
    }

    /// A latent sample `mu + noise · sigma` (MONAI's `sampling`, with the Gaussian noise
    /// passed in so that results are reproducible).
    ///
    /// # Errors
    /// [`AutoencoderError::InputShape`] when the three shapes differ.
    pub fn sample(&self, mu: &Tensor, sigma: &Tensor, noise: &Tensor) -> Result<Tensor> {
        for (what, t) in [("sigma", sigma), ("noise", noise)] {
            if t.dims() != mu.dims() {
                return Err(AutoencoderError::InputShape {
                    what,
                    expected: format!("the shape of mu {:?}", mu.dims()),
                    got: t.dims().to_vec(),
                });
            }
        }
        Ok((mu + noise * sigma)?)
    }

    /// Decodes latents into images: `decoder(post_quant_conv(z))`.
    ///
    /// # Errors
    /// [`AutoencoderError::InputShape`] when `z` is not `[b, latent_channels, d, h, w]`.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.check_input(z, "latent", self.config.latent_channels)?;
        let h = self.post_quant_conv.forward(z)?;
        Ok(self.decoder.forward(h, self.streaming.as_ref())?)
    }

    /// `decode(encode(x).mu)`: MONAI's `reconstruct`.
    ///
    /// # Errors
    /// As [`AutoencoderKL::encode`].
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        let (mu, _) = self.encode(x)?;
        self.decode(&mu)
    }

    /// MONAI's `forward`: `(decode(sample(mu, sigma, noise)), mu, sigma)`.
    ///
    /// # Errors
    /// As [`AutoencoderKL::encode`] and [`AutoencoderKL::sample`].
    pub fn forward(&self, x: &Tensor, noise: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (mu, sigma) = self.encode(x)?;
        let z = self.sample(&mu, &sigma, noise)?;
        Ok((self.decode(&z)?, mu, sigma))
    }

    /// The diffusion model's input: a latent sample of `x` (MONAI's
    /// `encode_stage_2_inputs`, with the noise passed in).
    ///
    /// # Errors
    /// As [`AutoencoderKL::forward`].
    pub fn encode_stage_2_inputs(&self, x: &Tensor, noise: &Tensor) -> Result<Tensor> {
        let (mu, sigma) = self.encode(x)?;
        self.sample(&mu, &sigma, noise)
    }

    /// The image of a diffusion model's output latent (MONAI's `decode_stage_2_outputs`).
    ///
    /// # Errors
    /// As [`AutoencoderKL::decode`].
    pub fn decode_stage_2_outputs(&self, z: &Tensor) -> Result<Tensor> {
        self.decode(z)
    }
}

/// Renames a GenerativeModels 0.2 autoencoder state dict to MONAI core's names, as MONAI's
/// `AutoencoderKL.load_old_state_dict` does; a checkpoint already in MONAI core's names is
/// returned unchanged.
///
/// * decoder upsampling convolutions `decoder.blocks.N.conv.conv.*` →
///   `decoder.blocks.N.postconv.conv.*` (in MONAI core no other decoder key has that form);
/// * attention blocks `X.to_q/to_k/to_v.*` → `X.attn.to_q/to_k/to_v.*`; the old code never
///   applied its `X.proj_attn`, so it is dropped and `X.attn.out_proj` becomes the identity
///   (weight `I`, bias 0) when `config.include_fc`.
///
/// # Errors
/// [`AutoencoderError::Candle`] if the identity projection cannot be created.
pub fn upgrade_old_keys(
    checkpoint: Checkpoint,
    config: &AutoencoderKLConfig,
) -> Result<Checkpoint> {
    let file = checkpoint.file().to_string();
    let mut out: HashMap<String, Tensor> = HashMap::new();
    let mut old_attention: Vec<(String, Tensor)> = Vec::new();
    for (key, tensor) in checkpoint.tensors() {
        let parts: Vec<&str> = key.split('.').collect();
        let in_blocks = parts.len() >= 4
            && (parts[0] == "encoder" || parts[0] == "decoder")
            && parts[1] == "blocks"
            && parts[2].parse::<usize>().is_ok();
        let new_key = if in_blocks
            && parts[0] == "decoder"
            && parts[3] == "conv"
            && parts.get(4) == Some(&"conv")
        {
            format!(
                "decoder.blocks.{}.postconv.{}",
                parts[2],
                parts[4..].join(".")
            )
        } else if in_blocks && matches!(parts[3], "to_q" | "to_k" | "to_v") {
            let prefix = parts[..3].join(".");
            if parts[3] == "to_q" && parts.get(4) == Some(&"weight") {
                old_attention.push((prefix.clone(), tensor.clone()));
            }
            format!("{prefix}.attn.{}", parts[3..].join("."))
        } else if in_blocks && parts[3] == "proj_attn" {
            continue;
        } else {
            key.clone()
        };
        out.insert(new_key, tensor.clone());
    }
    if config.include_fc {
        for (prefix, to_q) in old_attention {
            let (c, _) = to_q.dims2()?;
            let eye = Tensor::eye(c, to_q.dtype(), to_q.device())?;
            out.entry(format!("{prefix}.attn.out_proj.weight"))
                .or_insert(eye);
            let zeros = Tensor::zeros(c, to_q.dtype(), to_q.device())?;
            out.entry(format!("{prefix}.attn.out_proj.bias"))
                .or_insert(zeros);
        }
    }
    Ok(Checkpoint::from_tensors(out, file))
}
