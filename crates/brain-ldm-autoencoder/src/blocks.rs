//! The blocks of the encoder and decoder, loaded under MONAI's state-dict names.

use crate::stream::{conv_slabs, rows_per_slab, GroupStats, Target};
use brain_ldm_nn::{
    attention, conv3d_layer, conv_transpose3d_layer, linear, ops, AttentionConfig, Conv3d,
    Conv3dConfig, ConvTranspose3d, ConvTranspose3dConfig, GroupNorm, Linear,
};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// When inference runs the large layers in depth slabs (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streaming {
    /// A layer whose input or output holds at least this many elements runs in slabs.
    pub min_elements: usize,
    /// Elements per slab of input (rounded to a multiple of 4 depth rows, at least 4).
    pub slab_elements: usize,
}

impl Default for Streaming {
    /// Layers of 2²⁵ elements (128 MiB in f32) or more, in slabs of about 2²⁴ elements (8
    /// depth rows of 64 channels at 160×224×160: twice 2²³'s 4 rows, so each slab's two halo
    /// rows are normalised for twice the output; the same peak memory, docs/benchmarks.md).
    fn default() -> Self {
        Self {
            min_elements: 1 << 25,
            slab_elements: 1 << 24,
        }
    }
}

impl Streaming {
    /// Whether a layer with these input and output shapes runs in slabs.
    fn applies(&self, input: &[usize], output_elements: usize) -> bool {
        input.len() == 5
            && input.iter().product::<usize>().max(output_elements) >= self.min_elements
    }
}

/// A GroupNorm that keeps its parameters for slab-wise application.
#[derive(Debug, Clone)]
pub(crate) struct Norm {
    norm: GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl Norm {
    pub(crate) fn new(channels: usize, groups: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?;
        let norm = GroupNorm::new(weight.clone(), bias.clone(), groups, eps)?;
        Ok(Self {
            norm,
            weight,
            bias,
            groups,
            eps,
        })
    }

    fn stats(&self, x: &Tensor, s: &Streaming) -> Result<GroupStats> {
        GroupStats::compute(&self.norm, x, self.groups, self.eps, s.slab_elements)
    }

    fn apply_slab(&self, stats: &GroupStats, slab: &Tensor, silu: bool) -> Result<Tensor> {
        stats.apply(&self.norm, slab, &self.weight, &self.bias, silu)
    }
}

fn conv3(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Conv3d> {
    conv3d_layer(c_in, c_out, 3, Conv3dConfig::new(1, 1), vb.pp("conv"))
}

fn conv1(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Conv3d> {
    conv3d_layer(c_in, c_out, 1, Conv3dConfig::new(0, 1), vb.pp("conv"))
}

/// A convolution run in slabs into a fresh output.
fn conv_streamed(
    conv: &Conv3d,
    x: &Tensor,
    input: &dyn Fn(usize, usize) -> Result<Tensor>,
    in_depth: usize,
    out_dims: (usize, usize, usize, usize, usize),
    s: &Streaming,
) -> Result<Tensor> {
    let out = Tensor::zeros(out_dims, x.dtype(), x.device())?;
    let row = out_dims.1.max(x.dim(1)?) * out_dims.3 * out_dims.4;
    let rows = rows_per_slab(row, s.slab_elements, out_dims.2);
    conv_slabs(conv, in_depth, input, None, Target::Fresh(&out), rows)?;
    Ok(out)
}

/// Output shape of a convolution on `x`.
fn conv_out_dims(conv: &Conv3d, x: &Tensor) -> Result<(usize, usize, usize, usize, usize)> {
    let (b, _, d, h, w) = x.dims5()?;
    let k = conv.weight().dims();
    let cfg = conv.config();
    let size = |n: usize, axis: usize| {
        let (pb, pa) = cfg.padding[axis];
        (n + pb + pa).saturating_sub(k[2 + axis]) / cfg.stride[axis] + 1
    };
    Ok((b, k[0], size(d, 0), size(h, 1), size(w, 2)))
}

/// A convolution applied to `x`, in slabs when it is large.
fn conv_forward(conv: &Conv3d, x: &Tensor, s: Option<&Streaming>) -> Result<Tensor> {
    match s {
        Some(s) if x.rank() == 5 => {
            let out = conv_out_dims(conv, x)?;
            if !s.applies(x.dims(), out.0 * out.1 * out.2 * out.3 * out.4) {
                return conv.forward(x);
            }
            let input = |a: usize, e: usize| x.narrow(2, a, e - a);
            conv_streamed(conv, x, &input, x.dim(2)?, out, s)
        }
        _ => conv.forward(x),
    }
}

/// MONAI's `AEKLResBlock`: `nin_shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))))))`.
#[derive(Debug, Clone)]
pub(crate) struct ResBlock {
    norm1: Norm,
    conv1: Conv3d,
    norm2: Norm,
    conv2: Conv3d,
    nin_shortcut: Option<Conv3d>,
}

impl ResBlock {
    pub(crate) fn new(
        c_in: usize,
        c_out: usize,
        groups: usize,
        eps: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            norm1: Norm::new(c_in, groups, eps, vb.pp("norm1"))?,
            conv1: conv3(c_in, c_out, vb.pp("conv1"))?,
            norm2: Norm::new(c_out, groups, eps, vb.pp("norm2"))?,
            conv2: conv3(c_out, c_out, vb.pp("conv2"))?,
            nin_shortcut: if c_in != c_out {
                Some(conv1(c_in, c_out, vb.pp("nin_shortcut"))?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.norm.forward_silu(x)?)?;
        let h = self.conv2.forward(&self.norm2.norm.forward_silu(&h)?)?;
        match &self.nin_shortcut {
            Some(nin) => nin.forward(x)? + h,
            None => x + h,
        }
    }

    /// The same in slabs: holds `x` and one output-sized buffer, which receives first
    /// `conv1(…)` and then, in place, the block's output.
    fn forward_streamed(&self, x: Tensor, s: &Streaming) -> Result<Tensor> {
        let (b, c_in, d, h, w) = x.dims5()?;
        let c_out = self.conv1.weight().dim(0)?;
        let rows = rows_per_slab(c_in.max(c_out) * h * w, s.slab_elements, d);
        let stats1 = self.norm1.stats(&x, s)?;
        let hidden = Tensor::zeros((b, c_out, d, h, w), x.dtype(), x.device())?;
        let input1 = |a: usize, e: usize| {
            self.norm1
                .apply_slab(&stats1, &x.narrow(2, a, e - a)?, true)
        };
        conv_slabs(&self.conv1, d, &input1, None, Target::Fresh(&hidden), rows)?;
        let stats2 = self.norm2.stats(&hidden, s)?;
        let input2 = |a: usize, e: usize| {
            self.norm2
                .apply_slab(&stats2, &hidden.narrow(2, a, e - a)?, true)
        };
        let shortcut = |a: usize, e: usize| {
            let xs = x.narrow(2, a, e - a)?;
            match &self.nin_shortcut {
                Some(nin) => nin.forward(&xs),
                None => Ok(xs),
            }
        };
        conv_slabs(
            &self.conv2,
            d,
            &input2,
            Some(&shortcut),
            Target::InPlace(&hidden),
            rows,
        )?;
        Ok(hidden)
    }
}

/// MONAI's `SpatialAttentionBlock` (one head over all voxels): `x + attn(norm(x))`.
#[derive(Debug, Clone)]
pub(crate) struct AttentionBlock {
    norm: Norm,
    qkv: Qkv,
    out_proj: Option<Linear>,
    channels: usize,
}

#[derive(Debug, Clone)]
enum Qkv {
    Separate { q: Linear, k: Linear, v: Linear },
    Combined(Linear),
}

impl AttentionBlock {
    pub(crate) fn new(
        channels: usize,
        groups: usize,
        eps: f64,
        include_fc: bool,
        combined: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let attn = vb.pp("attn");
        let qkv = if combined {
            Qkv::Combined(linear(channels, 3 * channels, attn.pp("qkv"))?)
        } else {
            Qkv::Separate {
                q: linear(channels, channels, attn.pp("to_q"))?,
                k: linear(channels, channels, attn.pp("to_k"))?,
                v: linear(channels, channels, attn.pp("to_v"))?,
            }
        };
        let out_proj = if include_fc {
            Some(linear(channels, channels, attn.pp("out_proj"))?)
        } else {
            None
        };
        Ok(Self {
            norm: Norm::new(channels, groups, eps, vb.pp("norm"))?,
            qkv,
            out_proj,
            channels,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let b = dims[0];
        let c = self.channels;
        let tokens = self
            .norm
            .norm
            .forward(x)?
            .reshape((b, c, ()))?
            .transpose(1, 2)?
            .contiguous()?;
        let (q, k, v) = match &self.qkv {
            Qkv::Separate { q, k, v } => (
                q.forward(&tokens)?,
                k.forward(&tokens)?,
                v.forward(&tokens)?,
            ),
            Qkv::Combined(l) => {
                let qkv = l.forward(&tokens)?;
                (
                    qkv.narrow(2, 0, c)?.contiguous()?,
                    qkv.narrow(2, c, c)?.contiguous()?,
                    qkv.narrow(2, 2 * c, c)?.contiguous()?,
                )
            }
        };
        drop(tokens);
        let mut y = attention(&q, &k, &v, &AttentionConfig::new(1, c))?;
        if let Some(p) = &self.out_proj {
            y = p.forward(&y)?;
        }
        y.transpose(1, 2)?.reshape(dims)? + x
    }
}

/// Upsampling of the decoder.
#[derive(Debug, Clone)]
pub(crate) enum Upsample {
    /// Nearest ×2 then a 3×3×3 convolution (`postconv`).
    Nearest(Conv3d),
    /// 2×2×2 transposed convolution with stride 2 (`deconv`).
    Deconv(ConvTranspose3d),
}

/// One entry of MONAI's `Encoder.blocks` / `Decoder.blocks` lists.
#[derive(Debug, Clone)]
pub(crate) enum Block {
    /// A plain convolution (first and last layers).
    Conv(Conv3d),
    /// A residual block.
    Res(Box<ResBlock>),
    /// A spatial self-attention block.
    Attention(Box<AttentionBlock>),
    /// Pad one zero after each axis, then a 3×3×3 stride-2 convolution.
    Downsample(Conv3d),
    /// Upsampling of the decoder.
    Upsample(Upsample),
    /// The GroupNorm before the last convolution (no activation).
    Norm(Norm),
}

impl Block {
    pub(crate) fn conv(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self::Conv(conv3(c_in, c_out, vb)?))
    }

    pub(crate) fn downsample(channels: usize, vb: VarBuilder) -> Result<Self> {
        let conv = conv3d_layer(
            channels,
            channels,
            3,
            Conv3dConfig::pad_after_stride2(),
            vb.pp("conv").pp("conv"),
        )?;
        Ok(Self::Downsample(conv))
    }

    pub(crate) fn upsample(channels: usize, transpose: bool, vb: VarBuilder) -> Result<Self> {
        Ok(Self::Upsample(if transpose {
            let cfg = ConvTranspose3dConfig {
                stride: 2,
                ..Default::default()
            };
            Upsample::Deconv(conv_transpose3d_layer(
                channels,
                channels,
                2,
                cfg,
                vb.pp("deconv"),
            )?)
        } else {
            Upsample::Nearest(conv3(channels, channels, vb.pp("postconv"))?)
        }))
    }

    /// Runs the block; the input is consumed so that it can be freed as early as possible.
    pub(crate) fn forward(&self, x: Tensor, s: Option<&Streaming>) -> Result<Tensor> {
        match self {
            Block::Conv(c) | Block::Downsample(c) => conv_forward(c, &x, s),
            Block::Res(r) => match s {
                Some(s) if s.applies(x.dims(), 0) => r.forward_streamed(x, s),
                _ => r.forward(&x),
            },
            Block::Attention(a) => a.forward(&x),
            Block::Upsample(Upsample::Deconv(d)) => d.forward(&x),
            Block::Upsample(Upsample::Nearest(c)) => {
                let (b, _, d, h, w) = x.dims5()?;
                match s {
                    Some(s) if s.applies(x.dims(), x.elem_count() * 8) => {
                        // Upsample only the low-resolution rows each slab needs.
                        let input = |a: usize, e: usize| {
                            let lo = a / 2;
                            let hi = e.div_ceil(2);
                            let up = ops::upsample_nearest3d(
                                &x.narrow(2, lo, hi - lo)?.contiguous()?,
                                [2, 2, 2],
                            )?;
                            up.narrow(2, a - 2 * lo, e - a)
                        };
                        let out = (b, c.weight().dim(0)?, 2 * d, 2 * h, 2 * w);
                        conv_streamed(c, &x, &input, 2 * d, out, s)
                    }
                    _ => {
                        let up = ops::upsample_nearest3d(&x, [2, 2, 2])?;
                        drop(x);
                        c.forward(&up)
                    }
                }
            }
            Block::Norm(n) => n.norm.forward(&x),
        }
    }

    /// `conv(norm(x))` for a [`Block::Norm`] followed by a [`Block::Conv`], in slabs when
    /// large; `None` when `self` is not a norm or `next` not a convolution.
    pub(crate) fn forward_norm_conv(
        &self,
        next: &Block,
        x: &Tensor,
        s: &Streaming,
    ) -> Option<Result<Tensor>> {
        let (Block::Norm(n), Block::Conv(c)) = (self, next) else {
            return None;
        };
        let run = || {
            let out = conv_out_dims(c, x)?;
            if !s.applies(x.dims(), 0) {
                return c.forward(&n.norm.forward(x)?);
            }
            let stats = n.stats(x, s)?;
            let input = |a: usize, e: usize| n.apply_slab(&stats, &x.narrow(2, a, e - a)?, false);
            conv_streamed(c, x, &input, x.dim(2)?, out, s)
        };
        Some(run())
    }
}
