//! Depth-slab execution of the large convolutional layers, so inference on full-size volumes
//! never holds more than a layer's input and output (plus one slab of temporaries).
//!
//! A convolution's output rows `[a, b)` along the depth axis depend only on a few input rows,
//! so each slab of output is computed from a narrow window of the input (the window is
//! transformed on the fly: group norm with whole-volume statistics, SiLU, upsampling) and
//! written into a preallocated output with `slice_set`. When the output overwrites the
//! input's own buffer (the second convolution of a residual block), each slab is written one
//! step late, after the next slab has read the rows it shares with it.
//!
//! These paths write into tensors in place, so no gradient flows through them; they are used
//! for inference only (see [`crate::Streaming`]).

use brain_ldm_nn::{ops, Conv3d, Conv3dConfig, GroupNorm, GroupNormStatistics};
use candle_core::{CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Result, Tensor};
use rayon::prelude::*;

/// Per-(sample, group) statistics of a whole volume, for a group norm applied slab by slab.
pub(crate) enum GroupStats {
    /// Computed by brain-ldm-nn's fused CPU group norm (f32 on the CPU).
    Fused(GroupNormStatistics),
    /// Computed with candle ops (other devices and dtypes).
    Composed {
        /// `[b, groups, 1]`, in the input's dtype.
        mean: Tensor,
        /// `[b, groups, 1]`, in the input's dtype.
        rstd: Tensor,
        groups: usize,
    },
}

impl GroupStats {
    /// Statistics of `x` `[b, c, d, h, w]` for `norm` (with `groups` groups and `eps`): from
    /// the fused CPU path when it applies, else accumulated in f64 over depth slabs of about
    /// `slab_elements` elements.
    pub(crate) fn compute(
        norm: &GroupNorm,
        x: &Tensor,
        groups: usize,
        eps: f64,
        slab_elements: usize,
    ) -> Result<Self> {
        if let Some(stats) = norm.statistics(x)? {
            return Ok(Self::Fused(stats));
        }
        let (b, c, d, h, w) = x.dims5()?;
        let rows = rows_per_slab(c * h * w, slab_elements, d);
        let mut sum: Option<Tensor> = None;
        let mut sum_sq: Option<Tensor> = None;
        let mut start = 0;
        while start < d {
            let len = rows.min(d - start);
            let slab = x
                .narrow(2, start, len)?
                .to_dtype(DType::F64)?
                .reshape((b, groups, ()))?;
            let s = slab.sum_keepdim(2)?;
            let q = slab.sqr()?.sum_keepdim(2)?;
            sum = Some(match sum {
                None => s,
                Some(a) => (a + s)?,
            });
            sum_sq = Some(match sum_sq {
                None => q,
                Some(a) => (a + q)?,
            });
            start += len;
        }
        let (Some(sum), Some(sum_sq)) = (sum, sum_sq) else {
            candle_core::bail!("group norm statistics of an empty volume {:?}", x.dims())
        };
        let n = ((c / groups) * d * h * w) as f64;
        let mean = (sum / n)?;
        let var = ((sum_sq / n)? - mean.sqr()?)?.relu()?;
        let rstd = (var + eps)?.sqrt()?.recip()?;
        Ok(Self::Composed {
            mean: mean.to_dtype(x.dtype())?,
            rstd: rstd.to_dtype(x.dtype())?,
            groups,
        })
    }

    /// `silu?(γ · (x − mean) · rstd + β)` of `norm` on a slab `[b, c, rows, h, w]`, with
    /// `weight` = γ and `bias` = β its parameters.
    pub(crate) fn apply(
        &self,
        norm: &GroupNorm,
        slab: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        silu: bool,
    ) -> Result<Tensor> {
        let (mean, rstd, groups) = match self {
            Self::Fused(stats) => return norm.forward_with_statistics(slab, stats, silu),
            Self::Composed { mean, rstd, groups } => (mean, rstd, *groups),
        };
        let dims = slab.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let y = slab
            .reshape((b, groups, ()))?
            .broadcast_sub(mean)?
            .broadcast_mul(rstd)?
            .reshape((b, c, ()))?
            .broadcast_mul(&weight.reshape((1, c, 1))?)?
            .broadcast_add(&bias.reshape((1, c, 1))?)?;
        let y = if silu { candle_nn::ops::silu(&y)? } else { y };
        y.reshape(dims)
    }
}

/// Depth rows per slab so that a slab of `row_elements`-element rows holds about
/// `slab_elements` elements: a multiple of 4, at least 4 (whole tiles of the 4×4×4-output
/// Winograd convolution, which a 2-row slab would half waste), at most `depth`.
pub(crate) fn rows_per_slab(row_elements: usize, slab_elements: usize, depth: usize) -> usize {
    let rows = (slab_elements / row_elements.max(1)).max(4) & !3;
    rows.min(depth).max(1)
}

/// Where the output of [`conv_slabs`] goes.
pub(crate) enum Target<'a> {
    /// A separate preallocated tensor.
    Fresh(&'a Tensor),
    /// The buffer the input rows are read from (same shape as the output): each slab is
    /// written after the next one has been computed.
    InPlace(&'a Tensor),
}

/// Computes `conv(input) (+ residual)` slab by slab along depth into `target`.
///
/// `input(a, b)` returns the (transformed) input rows `[a, b)` of the convolution, whose
/// full depth is `in_depth`; `residual(a, b)` returns output rows `[a, b)` to add.
/// `rows` output rows are computed at a time.
pub(crate) fn conv_slabs(
    conv: &Conv3d,
    in_depth: usize,
    input: &dyn Fn(usize, usize) -> Result<Tensor>,
    residual: Option<&dyn Fn(usize, usize) -> Result<Tensor>>,
    target: Target<'_>,
    rows: usize,
) -> Result<()> {
    let out = match target {
        Target::Fresh(t) | Target::InPlace(t) => t,
    };
    let in_place = matches!(target, Target::InPlace(_));
    let out_depth = out.dim(2)?;
    let cfg = *conv.config();
    let k = conv.weight().dim(2)?;
    let stride = cfg.stride[0];
    let (pad_before, _) = cfg.padding[0];
    let bias = conv
        .bias()
        .map(|b| b.reshape((1, (), 1, 1, 1)))
        .transpose()?;
    let mut pending: Option<(usize, Tensor)> = None;
    let mut a = 0;
    while a < out_depth {
        let b = (a + rows).min(out_depth);
        // Input rows the output rows [a, b) read, before clipping to the volume.
        let lo = (a * stride) as isize - pad_before as isize;
        let hi = ((b - 1) * stride + k) as isize - pad_before as isize;
        let first = lo.max(0) as usize;
        let last = (hi.min(in_depth as isize)).max(first as isize) as usize;
        let slab_cfg = Conv3dConfig {
            padding: [
                (
                    (first as isize - lo) as usize,
                    (hi - last as isize).max(0) as usize,
                ),
                cfg.padding[1],
                cfg.padding[2],
            ],
            ..cfg
        };
        let x = input(first, last)?;
        let y = ops::conv3d(&x, conv.weight(), &slab_cfg)?;
        drop(x);
        let y = add_bias_residual(y, bias.as_ref(), residual.map(|r| r(a, b)).transpose()?)?;
        if in_place {
            if let Some((offset, prev)) = pending.take() {
                out.slice_set(&prev, 2, offset)?;
            }
            pending = Some((a, y));
        } else {
            out.slice_set(&y, 2, a)?;
        }
        a = b;
    }
    if let Some((offset, prev)) = pending {
        out.slice_set(&prev, 2, offset)?;
    }
    Ok(())
}

/// `y + bias` (per channel of `[b, c, d, h, w]`) `+ residual`, contiguous. For a contiguous f32
/// `y` on the CPU the sums are written into `y` itself, in one pass over it: a slab's
/// temporaries then stay at its input and output, which keeps the encoder's peak memory below
/// half of MONAI's.
fn add_bias_residual(y: Tensor, bias: Option<&Tensor>, residual: Option<Tensor>) -> Result<Tensor> {
    if bias.is_none() && residual.is_none() {
        return y.contiguous();
    }
    let in_place = y.device().is_cpu() && y.dtype() == DType::F32 && y.is_contiguous();
    if in_place
        && residual
            .as_ref()
            .is_none_or(|r| r.dtype() == DType::F32 && r.dims() == y.dims())
    {
        let add = AddInPlace {
            bias: match bias {
                Some(b) => b.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
                None => Vec::new(),
            },
            plane: y.dims()[2..].iter().product(),
        };
        match residual {
            Some(r) => y.inplace_op2(&r.contiguous()?, &add)?,
            None => y.inplace_op1(&add)?,
        }
        return Ok(y);
    }
    let mut y = y;
    if let Some(bias) = bias {
        y = y.broadcast_add(&bias.to_dtype(y.dtype())?.reshape((1, (), 1, 1, 1))?)?;
    }
    if let Some(residual) = residual {
        y = (y + residual)?;
    }
    y.contiguous()
}

/// `lhs[i] += bias[channel of i] (+ rhs[i])` on a contiguous f32 CPU tensor `[b, c, …]` whose
/// channel planes hold `plane` values, with `bias` empty (no bias) or of length `c`; in
/// parallel over the planes.
struct AddInPlace {
    bias: Vec<f32>,
    plane: usize,
}

impl AddInPlace {
    /// Checks the operands and adds.
    fn add(
        &self,
        lhs: &mut CpuStorage,
        l1: &Layout,
        rhs: Option<(&CpuStorage, &Layout)>,
    ) -> Result<()> {
        let Some((a0, a1)) = l1.contiguous_offsets() else {
            candle_core::bail!("add-in-place: the destination must be contiguous");
        };
        let CpuStorage::F32(lhs) = lhs else {
            candle_core::bail!("add-in-place: operands must be f32");
        };
        let lhs = &mut lhs[a0..a1];
        let rhs = match rhs {
            None => None,
            Some((CpuStorage::F32(rhs), l2)) => match l2.contiguous_offsets() {
                Some((b0, b1)) if b1 - b0 == lhs.len() => Some(&rhs[b0..b1]),
                _ => candle_core::bail!(
                    "add-in-place: the residual must be contiguous, of {} values",
                    lhs.len()
                ),
            },
            Some(_) => candle_core::bail!("add-in-place: operands must be f32"),
        };
        if self.plane == 0
            || !lhs.len().is_multiple_of(self.plane)
            || (!self.bias.is_empty() && !(lhs.len() / self.plane).is_multiple_of(self.bias.len()))
        {
            candle_core::bail!(
                "add-in-place: {} values are not planes of {} for {} channels",
                lhs.len(),
                self.plane,
                self.bias.len()
            );
        }
        lhs.par_chunks_mut(self.plane)
            .enumerate()
            .for_each(|(i, out)| {
                let bias = if self.bias.is_empty() {
                    0.0
                } else {
                    self.bias[i % self.bias.len()]
                };
                match rhs {
                    Some(rhs) => {
                        let rhs = &rhs[i * self.plane..][..self.plane];
                        // (y + bias) + residual, in the order of the unfused sums.
                        out.iter_mut()
                            .zip(rhs)
                            .for_each(|(o, r)| *o = (*o + bias) + r);
                    }
                    None => out.iter_mut().for_each(|o| *o += bias),
                }
            });
        Ok(())
    }
}

impl InplaceOp1 for AddInPlace {
    fn name(&self) -> &'static str {
        "add-bias-in-place"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout) -> Result<()> {
        self.add(s1, l1, None)
    }
}

impl InplaceOp2 for AddInPlace {
    fn name(&self) -> &'static str {
        "add-bias-residual-in-place"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        self.add(s1, l1, Some((s2, l2)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn tensor(values: Vec<f32>, dims: &[usize]) -> Tensor {
        Tensor::from_vec(values, dims, &Device::Cpu).unwrap()
    }

    #[test]
    fn in_place_sums_match_broadcast_ones() {
        let dims = [2, 3, 2, 2, 5];
        let n: usize = dims.iter().product();
        let y = || tensor((0..n).map(|i| (i as f32 * 0.37).sin()).collect(), &dims);
        let bias = tensor(vec![0.5, -1.25, 2.0], &[3]);
        let residual = tensor((0..n).map(|i| (i as f32 * 0.11).cos()).collect(), &dims);
        let bias_b = bias.reshape((1, 3, 1, 1, 1)).unwrap();
        let cases = [
            (Some(&bias), None, y().broadcast_add(&bias_b).unwrap()),
            (None, Some(residual.clone()), (y() + &residual).unwrap()),
            (
                Some(&bias),
                Some(residual.clone()),
                (y().broadcast_add(&bias_b).unwrap() + &residual).unwrap(),
            ),
        ];
        for (bias, residual, want) in cases {
            let got = add_bias_residual(y(), bias, residual).unwrap();
            let err = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(err.to_scalar::<f32>().unwrap() < 1e-6);
        }
    }

    #[test]
    fn mismatched_operands_are_errors() {
        let add = AddInPlace {
            bias: vec![1.0, 2.0],
            plane: 4,
        };
        let y = tensor(vec![0.0; 12], &[1, 3, 4]);
        let err = y.inplace_op1(&add).unwrap_err().to_string();
        assert!(err.contains("not planes of 4 for 2 channels"), "{err}");
        let add = AddInPlace {
            bias: Vec::new(),
            plane: 4,
        };
        let short = tensor(vec![0.0; 8], &[1, 2, 4]);
        let err = y.inplace_op2(&short, &add).unwrap_err().to_string();
        assert!(err.contains("must be contiguous, of 12 values"), "{err}");
    }
}
