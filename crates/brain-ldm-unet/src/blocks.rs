//! The UNet's building blocks, each loading from MONAI's state-dict paths.

use brain_ldm_nn::{
    attention, conv3d_layer, group_norm, layer_norm, linear, linear_no_bias, ops, AttentionConfig,
    Conv3d, Conv3dConfig, GroupNorm, LayerNorm, Linear,
};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// GroupNorm settings shared by every block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Norm {
    pub groups: usize,
    pub eps: f64,
}

/// LayerNorm epsilon of the transformer blocks (`torch.nn.LayerNorm`'s default).
const LAYER_NORM_EPS: f64 = 1e-5;

/// A MONAI `Convolution(conv_only=True)`: the `torch.nn.Conv3d` lives in a `conv` child.
pub(crate) fn conv(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    padding: usize,
    stride: usize,
    vb: VarBuilder,
) -> Result<Conv3d> {
    conv3d_layer(
        c_in,
        c_out,
        kernel,
        Conv3dConfig::new(padding, stride),
        vb.pp("conv"),
    )
}

/// A convolution that MONAI wraps in `zero_module` (weights and bias start at zero when
/// built on a `VarMap`), kernel 3 and padding 1 unless `kernel` is 1.
pub(crate) fn zero_conv(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    vb: VarBuilder,
) -> Result<Conv3d> {
    let vb = vb.pp("conv");
    let weight = vb.get_with_hints(
        (c_out, c_in, kernel, kernel, kernel),
        "weight",
        Init::Const(0.0),
    )?;
    let bias = vb.get_with_hints(c_out, "bias", Init::Const(0.0))?;
    Ok(Conv3d::new(
        weight,
        Some(bias),
        Conv3dConfig::new(kernel / 2, 1),
    ))
}

/// Spatial resampling inside a residual block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resample {
    None,
    /// Nearest-neighbour ×2 (MONAI `up=True`).
    Up,
    /// Average pooling 2 (MONAI `down=True`).
    Down,
}

/// MONAI `DiffusionUNetResnetBlock`.
#[derive(Debug, Clone)]
pub(crate) struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv3d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv3d,
    skip_connection: Option<Conv3d>,
    resample: Resample,
}

impl ResnetBlock {
    pub fn new(
        c_in: usize,
        c_out: usize,
        temb: usize,
        resample: Resample,
        norm: Norm,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            norm1: group_norm(norm.groups, c_in, norm.eps, vb.pp("norm1"))?,
            conv1: conv(c_in, c_out, 3, 1, 1, vb.pp("conv1"))?,
            time_emb_proj: linear(temb, c_out, vb.pp("time_emb_proj"))?,
            norm2: group_norm(norm.groups, c_out, norm.eps, vb.pp("norm2"))?,
            conv2: zero_conv(c_out, c_out, 3, vb.pp("conv2"))?,
            skip_connection: if c_in == c_out {
                None
            } else {
                Some(conv(c_in, c_out, 1, 0, 1, vb.pp("skip_connection"))?)
            },
            resample,
        })
    }

    /// `emb_act` is `silu(time embedding)`, `[b or 1, temb]`.
    pub fn forward(&self, x: &Tensor, emb_act: &Tensor) -> Result<Tensor> {
        let h = self.norm1.forward_silu(x)?;
        let (x, h) = match self.resample {
            Resample::None => (x.clone(), h),
            Resample::Up => (
                ops::upsample_nearest3d(x, [2, 2, 2])?,
                ops::upsample_nearest3d(&h, [2, 2, 2])?,
            ),
            Resample::Down => (ops::avg_pool3d(x, 2)?, ops::avg_pool3d(&h, 2)?),
        };
        // MONAI adds the projected embedding after conv1's bias; the bias folded into the
        // embedding first makes one pass over the volume instead of two.
        let mut temb = self.time_emb_proj.forward(emb_act)?;
        if let Some(bias) = self.conv1.bias() {
            temb = temb.broadcast_add(bias)?;
        }
        if temb.dim(0)? != h.dim(0)? {
            // One embedding for the whole batch: `[1, c]` → `[c]`.
            temb = temb.squeeze(0)?;
        }
        let h = ops::conv3d(&h, self.conv1.weight(), self.conv1.config())?;
        let h = ops::add_channel_bias(&h, &temb)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        match &self.skip_connection {
            None => x + h,
            Some(skip) => skip.forward(&x)? + h,
        }
    }
}

/// q, k, v projections of an attention layer.
#[derive(Debug, Clone)]
enum Projections {
    /// `to_q`, `to_k`, `to_v`.
    Separate { q: Linear, k: Linear, v: Linear },
    /// One `qkv` layer whose output is `[q | k | v]` (MONAI `use_combined_linear`).
    Combined { qkv: Linear, inner: usize },
}

/// Settings of an attention layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnSpec {
    /// Width of the queries' input.
    pub query_dim: usize,
    /// Width of the keys' and values' input (the context's width for cross-attention).
    pub context_dim: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub qkv_bias: bool,
    /// Has an output projection `out_proj`.
    pub include_fc: bool,
    /// One `qkv` layer (self-attention only).
    pub combined: bool,
    pub upcast: bool,
}

/// MONAI `SABlock` / `CrossAttentionBlock` (evaluation mode: no dropout).
#[derive(Debug, Clone)]
pub(crate) struct Attention {
    projections: Projections,
    out_proj: Option<Linear>,
    config: AttentionConfig,
}

impl Attention {
    pub fn new(spec: AttnSpec, vb: VarBuilder) -> Result<Self> {
        let inner = spec.heads * spec.head_dim;
        let lin = |i: usize, o: usize, vb: VarBuilder| {
            if spec.qkv_bias {
                linear(i, o, vb)
            } else {
                linear_no_bias(i, o, vb)
            }
        };
        let projections = if spec.combined {
            Projections::Combined {
                qkv: lin(spec.query_dim, 3 * inner, vb.pp("qkv"))?,
                inner,
            }
        } else {
            Projections::Separate {
                q: lin(spec.query_dim, inner, vb.pp("to_q"))?,
                k: lin(spec.context_dim, inner, vb.pp("to_k"))?,
                v: lin(spec.context_dim, inner, vb.pp("to_v"))?,
            }
        };
        let out_proj = if spec.include_fc {
            Some(linear(inner, spec.query_dim, vb.pp("out_proj"))?)
        } else {
            None
        };
        let mut config = AttentionConfig::new(spec.heads, spec.head_dim);
        config.upcast = spec.upcast;
        Ok(Self {
            projections,
            out_proj,
            config,
        })
    }

    /// Whether any weight takes part in autograd (built on a `VarMap`).
    fn tracks_weights(&self) -> bool {
        let lin = |l: &Linear| l.weight().track_op() || l.bias().is_some_and(|b| b.track_op());
        let proj = match &self.projections {
            Projections::Separate { q, k, v } => lin(q) || lin(k) || lin(v),
            Projections::Combined { qkv, .. } => lin(qkv),
        };
        proj || self.out_proj.as_ref().is_some_and(lin)
    }

    /// Attention of `x` (`[b, n, query_dim]`) to `context` (`[b, m, context_dim]`; `x` itself
    /// when `None`).
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let kv = context.unwrap_or(x);
        let out = match &self.projections {
            Projections::Separate { q, k, v } => {
                if kv.dim(1)? == 1 && !x.track_op() && !kv.track_op() && !self.tracks_weights() {
                    // One key: the softmax is exactly 1, every query receives the value.
                    // (Skipped under autograd so that to_q/to_k still get their zero gradient.)
                    let v = v.forward(kv)?;
                    let out = match &self.out_proj {
                        Some(p) => p.forward(&v)?,
                        None => v,
                    };
                    let (b, n, _) = x.dims3()?;
                    let c = out.dim(2)?;
                    return out.broadcast_as((b, n, c))?.contiguous();
                }
                let (q, k, v) = (q.forward(x)?, k.forward(kv)?, v.forward(kv)?);
                attention(&q, &k, &v, &self.config)?
            }
            Projections::Combined { qkv, inner } => {
                let qkv = qkv.forward(x)?;
                let q = qkv.narrow(2, 0, *inner)?;
                let k = qkv.narrow(2, *inner, *inner)?;
                let v = qkv.narrow(2, 2 * inner, *inner)?;
                attention(&q, &k, &v, &self.config)?
            }
        };
        match &self.out_proj {
            Some(p) => p.forward(&out),
            None => Ok(out),
        }
    }
}

/// Flattens `[b, c, d, h, w]` to tokens `[b, d·h·w, c]`.
fn to_tokens(x: &Tensor) -> Result<Tensor> {
    let (b, c, d, h, w) = x.dims5()?;
    x.reshape((b, c, d * h * w))?.transpose(1, 2)?.contiguous()
}

/// Tokens `[b, d·h·w, c]` back to `[b, c, d, h, w]`.
fn from_tokens(t: &Tensor, spatial: (usize, usize, usize)) -> Result<Tensor> {
    let (b, _, c) = t.dims3()?;
    t.transpose(1, 2)?
        .contiguous()?
        .reshape((b, c, spatial.0, spatial.1, spatial.2))
}

/// MONAI `SpatialAttentionBlock`: GroupNorm, self-attention over voxels, residual.
#[derive(Debug, Clone)]
pub(crate) struct SpatialAttentionBlock {
    norm: GroupNorm,
    attn: Attention,
}

impl SpatialAttentionBlock {
    pub fn new(
        channels: usize,
        head_channels: usize,
        include_fc: bool,
        combined: bool,
        norm: Norm,
        vb: VarBuilder,
    ) -> Result<Self> {
        let spec = AttnSpec {
            query_dim: channels,
            context_dim: channels,
            heads: channels / head_channels,
            head_dim: head_channels,
            qkv_bias: true,
            include_fc,
            combined,
            upcast: false,
        };
        Ok(Self {
            norm: group_norm(norm.groups, channels, norm.eps, vb.pp("norm"))?,
            attn: Attention::new(spec, vb.pp("attn"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, d, h, w) = x.dims5()?;
        let tokens = to_tokens(&self.norm.forward(x)?)?;
        let y = self.attn.forward(&tokens, None)?;
        from_tokens(&y, (d, h, w))? + x
    }
}

/// MONAI `DiffusionUNetTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward.
#[derive(Debug, Clone)]
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    linear1: Linear,
    linear2: Linear,
}

/// Settings of a spatial transformer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TransformerSpec {
    pub channels: usize,
    pub head_channels: usize,
    pub layers: usize,
    pub context_dim: usize,
    pub upcast: bool,
    pub include_fc: bool,
    pub combined: bool,
}

impl TransformerSpec {
    /// `(channels / head_channels) · head_channels`, the width inside the transformer.
    pub fn inner_dim(&self) -> usize {
        (self.channels / self.head_channels) * self.head_channels
    }
}

impl TransformerBlock {
    fn new(spec: &TransformerSpec, vb: VarBuilder) -> Result<Self> {
        let inner = spec.inner_dim();
        let heads = spec.channels / spec.head_channels;
        let attn = |context_dim: usize, include_fc: bool, combined: bool| AttnSpec {
            query_dim: inner,
            context_dim,
            heads,
            head_dim: spec.head_channels,
            qkv_bias: false,
            include_fc,
            combined,
            upcast: spec.upcast,
        };
        let ff = vb.pp("ff");
        Ok(Self {
            norm1: layer_norm(inner, LAYER_NORM_EPS, vb.pp("norm1"))?,
            attn1: Attention::new(attn(inner, spec.include_fc, spec.combined), vb.pp("attn1"))?,
            norm2: layer_norm(inner, LAYER_NORM_EPS, vb.pp("norm2"))?,
            attn2: Attention::new(attn(spec.context_dim, true, false), vb.pp("attn2"))?,
            norm3: layer_norm(inner, LAYER_NORM_EPS, vb.pp("norm3"))?,
            linear1: linear(inner, 8 * inner, ff.pp("linear1"))?,
            linear2: linear(4 * inner, inner, ff.pp("linear2"))?,
        })
    }

    fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None)? + x)?;
        let a2 = self.attn2.forward(&self.norm2.forward(&x)?, context)?;
        let x = (a2 + x)?;
        let ff = self.linear2.forward(&ops::geglu(
            &self.linear1.forward(&self.norm3.forward(&x)?)?,
        )?)?;
        ff + x
    }
}

/// MONAI `SpatialTransformer`: GroupNorm, 1×1×1 projection in, transformer blocks over the
/// voxels, 1×1×1 projection out, residual.
#[derive(Debug, Clone)]
pub(crate) struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Conv3d,
    blocks: Vec<TransformerBlock>,
    proj_out: Conv3d,
}

impl SpatialTransformer {
    pub fn new(spec: &TransformerSpec, norm: Norm, vb: VarBuilder) -> Result<Self> {
        let inner = spec.inner_dim();
        let tb = vb.pp("transformer_blocks");
        Ok(Self {
            norm: group_norm(norm.groups, spec.channels, norm.eps, vb.pp("norm"))?,
            proj_in: conv(spec.channels, inner, 1, 0, 1, vb.pp("proj_in"))?,
            blocks: (0..spec.layers)
                .map(|i| TransformerBlock::new(spec, tb.pp(i)))
                .collect::<Result<_>>()?,
            proj_out: zero_conv(inner, spec.channels, 1, vb.pp("proj_out"))?,
        })
    }

    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let (_, _, d, h, w) = x.dims5()?;
        let h0 = self.proj_in.forward(&self.norm.forward(x)?)?;
        let mut t = to_tokens(&h0)?;
        for block in &self.blocks {
            t = block.forward(&t, context)?;
        }
        self.proj_out.forward(&from_tokens(&t, (d, h, w))?)? + x
    }
}

/// The attention after each residual block of a level (or in the middle block).
#[derive(Debug, Clone)]
pub(crate) enum AttentionBlock {
    SelfAttention(SpatialAttentionBlock),
    Transformer(SpatialTransformer),
}

impl AttentionBlock {
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        match self {
            AttentionBlock::SelfAttention(a) => a.forward(x),
            AttentionBlock::Transformer(t) => t.forward(x, context),
        }
    }
}

/// How a down block halves the resolution.
#[derive(Debug, Clone)]
pub(crate) enum Downsampler {
    /// A residual block with average pooling (`resblock_updown`).
    Resnet(Box<ResnetBlock>),
    /// A 3³ convolution with stride 2 and padding 1 (`downsampler.op.conv`).
    Conv(Conv3d),
}

/// How an up block doubles the resolution.
#[derive(Debug, Clone)]
pub(crate) enum Upsampler {
    /// A residual block with nearest upsampling (`resblock_updown`).
    Resnet(Box<ResnetBlock>),
    /// Nearest ×2 then a 3³ convolution (`upsampler.postconv.conv`).
    Conv(Conv3d),
}

/// One level of the down path: residual blocks (each followed by attention when the level
/// has it) and an optional downsampler.
#[derive(Debug, Clone)]
pub(crate) struct DownBlock {
    pub resnets: Vec<ResnetBlock>,
    pub attentions: Vec<AttentionBlock>,
    pub downsampler: Option<Downsampler>,
}

impl DownBlock {
    /// Runs the level; pushes every output MONAI keeps for the skip connections.
    pub fn forward(
        &self,
        mut h: Tensor,
        emb_act: &Tensor,
        context: Option<&Tensor>,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(&h, emb_act)?;
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(&h, context)?;
            }
            skips.push(h.clone());
        }
        if let Some(down) = &self.downsampler {
            h = match down {
                Downsampler::Resnet(r) => r.forward(&h, emb_act)?,
                Downsampler::Conv(c) => c.forward(&h)?,
            };
            skips.push(h.clone());
        }
        Ok(h)
    }
}

/// The middle block: residual block, attention, residual block.
#[derive(Debug, Clone)]
pub(crate) struct MidBlock {
    pub resnet_1: ResnetBlock,
    pub attention: AttentionBlock,
    pub resnet_2: ResnetBlock,
}

impl MidBlock {
    pub fn forward(
        &self,
        h: &Tensor,
        emb_act: &Tensor,
        context: Option<&Tensor>,
    ) -> Result<Tensor> {
        let h = self.resnet_1.forward(h, emb_act)?;
        let h = self.attention.forward(&h, context)?;
        self.resnet_2.forward(&h, emb_act)
    }
}

/// One level of the up path: residual blocks over `cat([h, skip], 1)` (skips popped last-in
/// first-out), attention when the level has it, and an optional upsampler.
#[derive(Debug, Clone)]
pub(crate) struct UpBlock {
    pub resnets: Vec<ResnetBlock>,
    pub attentions: Vec<AttentionBlock>,
    pub upsampler: Option<Upsampler>,
}

impl UpBlock {
    pub fn forward(
        &self,
        mut h: Tensor,
        emb_act: &Tensor,
        context: Option<&Tensor>,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .ok_or_else(|| candle_core::Error::Msg("UNet skip connections exhausted".into()))?;
            h = resnet.forward(&ops::concat_channels(&h, &skip)?, emb_act)?;
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(&h, context)?;
            }
        }
        if let Some(up) = &self.upsampler {
            h = match up {
                Upsampler::Resnet(r) => r.forward(&h, emb_act)?,
                Upsampler::Conv(c) => c.forward(&ops::upsample_nearest3d(&h, [2, 2, 2])?)?,
            };
        }
        Ok(h)
    }
}
