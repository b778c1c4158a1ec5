//! Concatenation along the channel axis (the UNet's skip connections).

use crate::storage::contiguous_f32;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `Tensor::cat(&[a, b], 1)`, in one parallel pass for contiguous f32 on the CPU (candle's
/// copies one tensor after the other on one thread); candle's `cat` elsewhere.
/// Differentiable.
///
/// # Shapes
/// `[n, ca, …]`, `[n, cb, …]` → `[n, ca + cb, …]`.
///
/// # Errors
/// A candle error when the shapes agree on anything but axis 1, or the ranks are below 2.
///
/// ```
/// use brain_ldm_nn::ops::concat_channels;
/// use candle_core::{Device, Tensor};
/// let a = Tensor::zeros((1, 2, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let b = Tensor::ones((1, 1, 3), candle_core::DType::F32, &Device::Cpu)?;
/// assert_eq!(concat_channels(&a, &b)?.dims(), &[1, 3, 3]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn concat_channels(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let fits = a.rank() >= 2
        && a.rank() == b.rank()
        && a.dims()[0] == b.dims()[0]
        && a.dims()[2..] == b.dims()[2..];
    if fits
        && a.device().is_cpu()
        && b.device().is_cpu()
        && a.dtype() == DType::F32
        && b.dtype() == DType::F32
    {
        return a.contiguous()?.apply_op2(&b.contiguous()?, ConcatChannels);
    }
    Tensor::cat(&[a, b], 1)
}

/// [`concat_channels`] on contiguous f32 of fitting shapes.
struct ConcatChannels;

impl CustomOp2 for ConcatChannels {
    fn name(&self) -> &'static str {
        "concat_channels"
    }

    fn cpu_fwd(
        &self,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = contiguous_f32(sa, la, "concat_channels")?;
        let b = contiguous_f32(sb, lb, "concat_channels")?;
        let batch = la.dims()[0];
        let mut dims = la.dims().to_vec();
        dims[1] += lb.dims()[1];
        let (item_a, item_b) = (a.len() / batch.max(1), b.len() / batch.max(1));
        let mut out = Vec::with_capacity(a.len() + b.len());
        // Pieces of at most 2^18 floats, so that both threads share even a single item.
        const PIECE: usize = 1 << 18;
        let mut pieces: Vec<(&[f32], &mut [MaybeUninit<f32>])> = Vec::new();
        let mut rest = &mut out.spare_capacity_mut()[..a.len() + b.len()];
        for n in 0..batch {
            for src in [
                &a[n * item_a..(n + 1) * item_a],
                &b[n * item_b..(n + 1) * item_b],
            ] {
                for chunk in src.chunks(PIECE) {
                    let (dst, tail) = rest.split_at_mut(chunk.len());
                    pieces.push((chunk, dst));
                    rest = tail;
                }
            }
        }
        pieces.into_par_iter().for_each(|(src, dst)| {
            for (d, &s) in dst.iter_mut().zip(src) {
                d.write(s);
            }
        });
        // SAFETY: the pieces cover all a.len() + b.len() elements, each written above.
        unsafe { out.set_len(a.len() + b.len()) };
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let ca = a.dim(1)?;
        Ok((
            Some(grad.narrow(1, 0, ca)?),
            Some(grad.narrow(1, ca, b.dim(1)?)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The same floats as candle's `cat` (batches of two, a strided input), the same
    /// gradients, and candle's error for shapes that do not fit.
    #[test]
    fn matches_candle_cat() -> Result<()> {
        let a = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 4, 5), &Device::Cpu)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 2, 4, 5), &Device::Cpu)?)?;
        let weights = Tensor::randn(0f32, 1.0, (2, 5, 4, 5), &Device::Cpu)?;
        let want = Tensor::cat(&[a.as_tensor(), b.as_tensor()], 1)?;
        let got = concat_channels(&a, &b)?;
        assert_eq!(
            got.flatten_all()?.to_vec1::<f32>()?,
            want.flatten_all()?.to_vec1::<f32>()?
        );
        let want_grads = (want * &weights)?.sum_all()?.backward()?;
        let got_grads = (got * &weights)?.sum_all()?.backward()?;
        for v in [&a, &b] {
            assert_eq!(
                got_grads
                    .get(v)
                    .expect("gradient")
                    .flatten_all()?
                    .to_vec1::<f32>()?,
                want_grads
                    .get(v)
                    .expect("gradient")
                    .flatten_all()?
                    .to_vec1::<f32>()?
            );
        }
        let strided = b.transpose(2, 3)?;
        let other = Tensor::randn(0f32, 1.0, (2, 3, 5, 4), &Device::Cpu)?;
        assert_eq!(
            concat_channels(&other, &strided)?
                .flatten_all()?
                .to_vec1::<f32>()?,
            Tensor::cat(&[&other, &strided], 1)?
                .flatten_all()?
                .to_vec1::<f32>()?
        );
        assert!(concat_channels(&a, &other).is_err());
        Ok(())
    }
}
