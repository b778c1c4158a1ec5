//! Adding one bias value per channel: the convolutions' biases and the UNet's time embedding.

use crate::error::NnError;
use crate::math::lane_sum;
use crate::storage::contiguous_f32;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `x + bias`, with one bias value per channel (axis 1) of `x`: `bias` is `[c]` (the same for
/// every sample) or `[n, c]` (one per sample).
///
/// Contiguous f32 on the CPU runs one parallel pass, and so does its gradient with respect to
/// the bias (each channel summed on one thread, in a fixed order; for rows `[n, c]`, as in
/// [`Linear`](crate::Linear), fixed blocks of rows summed in parallel and added in order, so
/// the sums do not depend on the number of threads). candle's `broadcast_add` sums the
/// gradient of a `[c]` bias over the batch and voxel axes on one thread with an index division
/// per element and axis (measured in docs/benchmarks.md, "Training step"). Elsewhere candle's
/// `broadcast_add`. Differentiable.
///
/// # Shapes
/// `x`: `[n, c, …]`; `bias`: `[c]` or `[n, c]` → `[n, c, …]`.
///
/// # Errors
/// [`NnError::ShapeMismatch`] (wrapped in a candle error) when `bias` is neither `[c]` nor
/// `[n, c]`; [`NnError::Rank`] when `x` has fewer than two axes.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::zeros((1, 2, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let bias = Tensor::new(&[1f32, 2.0], &Device::Cpu)?;
/// let y = brain_ldm_nn::ops::add_channel_bias(&x, &bias)?;
/// assert_eq!(y.to_vec3::<f32>()?, [[[1.0; 3], [2.0; 3]]]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn add_channel_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    const OP: &str = "add_channel_bias";
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(NnError::Rank {
            op: OP,
            expected: 2,
            got: dims.to_vec(),
        }
        .into());
    }
    let (batch, channels) = (dims[0], dims[1]);
    let per_sample = match bias.dims() {
        [c] if *c == channels => false,
        [n, c] if *n == batch && *c == channels => true,
        other => {
            return Err(NnError::ShapeMismatch {
                op: OP,
                what: "bias (or [n, c] with n the batch)",
                expected: vec![channels],
                got: other.to_vec(),
            }
            .into())
        }
    };
    let fused = x.device().is_cpu()
        && bias.device().is_cpu()
        && x.dtype() == DType::F32
        && bias.dtype() == DType::F32;
    if fused {
        return x
            .contiguous()?
            .apply_op2(&bias.contiguous()?, ChannelBias { per_sample });
    }
    let mut shape = vec![1; dims.len()];
    shape[1] = channels;
    if per_sample {
        shape[0] = batch;
    }
    x.broadcast_add(&bias.reshape(shape)?)
}

/// [`add_channel_bias`] on contiguous f32 of fitting shapes.
struct ChannelBias {
    /// Whether the bias is `[n, c]` rather than `[c]`.
    per_sample: bool,
}

impl CustomOp2 for ChannelBias {
    fn name(&self) -> &'static str {
        "add_channel_bias"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(sx, lx, "add_channel_bias")?;
        let bias = contiguous_f32(sb, lb, "add_channel_bias")?;
        let channels = lx.dims()[1];
        let plane = lx.dims()[2..].iter().product::<usize>().max(1);
        let mut out = Vec::with_capacity(x.len());
        if plane == 1 {
            // Rows `[n, c]`: each row adds the bias vector (or its own row of an `[n, c]` bias),
            // in blocks of ROW_BLOCK rows.
            let block = ROW_BLOCK * channels.max(1);
            out.spare_capacity_mut()[..x.len()]
                .par_chunks_mut(block)
                .zip(x.par_chunks(block))
                .enumerate()
                .for_each(|(i, (dst, src))| {
                    let rows = dst.chunks_mut(channels).zip(src.chunks(channels));
                    for (j, (dst, src)) in rows.enumerate() {
                        let b = if self.per_sample {
                            let row = i * ROW_BLOCK + j;
                            &bias[row * channels..(row + 1) * channels]
                        } else {
                            bias
                        };
                        for ((d, &s), &b) in dst.iter_mut().zip(src).zip(b) {
                            d.write(s + b);
                        }
                    }
                });
        } else {
            out.spare_capacity_mut()[..x.len()]
                .par_chunks_mut(plane)
                .zip(x.par_chunks(plane))
                .enumerate()
                .for_each(|(i, (dst, src))| {
                    let b = bias[if self.per_sample { i } else { i % channels }];
                    for (d, &s) in dst.iter_mut().zip(src) {
                        d.write(s + b);
                    }
                });
        }
        // SAFETY: the rows or planes cover all `x.len()` elements, each written above.
        unsafe { out.set_len(x.len()) };
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_bias = grad.contiguous()?.apply_op1_no_bwd(&ChannelSum {
            per_sample: self.per_sample,
        })?;
        Ok((Some(grad.clone()), Some(grad_bias.reshape(bias.dims())?)))
    }
}

/// The gradient of [`ChannelBias`]'s bias: `[n, c, …]` summed over the voxels, and over the
/// samples too unless `per_sample`, to `[c]` or `[n·c]`.
struct ChannelSum {
    per_sample: bool,
}

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "channel_sum"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(storage, layout, "channel_sum")?;
        let (batch, channels) = (layout.dims()[0], layout.dims()[1]);
        let plane = layout.dims()[2..].iter().product::<usize>();
        if plane == 1 {
            let sums = if self.per_sample {
                g.to_vec()
            } else {
                column_sums(g, channels)
            };
            let len = sums.len();
            return Ok((CpuStorage::F32(sums), Shape::from(len)));
        }
        let plane_sum = |i: usize| lane_sum(&g[i * plane..(i + 1) * plane], |v| v);
        let sums: Vec<f32> = if self.per_sample {
            (0..batch * channels)
                .into_par_iter()
                .map(|i| plane_sum(i) as f32)
                .collect()
        } else {
            (0..channels)
                .into_par_iter()
                .map(|c| (0..batch).map(|n| plane_sum(n * channels + c)).sum::<f64>() as f32)
                .collect()
        };
        let len = sums.len();
        Ok((CpuStorage::F32(sums), Shape::from(len)))
    }
}

/// Rows per block of the row-wise (`[n, c]`) forward and bias gradient. The gradient's blocks
/// are fixed by this alone, not by the thread count, so its sums are the same on any pool.
const ROW_BLOCK: usize = 64;

/// `Σ_r g[r, :]` of a row-major `[rows, channels]` slice: each block of [`ROW_BLOCK`] rows
/// summed in f64 on one thread, the blocks in parallel, their sums added in block order.
fn column_sums(g: &[f32], channels: usize) -> Vec<f32> {
    let blocks: Vec<Vec<f64>> = g
        .par_chunks(ROW_BLOCK * channels.max(1))
        .map(|block| {
            let mut acc = vec![0f64; channels];
            for row in block.chunks_exact(channels) {
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += v as f64;
                }
            }
            acc
        })
        .collect();
    let mut total = vec![0f64; channels];
    for block in &blocks {
        for (t, &b) in total.iter_mut().zip(block) {
            *t += b;
        }
    }
    total.into_iter().map(|t| t as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The largest absolute difference between `a` and `b`.
    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    /// `add_channel_bias(x, bias)` gives the floats of `want` (candle's `broadcast_add`), and
    /// its gradients of `Σ weights·y` with respect to `x` and `bias` are within 1e-5 of
    /// candle's relative to their largest value (candle sums in f32, one value after another).
    fn assert_matches(x: &Var, bias: &Var, want: &Tensor, weights: &Tensor) -> Result<()> {
        let got = add_channel_bias(x, bias)?;
        assert_eq!(got.dims(), want.dims());
        assert_eq!(max_diff(&got, want)?, 0.0);
        let want_grads = (want * weights)?.sum_all()?.backward()?;
        let got_grads = (got * weights)?.sum_all()?.backward()?;
        for v in [x, bias] {
            let (g, w) = (got_grads.get(v).unwrap(), want_grads.get(v).unwrap());
            assert_eq!(g.dims(), w.dims());
            let tol = 1e-5 * w.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
            assert!(max_diff(g, w)? <= tol, "{:?}", v.dims());
        }
        Ok(())
    }

    /// The same floats as candle's `broadcast_add` and gradients within f32 rounding (1e-5
    /// relative), for a `[c]` and an `[n, c]` bias, on a strided input and in f64; shapes that
    /// fit neither are errors.
    #[test]
    fn matches_broadcast_add() -> Result<()> {
        let dev = &Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 4, 5, 6), dev)?)?;
        let weights = Tensor::randn(0f32, 1.0, (3, 4, 5, 6), dev)?;
        for bias_dims in [vec![4], vec![3, 4]] {
            let bias = Var::from_tensor(&Tensor::randn(0f32, 1.0, bias_dims.as_slice(), dev)?)?;
            let mut shape = vec![1, 4, 1, 1];
            shape[0] = if bias_dims.len() == 2 { 3 } else { 1 };
            let want = x.broadcast_add(&bias.reshape(shape)?)?;
            assert_matches(&x, &bias, &want, &weights)?;
        }
        let strided = x.transpose(2, 3)?;
        let bias = Tensor::new(&[1f32, 2.0, 3.0, 4.0], dev)?;
        assert_eq!(
            add_channel_bias(&strided, &bias)?
                .flatten_all()?
                .to_vec1::<f32>()?,
            strided
                .broadcast_add(&bias.reshape((1, 4, 1, 1))?)?
                .flatten_all()?
                .to_vec1::<f32>()?
        );
        // f64 takes candle's `broadcast_add`.
        let x64 = x.to_dtype(DType::F64)?;
        assert_eq!(
            add_channel_bias(&x64, &bias.to_dtype(DType::F64)?)?
                .flatten_all()?
                .to_vec1::<f64>()?,
            x64.broadcast_add(&bias.to_dtype(DType::F64)?.reshape((1, 4, 1, 1))?)?
                .flatten_all()?
                .to_vec1::<f64>()?
        );
        for bad in [vec![3], vec![4, 4], vec![1, 4, 1]] {
            let bias = Tensor::zeros(bad.as_slice(), DType::F32, dev)?;
            let err = add_channel_bias(&x, &bias).unwrap_err().to_string();
            assert!(err.contains("add_channel_bias"), "{err}");
        }
        Ok(())
    }

    /// Rows `[n, c]` (one value per row and channel, as after a linear layer), with `n` not a
    /// multiple of the row block: the same floats as `broadcast_add`, gradients within f32
    /// rounding (1e-5 relative), and a bias gradient bit-identical on 1 and 4 threads.
    #[test]
    fn rows_match_broadcast_add_on_any_thread_count() -> Result<()> {
        let dev = &Device::Cpu;
        let (rows, channels) = (3 * ROW_BLOCK + 5, 7);
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (rows, channels), dev)?)?;
        let weights = Tensor::randn(0f32, 1.0, (rows, channels), dev)?;
        for bias_dims in [vec![channels], vec![rows, channels]] {
            let bias = Var::from_tensor(&Tensor::randn(0f32, 1.0, bias_dims.as_slice(), dev)?)?;
            let want = x.broadcast_add(&bias)?;
            assert_matches(&x, &bias, &want, &weights)?;
        }
        let bias = Var::from_tensor(&Tensor::randn(0f32, 1.0, channels, dev)?)?;
        let bias_grad = |threads: usize| -> Vec<f32> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let y = add_channel_bias(&x, &bias).unwrap();
                let grads = (y * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                grads.get(&bias).unwrap().to_vec1::<f32>().unwrap()
            })
        };
        let one = bias_grad(1);
        assert_eq!(
            one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            bias_grad(4).iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        // No rows: a zero gradient.
        let empty = Var::from_tensor(&Tensor::zeros((0, channels), DType::F32, dev)?)?;
        let grads = add_channel_bias(&empty, &bias)?.sum_all()?.backward()?;
        assert_eq!(
            grads.get(&bias).unwrap().to_vec1::<f32>()?,
            vec![0.0; channels]
        );
        Ok(())
    }
}
