//! Activations beyond candle's own (`Tensor::silu`, `Tensor::gelu_erf`).

use crate::math::{erf, exp};
use crate::storage::contiguous_f32;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// The gated GELU of MONAI's transformer feed-forward: the last axis is split into halves
/// `(a, b)` and the result is `a · gelu_erf(b)` (first half value, second half gate).
///
/// f32 on the CPU runs one fused parallel pass (its erf within 6e-7 of the exact one);
/// elsewhere candle's `gelu_erf`. Differentiable.
///
/// # Shapes
/// `[…, 2n]` → `[…, n]`.
///
/// # Errors
/// A candle error when the last axis has odd length.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[2f32, 0.0]], &Device::Cpu)?;
/// // gelu(0) = 0
/// assert_eq!(brain_ldm_nn::ops::geglu(&x)?.to_vec2::<f32>()?, [[0.0]]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    let n = x.dim(D::Minus1)?;
    if n % 2 != 0 {
        candle_core::bail!(
            "geglu: last axis has odd length {n} in shape {:?}",
            x.dims()
        );
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1(Geglu);
    }
    let (a, b) = halves(x)?;
    a * b.gelu_erf()?
}

/// The two halves `(a, b)` of the last axis of `x`.
fn halves(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let n = x.dim(D::Minus1)? / 2;
    Ok((x.narrow(D::Minus1, 0, n)?, x.narrow(D::Minus1, n, n)?))
}

/// [`geglu`] on contiguous f32 on the CPU in one parallel pass (candle's `gelu_erf` of the
/// strided half and the product took two single-threaded passes over strided views; measured
/// in docs/benchmarks.md, "Diffusion UNet"); its gradient in one more ([`GegluGrad`]).
struct Geglu;

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "geglu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "geglu")?;
        let mut dims = layout.dims().to_vec();
        let n = dims.last().copied().unwrap_or(0) / 2;
        if let Some(last) = dims.last_mut() {
            *last = n;
        }
        let mut out = vec![0f32; x.len() / 2];
        if n > 0 {
            out.par_chunks_mut(n)
                .zip(x.par_chunks(2 * n))
                .for_each(|(out, row)| {
                    let (a, b) = row.split_at(n);
                    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                        *o = a * (0.5 * b * (1.0 + erf(b * std::f32::consts::FRAC_1_SQRT_2)));
                    }
                });
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    /// `∂/∂a = g·gelu(b)`, `∂/∂b = g·a·(Φ(b) + b·φ(b))`: in one parallel pass ([`GegluGrad`])
    /// for f32 on the CPU, else by candle's operations.
    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if x.device().is_cpu() && grad.dtype() == DType::F32 {
            return Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &GegluGrad)?));
        }
        let (a, b) = halves(x)?;
        let cdf = (((&b * std::f64::consts::FRAC_1_SQRT_2)?.erf()? + 1.0)? * 0.5)?;
        let pdf = ((b.sqr()? * -0.5)?.exp()?
            * (0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2))?;
        let grad_a = (grad * (&b * &cdf)?)?;
        let grad_b = ((grad * a)? * (cdf + (&b * pdf)?)?)?;
        Ok(Some(Tensor::cat(&[grad_a, grad_b], D::Minus1)?))
    }
}

/// The gradient of [`Geglu`] with respect to its input, from the input `[…, 2n]` and the
/// output's gradient `[…, n]`, in one parallel pass over contiguous f32 (candle's composed
/// expression is fifteen operations, each a pass and an allocation, and a gradient to store:
/// docs/benchmarks.md, "Training step").
struct GegluGrad;

impl CustomOp2 for GegluGrad {
    fn name(&self) -> &'static str {
        "geglu_grad"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(sx, lx, "geglu_grad")?;
        let grad = contiguous_f32(sg, lg, "geglu_grad")?;
        let n = lx.dims().last().copied().unwrap_or(0) / 2;
        if grad.len() * 2 != x.len() {
            candle_core::bail!(
                "geglu_grad: gradient {:?} for input {:?}",
                lg.dims(),
                lx.dims()
            );
        }
        let mut out = vec![0f32; x.len()];
        if n > 0 {
            const PDF_SCALE: f32 =
                0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2;
            out.par_chunks_mut(2 * n)
                .zip(x.par_chunks(2 * n))
                .zip(grad.par_chunks(n))
                .for_each(|((out, row), g)| {
                    let (a, b) = row.split_at(n);
                    let (grad_a, grad_b) = out.split_at_mut(n);
                    for i in 0..n {
                        let (a, b, g) = (a[i], b[i], g[i]);
                        let cdf = 0.5 * (1.0 + erf(b * std::f32::consts::FRAC_1_SQRT_2));
                        let pdf = exp(-0.5 * b * b) * PDF_SCALE;
                        grad_a[i] = g * (b * cdf);
                        grad_b[i] = g * a * (cdf + b * pdf);
                    }
                });
        }
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The fused CPU pass matches candle's `a · gelu_erf(b)`, forward and gradient, on a
    /// contiguous and a strided input.
    #[test]
    fn fused_matches_candle_expression() -> Result<()> {
        // Deterministic values in [−4, 4].
        let wave = |n: usize, f: f64| -> Result<Tensor> {
            (Tensor::arange(0f32, n as f32, &Device::Cpu)? * f)?.sin()? * 4.0
        };
        let x = Var::from_tensor(&wave(3 * 5 * 16, 0.37)?.reshape((3, 5, 16))?)?;
        let weights = wave(3 * 5 * 8, 0.91)?.reshape((3, 5, 8))?;
        let (a, b) = halves(&x)?;
        let want = (&a * b.gelu_erf()?)?;
        let got = geglu(&x)?;
        let diff = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "forward differs by {diff}");
        let want_grad = (want * &weights)?.sum_all()?.backward()?;
        let got_grad = (got * &weights)?.sum_all()?.backward()?;
        let (want_grad, got_grad) = (
            want_grad.get(&x).expect("gradient"),
            got_grad.get(&x).expect("gradient"),
        );
        let diff = (got_grad - want_grad)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "gradient differs by {diff}");
        let strided = x.transpose(1, 2)?.transpose(1, 2)?.narrow(1, 1, 3)?;
        let (a, b) = halves(&strided)?;
        let diff = (geglu(&strided)? - (a * b.gelu_erf()?)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "strided input differs by {diff}");
        Ok(())
    }

    #[test]
    fn odd_length_is_an_error() -> Result<()> {
        let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
        let err = geglu(&x).expect_err("odd last axis");
        assert!(err.to_string().contains("odd length 3"), "{err}");
        Ok(())
    }
}
