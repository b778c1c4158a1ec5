//! Group and layer normalisation, with fused CPU inference paths.

use crate::error::NnError;
use crate::math::{exp, lane_sum, lane_sum_pairs};
use crate::storage::contiguous_f32;
use candle_core::{
    CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Storage, Tensor, D,
};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Group normalisation over `[b, c, …]` (any number of trailing axes), as
/// `torch.nn.GroupNorm`, with an optional fused SiLU.
///
/// On the CPU in f32 it runs one fused pass per group (statistics in f64), with a fused
/// backward pass when a gradient is tracked; off the CPU, or in f16/bf16, it is composed of
/// candle ops.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    num_groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// A group norm from its per-channel gain and shift.
    ///
    /// # Errors
    /// [`NnError::Geometry`] when `num_groups` does not divide the channel count.
    pub fn new(weight: Tensor, bias: Tensor, num_groups: usize, eps: f64) -> Result<Self> {
        let channels = weight.dim(0)?;
        if num_groups == 0 || channels % num_groups != 0 {
            return Err(NnError::Geometry {
                op: "group_norm",
                reason: format!("{num_groups} groups do not divide {channels} channels"),
            }
            .into());
        }
        Ok(Self {
            weight,
            bias,
            num_groups,
            eps,
        })
    }

    /// The same norm with gain and shift that carry no gradient (sharing their storage).
    pub fn detached(&self) -> Self {
        Self {
            weight: self.weight.detach(),
            bias: self.bias.detach(),
            ..*self
        }
    }

    /// Normalises then applies SiLU: `silu(group_norm(x))`, fused on the CPU.
    ///
    /// # Errors
    /// As [`Module::forward`]: a wrong channel count or a rank below 3.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, true)
    }

    /// The per-(sample, group) statistics that [`Module::forward`] normalises `x` with, for
    /// applying this norm to parts of a volume too large to normalise at once (see
    /// [`GroupNorm::forward_with_statistics`]); `None` off the fused CPU path (an f32 CPU
    /// tensor with f32 parameters).
    ///
    /// # Errors
    /// As [`Module::forward`]: a wrong channel count or a rank below 3.
    pub fn statistics(&self, x: &Tensor) -> Result<Option<GroupNormStatistics>> {
        self.check(x)?;
        if !self.fused(x) {
            return Ok(None);
        }
        let x = x.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let Storage::Cpu(storage) = &*storage else {
            return Ok(None);
        };
        let data = contiguous_f32(storage, layout, "group_norm")?;
        let (channels, spatial) = FusedGroupNorm::extent(layout.dims());
        let op = self.op(false);
        let values = data
            .par_chunks(channels / self.num_groups * spatial)
            .map(|block| op.statistics(block))
            .collect();
        Ok(Some(GroupNormStatistics { values }))
    }

    /// `group_norm(x)` (then SiLU when `silu`) of `part`, a part of the volume `stats` were
    /// computed on with the same batch and channels (a depth slab `[b, c, rows, h, w]`, say),
    /// with the numbers [`Module::forward`] would use on the whole volume. CPU, f32.
    ///
    /// # Errors
    /// As [`Module::forward`], and [`NnError::Geometry`] when `stats` belong to another
    /// batch size or `part` is not an f32 CPU tensor.
    pub fn forward_with_statistics(
        &self,
        part: &Tensor,
        stats: &GroupNormStatistics,
        silu: bool,
    ) -> Result<Tensor> {
        const OP: &str = "group_norm";
        self.check(part)?;
        let dims = part.dims().to_vec();
        let (batch, (channels, spatial)) = (dims[0], FusedGroupNorm::extent(&dims));
        if !self.fused(part) || stats.values.len() != batch * self.num_groups {
            return Err(NnError::Geometry {
                op: OP,
                reason: format!(
                    "statistics of {} (sample, group) pairs for a {:?} {:?} part of batch {batch} \
                     with {} groups (an f32 CPU tensor is needed)",
                    stats.values.len(),
                    part.dtype(),
                    dims,
                    self.num_groups
                ),
            }
            .into());
        }
        // Planes (one per sample and channel) must each be contiguous; a depth slab of a
        // contiguous volume is.
        let strides = part.layout().stride();
        let planes_contiguous =
            (2..dims.len()).all(|k| strides[k] == dims[k + 1..].iter().product::<usize>());
        let part = if planes_contiguous {
            part.clone()
        } else {
            part.contiguous()?
        };
        let (gain, shift) = (self.weight.to_vec1::<f32>()?, self.bias.to_vec1::<f32>()?);
        let (storage, layout) = part.storage_and_layout();
        let Storage::Cpu(storage) = &*storage else {
            return Err(NnError::Geometry {
                op: OP,
                reason: "the part is not on the CPU".to_string(),
            }
            .into());
        };
        let data = storage.as_slice::<f32>()?;
        let (start, st) = (layout.start_offset(), layout.stride());
        let per_group = channels / self.num_groups;
        let len = batch * channels * spatial;
        let mut out = Vec::with_capacity(len);
        out.spare_capacity_mut()[..len]
            .par_chunks_mut(spatial.max(1))
            .enumerate()
            .for_each(|(i, dst)| {
                let (sample, c) = (i / channels, i % channels);
                let (mean, inv_std) = stats.values[sample * self.num_groups + c / per_group];
                let from = start + sample * st[0] + c * st[1];
                let (scale, offset) = scale_offset(gain[c], shift[c], mean, inv_std);
                normalise(dst, &data[from..from + spatial], scale, offset, silu);
            });
        // SAFETY: the chunks cover the first `len` elements, and `normalise` wrote every one.
        unsafe { out.set_len(len) };
        Tensor::from_vec(out, dims, part.device())
    }

    /// Checks `x`'s rank and channel count.
    fn check(&self, x: &Tensor) -> Result<()> {
        const OP: &str = "group_norm";
        let dims = x.dims();
        if dims.len() < 3 {
            return Err(NnError::Rank {
                op: OP,
                expected: 3,
                got: dims.to_vec(),
            }
            .into());
        }
        let channels = self.weight.dim(0)?;
        if dims[1] != channels {
            return Err(NnError::Channels {
                op: OP,
                expected: channels,
                got: dims[1],
            }
            .into());
        }
        Ok(())
    }

    /// Whether the fused CPU kernels apply to `x` (f32 on the CPU, f32 parameters).
    fn fused(&self, x: &Tensor) -> bool {
        x.device().is_cpu()
            && [x, &self.weight, &self.bias]
                .iter()
                .all(|t| t.dtype() == DType::F32)
    }

    /// The fused op of this norm.
    fn op(&self, silu: bool) -> FusedGroupNorm {
        FusedGroupNorm {
            num_groups: self.num_groups,
            eps: self.eps,
            silu,
        }
    }

    fn apply(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        self.check(x)?;
        if self.fused(x) {
            let op = self.op(silu);
            let (x, gain, shift) = (
                x.contiguous()?,
                self.weight.contiguous()?,
                self.bias.contiguous()?,
            );
            let tracked = x.track_op() || gain.track_op() || shift.track_op();
            return if tracked {
                x.apply_op3(&gain, &shift, op)
            } else {
                x.apply_op3_no_bwd(&gain, &shift, &op)
            };
        }
        let y = self.composed(x)?;
        if silu {
            y.silu()
        } else {
            Ok(y)
        }
    }

    /// The plain-ops group norm (differentiable, any device).
    fn composed(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let dtype = x.dtype();
        let internal = match dtype {
            DType::F16 | DType::BF16 => DType::F32,
            d => d,
        };
        let x = x.to_dtype(internal)?.reshape((b, self.num_groups, ()))?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let mut shape = vec![1; dims.len()];
        shape[1] = c;
        normed
            .reshape(dims)?
            .to_dtype(dtype)?
            .broadcast_mul(&self.weight.reshape(shape.clone())?)?
            .broadcast_add(&self.bias.reshape(shape)?)
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, false)
    }
}

/// Loads a [`GroupNorm`] (`weight`, `bias`, each `[num_channels]`) from `vb`.
///
/// # Errors
/// A candle error naming the key when a tensor is missing or mis-shaped, or
/// [`NnError::Geometry`] when the groups do not divide the channels.
pub fn group_norm(
    num_groups: usize,
    num_channels: usize,
    eps: f64,
    vb: VarBuilder,
) -> Result<GroupNorm> {
    let weight = vb.get_with_hints(num_channels, "weight", candle_nn::Init::Const(1.0))?;
    let bias = vb.get_with_hints(num_channels, "bias", candle_nn::Init::Const(0.0))?;
    GroupNorm::new(weight, bias, num_groups, eps)
}

/// The fused CPU group norm (+ SiLU) of `(x, gain, shift)`, with its backward pass.
#[derive(Clone, Copy)]
struct FusedGroupNorm {
    num_groups: usize,
    eps: f64,
    silu: bool,
}

impl FusedGroupNorm {
    /// `(channels, spatial)` of an input `[b, c, …]`.
    fn extent(dims: &[usize]) -> (usize, usize) {
        (dims[1], dims[2..].iter().product())
    }

    /// Mean and `1 / sqrt(var + eps)` of one `(sample, group)` block (f64).
    fn statistics(&self, block: &[f32]) -> (f64, f64) {
        let n = block.len() as f64;
        let mean = lane_sum(block, |v| v) / n;
        let centre = mean as f32;
        let var =
            lane_sum(block, |v| (v - centre) * (v - centre)) / n - (mean - centre as f64).powi(2);
        (mean, 1.0 / (var + self.eps).sqrt())
    }
}

impl CustomOp3 for FusedGroupNorm {
    fn name(&self) -> &'static str {
        "group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (channels, spatial) = Self::extent(l1.dims());
        let per_group = channels / self.num_groups;
        let x = contiguous_f32(s1, l1, "group_norm")?;
        let (gain, shift) = (
            contiguous_f32(s2, l2, "group_norm")?,
            contiguous_f32(s3, l3, "group_norm")?,
        );
        let mut out = Vec::with_capacity(x.len());
        // At least 1, so that an empty volume gives empty chunks rather than a panic.
        let group_len = (per_group * spatial).max(1);
        out.spare_capacity_mut()[..x.len()]
            .par_chunks_mut(group_len)
            .zip(x.par_chunks(group_len))
            .enumerate()
            .for_each(|(i, (dst, src))| {
                let (mean, inv_std) = self.statistics(src);
                let first_channel = (i % self.num_groups) * per_group;
                for (k, (d, s)) in dst.chunks_mut(spatial).zip(src.chunks(spatial)).enumerate() {
                    let c = first_channel + k;
                    let (scale, offset) = scale_offset(gain[c], shift[c], mean, inv_std);
                    normalise(d, s, scale, offset, self.silu);
                }
            });
        // SAFETY: the groups' channel planes cover all `x.len()` elements, and `normalise`
        // wrote every one.
        unsafe { out.set_len(x.len()) };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gain: &Tensor,
        shift: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grads = x.apply_op3_no_bwd(
            &Tensor::cat(&[gain, shift], 0)?,
            &grad.contiguous()?,
            &FusedGroupNormBackward(*self),
        )?;
        let (len, c) = (x.elem_count(), gain.elem_count());
        let grad_x = grads.narrow(0, 0, len)?.reshape(x.dims())?;
        let grad_gain = grads.narrow(0, len, c)?;
        let grad_shift = grads.narrow(0, len + c, c)?;
        Ok((Some(grad_x), Some(grad_gain), Some(grad_shift)))
    }
}

/// The gradients of [`FusedGroupNorm`]: `(x, [gain; shift], grad_y)` → the flat
/// concatenation `[grad_x; grad_gain; grad_shift]`.
///
/// With `x̂ = (x − μ)·s`, `a = γ·x̂ + β` and `y = silu(a)` (or `a`): `∂a = ∂y·silu'(a)`,
/// `∂γ = Σ ∂a·x̂`, `∂β = Σ ∂a` (over samples and voxels), and per (sample, group) of `n` values
/// `∂x = s·(γ·∂a − mean(γ·∂a) − x̂·mean(γ·∂a·x̂))`.
struct FusedGroupNormBackward(FusedGroupNorm);

impl CustomOp3 for FusedGroupNormBackward {
    fn name(&self) -> &'static str {
        "group-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let norm = &self.0;
        let (channels, spatial) = FusedGroupNorm::extent(l1.dims());
        let per_group = channels / norm.num_groups;
        let x = contiguous_f32(s1, l1, "group_norm")?;
        let params = contiguous_f32(s2, l2, "group_norm")?;
        let (gain, shift) = params.split_at(channels);
        let grad_y = contiguous_f32(s3, l3, "group_norm")?;
        let group_len = per_group * spatial;
        let mut out = vec![0f32; x.len() + 2 * channels];
        let (grad_x, grad_params) = out.split_at_mut(x.len());
        // Per (sample, group): Σ ∂a and Σ ∂a·x̂ of each of its channels.
        let sums: Vec<Vec<(f64, f64)>> = grad_x
            .par_chunks_mut(group_len)
            .zip(x.par_chunks(group_len).zip(grad_y.par_chunks(group_len)))
            .enumerate()
            .map(|(i, (dst, (src, dy)))| {
                let (mean, inv_std) = norm.statistics(src);
                let first_channel = (i % norm.num_groups) * per_group;
                let (mean32, inv_std32) = (mean as f32, inv_std as f32);
                // Pass 1: ∂a into `dst`, and the channel sums.
                let channel_sums: Vec<(f64, f64)> = dst
                    .chunks_mut(spatial)
                    .zip(src.chunks(spatial).zip(dy.chunks(spatial)))
                    .enumerate()
                    .map(|(k, (d, (s, g)))| {
                        let c = first_channel + k;
                        let (gamma, beta) = (gain[c], shift[c]);
                        if norm.silu {
                            for ((d, &s), &g) in d.iter_mut().zip(s).zip(g) {
                                let a = (s - mean32) * inv_std32 * gamma + beta;
                                let sig = 1.0 / (1.0 + exp(-a));
                                *d = g * sig * (1.0 + a * (1.0 - sig));
                            }
                        } else {
                            d.copy_from_slice(g);
                        }
                        let sum = lane_sum(d, |v| v);
                        let sum_centred = lane_sum_pairs(d, s, |da, v| da * (v - mean32));
                        (sum, sum_centred * inv_std)
                    })
                    .collect();
                // Pass 2: ∂x from ∂a.
                let n = (per_group * spatial) as f64;
                let (mut s1, mut s2) = (0f64, 0f64);
                for (k, &(sum, sum_xhat)) in channel_sums.iter().enumerate() {
                    let gamma = gain[first_channel + k] as f64;
                    s1 += gamma * sum;
                    s2 += gamma * sum_xhat;
                }
                let (m1, m2) = ((s1 / n) as f32, (s2 / n) as f32);
                for (k, (d, s)) in dst.chunks_mut(spatial).zip(src.chunks(spatial)).enumerate() {
                    let gamma = gain[first_channel + k];
                    for (d, &s) in d.iter_mut().zip(s) {
                        let xhat = (s - mean32) * inv_std32;
                        *d = inv_std32 * (gamma * *d - m1 - xhat * m2);
                    }
                }
                channel_sums
            })
            .collect();
        let (grad_gain, grad_shift) = grad_params.split_at_mut(channels);
        let groups_per_sample = norm.num_groups;
        let mut gain_acc = vec![0f64; channels];
        let mut shift_acc = vec![0f64; channels];
        for (i, channel_sums) in sums.iter().enumerate() {
            let first_channel = (i % groups_per_sample) * per_group;
            for (k, &(sum, sum_xhat)) in channel_sums.iter().enumerate() {
                shift_acc[first_channel + k] += sum;
                gain_acc[first_channel + k] += sum_xhat;
            }
        }
        for c in 0..channels {
            grad_gain[c] = gain_acc[c] as f32;
            grad_shift[c] = shift_acc[c] as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * channels)))
    }
}

/// Per-(sample, group) mean and `1 / sqrt(var + eps)` of a group norm's input, computed once
/// over a whole volume by [`GroupNorm::statistics`] so that the norm can be applied to it part
/// by part ([`GroupNorm::forward_with_statistics`]).
#[derive(Debug, Clone)]
pub struct GroupNormStatistics {
    /// `(mean, 1 / std)` per (sample, group), sample-major.
    values: Vec<(f64, f64)>,
}

/// The f32 scale and offset that normalise a channel with gain `gain` and shift `shift`.
fn scale_offset(gain: f32, shift: f32, mean: f64, inv_std: f64) -> (f32, f32) {
    let scale = gain as f64 * inv_std;
    (scale as f32, (shift as f64 - mean * scale) as f32)
}

/// `dst = silu?(src · scale + offset)`, writing every element of `dst` (as long as `src`):
/// outputs are filled without being zeroed first.
fn normalise(dst: &mut [MaybeUninit<f32>], src: &[f32], scale: f32, offset: f32, silu: bool) {
    assert_eq!(dst.len(), src.len(), "normalise: every output is written");
    if silu {
        for (d, &s) in dst.iter_mut().zip(src) {
            let y = s * scale + offset;
            d.write(y / (1.0 + exp(-y)));
        }
    } else {
        for (d, &s) in dst.iter_mut().zip(src) {
            d.write(s * scale + offset);
        }
    }
}

/// Layer normalisation over the last axis, as `torch.nn.LayerNorm(dim, eps)`.
///
/// Uses candle-nn's fused kernel for inference and the composed ops when a gradient is
/// tracked (candle-nn's own `LayerNorm` uses the fused kernel, which has no backward).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// A layer norm from its gain and shift, each `[dim]`.
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        Self { weight, bias, eps }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dim = self.weight.dim(0)?;
        let last = x.dim(D::Minus1)?;
        if last != dim {
            return Err(NnError::Channels {
                op: "layer_norm",
                expected: dim,
                got: last,
            }
            .into());
        }
        let tracked = x.track_op() || self.weight.track_op() || self.bias.track_op();
        if tracked {
            candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, self.eps as f32)
        } else {
            candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps as f32)
        }
    }
}

/// Loads a [`LayerNorm`] (`weight`, `bias`, each `[dim]`) from `vb`.
///
/// # Errors
/// A candle error naming the key when a tensor is missing or mis-shaped.
pub fn layer_norm(dim: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    let weight = vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?;
    let bias = vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?;
    Ok(LayerNorm::new(weight, bias, eps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A group norm applied depth slab by slab with whole-volume statistics gives the floats
    /// of the norm on the whole volume, with and without SiLU; statistics of another batch
    /// size and tensors off the fused path are refused.
    #[test]
    fn slabs_with_statistics_equal_the_whole_volume() -> Result<()> {
        let dev = Device::Cpu;
        let (b, c, d) = (2, 6, 7);
        let x = (Tensor::randn(0f32, 1.0, (b, c, d, 5, 3), &dev)? * 3.0)?;
        let norm = GroupNorm::new(
            Tensor::randn(1f32, 0.5, c, &dev)?,
            Tensor::randn(0f32, 0.5, c, &dev)?,
            3,
            1e-6,
        )?;
        let stats = norm.statistics(&x)?.expect("f32 on the CPU");
        for silu in [false, true] {
            let whole = norm.apply(&x, silu)?;
            let slabs = [(0, 3), (3, 1), (4, 3)]
                .iter()
                .map(|&(at, len)| {
                    norm.forward_with_statistics(&x.narrow(2, at, len)?, &stats, silu)
                })
                .collect::<Result<Vec<_>>>()?;
            let slabs = Tensor::cat(&slabs, 2)?;
            let diff = (whole - slabs)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "silu {silu}");
        }
        let other = norm
            .statistics(&x.narrow(0, 0, 1)?)?
            .expect("f32 on the CPU");
        assert!(norm.forward_with_statistics(&x, &other, false).is_err());
        assert!(norm.statistics(&x.to_dtype(DType::F64)?)?.is_none());
        Ok(())
    }
}
