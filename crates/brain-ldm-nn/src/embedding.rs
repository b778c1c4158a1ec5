//! Sinusoidal timestep embedding as MONAI computes it.

use candle_core::{DType, Result, Tensor};

/// MONAI's `get_timestep_embedding`: `freqs_i = exp(−ln(max_period)·i / half)`,
/// `[cos(t·freqs), sin(t·freqs)]` (cosines first), zero-padded by one column for an odd `dim`.
///
/// Computed on the host in f32 in MONAI's order of operations, so it matches PyTorch's values.
///
/// # Shapes
/// `timesteps`: `[b]` (any numeric dtype) → `[b, dim]` f32 on the same device.
///
/// # Errors
/// A candle error when `timesteps` is not one-dimensional or `dim < 2`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let t = Tensor::new(&[0u32, 10], &Device::Cpu)?;
/// let e = brain_ldm_nn::timestep_embedding(&t, 4, 10000.0)?;
/// // t = 0: cos = 1, sin = 0.
/// assert_eq!(e.to_vec2::<f32>()?[0], [1.0, 1.0, 0.0, 0.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn timestep_embedding(timesteps: &Tensor, dim: usize, max_period: f64) -> Result<Tensor> {
    if dim < 2 {
        candle_core::bail!("timestep_embedding: dim must be at least 2, got {dim}");
    }
    let t = timesteps.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let half = dim / 2;
    let neg_log = -(max_period.ln() as f32);
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((neg_log * i as f32) / half as f32).exp())
        .collect();
    let mut out = Vec::with_capacity(t.len() * dim);
    for &ti in &t {
        let args: Vec<f32> = freqs.iter().map(|f| ti * f).collect();
        out.extend(args.iter().map(|a| a.cos()));
        out.extend(args.iter().map(|a| a.sin()));
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Tensor::from_vec(out, (t.len(), dim), timesteps.device())
}
