//! 3D nearest-neighbour upsampling and average pooling.

use crate::error::{check_rank, NnError};
use crate::storage::contiguous_f32;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Nearest-neighbour upsampling of `[b, c, d, h, w]` by integer factors per axis, as
/// `torch.nn.functional.interpolate(mode="nearest", scale_factor=…)` for integer factors.
///
/// Fast on the CPU for f32; composed of candle ops elsewhere; differentiable everywhere.
///
/// # Shapes
/// `[b, c, d, h, w]` → `[b, c, d·fd, h·fh, w·fw]`.
///
/// # Errors
/// [`NnError`] for a wrong rank, a zero-sized dimension or a zero factor.
///
/// ```
/// use brain_ldm_nn::ops::upsample_nearest3d;
/// use candle_core::{Device, Tensor};
/// let x = Tensor::arange(0f32, 8., &Device::Cpu)?.reshape((1, 1, 2, 2, 2))?;
/// let y = upsample_nearest3d(&x, [2, 2, 2])?;
/// assert_eq!(y.dims(), &[1, 1, 4, 4, 4]);
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?[..4], [0., 0., 1., 1.]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn upsample_nearest3d(x: &Tensor, factors: [usize; 3]) -> Result<Tensor> {
    const OP: &str = "upsample_nearest3d";
    check_rank(OP, x.dims(), 5)?;
    if factors.contains(&0) {
        return Err(NnError::Geometry {
            op: OP,
            reason: format!("scale factors {factors:?} must be at least 1"),
        }
        .into());
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(UpsampleNearest { factors })
    } else {
        upsample_nearest3d_reference(x, factors)
    }
}

/// [`upsample_nearest3d`] composed of candle ops (broadcast and reshape), on any device.
///
/// # Errors
/// As [`upsample_nearest3d`].
pub fn upsample_nearest3d_reference(x: &Tensor, factors: [usize; 3]) -> Result<Tensor> {
    check_rank("upsample_nearest3d", x.dims(), 5)?;
    let (b, c, d, h, w) = x.dims5()?;
    let [fd, fh, fw] = factors;
    x.reshape(vec![b, c, d, 1, h, 1, w, 1])?
        .broadcast_as(vec![b, c, d, fd, h, fh, w, fw])?
        .contiguous()?
        .reshape((b, c, d * fd, h * fh, w * fw))
}

/// Average pooling of `[b, c, d, h, w]` with a cubic window `kernel` and stride `kernel`
/// (PyTorch's `avg_pool3d(kernel, stride=kernel)`; trailing voxels that do not fill a window
/// are dropped, as PyTorch does).
///
/// # Shapes
/// `[b, c, d, h, w]` → `[b, c, d / k, h / k, w / k]`.
///
/// # Errors
/// [`NnError`] for a wrong rank or a volume smaller than the window.
///
/// ```
/// use brain_ldm_nn::ops::avg_pool3d;
/// use candle_core::{Device, Tensor};
/// let x = Tensor::arange(0f32, 8., &Device::Cpu)?.reshape((1, 1, 2, 2, 2))?;
/// let y = avg_pool3d(&x, 2)?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [3.5]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn avg_pool3d(x: &Tensor, kernel: usize) -> Result<Tensor> {
    const OP: &str = "avg_pool3d";
    check_rank(OP, x.dims(), 5)?;
    let (b, c, d, h, w) = x.dims5()?;
    let k = kernel;
    if k == 0 || d < k || h < k || w < k {
        return Err(NnError::Geometry {
            op: OP,
            reason: format!("window {k} does not fit the volume {:?}", &x.dims()[2..]),
        }
        .into());
    }
    let (od, oh, ow) = (d / k, h / k, w / k);
    let x = x
        .narrow(2, 0, od * k)?
        .narrow(3, 0, oh * k)?
        .narrow(4, 0, ow * k)?
        .contiguous()?;
    let y = x
        .reshape(vec![b, c, od, k, oh, k, ow, k])?
        .sum(7)?
        .sum(5)?
        .sum(3)?;
    y / (k * k * k) as f64
}

/// The fast CPU nearest upsampling, with its gradient (a sum over each block).
struct UpsampleNearest {
    factors: [usize; 3],
}

impl CustomOp1 for UpsampleNearest {
    fn name(&self) -> &'static str {
        "upsample-nearest3d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, d, h, w) = l.shape().dims5()?;
        let [fd, fh, fw] = self.factors;
        let x = contiguous_f32(s, l, "upsample_nearest3d")?;
        let (ud, uh, uw) = (d * fd, h * fh, w * fw);
        let mut out = vec![0f32; b * c * ud * uh * uw];
        out.par_chunks_mut(ud * uh * uw)
            .zip(x.par_chunks(d * h * w))
            .for_each(|(dst, src)| {
                for z in 0..d {
                    for y in 0..h {
                        let row = &src[(z * h + y) * w..(z * h + y + 1) * w];
                        let first = ((z * fd) * uh + y * fh) * uw;
                        for (i, v) in row.iter().enumerate() {
                            dst[first + i * fw..first + (i + 1) * fw].fill(*v);
                        }
                        for r in 1..fh {
                            dst.copy_within(first..first + uw, first + r * uw);
                        }
                        for p in 1..fd {
                            let to = ((z * fd + p) * uh + y * fh) * uw;
                            dst.copy_within(first..first + fh * uw, to);
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, c, ud, uh, uw))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (b, c, d, h, w) = x.dims5()?;
        let [fd, fh, fw] = self.factors;
        let g = grad
            .contiguous()?
            .reshape(vec![b, c, d, fd, h, fh, w, fw])?
            .sum(7)?
            .sum(5)?
            .sum(3)?;
        Ok(Some(g))
    }
}
