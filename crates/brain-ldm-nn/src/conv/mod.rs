//! 3D convolution: a fast CPU kernel with its gradients, a plain-tensor reference that runs on
//! any device, the transposed convolution, and the [`Conv3d`] layer.

mod cpu;
#[cfg(target_arch = "x86_64")]
mod direct_x86;
mod geometry;
mod im2col;
mod winograd;

#[cfg(test)]
mod test_support {
    /// `n` deterministic values in [-1, 1) from a small LCG seeded by `seed`.
    pub(super) fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }
}

pub use geometry::Conv3dConfig;
pub(crate) use geometry::ConvGeometry;

use crate::bias::add_channel_bias;
use crate::error::NnError;
use crate::storage::contiguous_f32;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;

/// 3D cross-correlation (PyTorch's `conv3d`, groups = 1), without bias.
///
/// On the CPU with f32 (f16/bf16 are computed in f32) this runs the tiled GEMM kernel and is
/// differentiable through its own backward pass; on other devices it runs
/// [`conv3d_reference`].
///
/// # Shapes
/// `x`: `[b, c_in, d, h, w]`, `weight`: `[c_out, c_in, kd, kh, kw]` → `[b, c_out, od, oh, ow]`
/// with `od = (d + pad_before + pad_after − kd) / stride + 1` (likewise for h, w).
///
/// # Errors
/// [`NnError`] (wrapped in a candle error) for a wrong rank, a channel mismatch, a zero-sized
/// dimension, a zero stride or a padded input smaller than the kernel.
///
/// ```
/// use brain_ldm_nn::{ops, Conv3dConfig};
/// use candle_core::{Device, Tensor};
/// let x = Tensor::ones((1, 2, 4, 4, 4), candle_core::DType::F32, &Device::Cpu)?;
/// let w = Tensor::ones((3, 2, 3, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let y = ops::conv3d(&x, &w, &Conv3dConfig::new(1, 1))?;
/// assert_eq!(y.dims(), &[1, 3, 4, 4, 4]);
/// // The centre voxel sees all 2·27 ones.
/// assert_eq!(y.get(0)?.get(0)?.get(1)?.get(1)?.get(1)?.to_scalar::<f32>()?, 54.0);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn conv3d(x: &Tensor, weight: &Tensor, cfg: &Conv3dConfig) -> Result<Tensor> {
    ConvGeometry::new(x.dims(), weight.dims(), cfg)?;
    if !x.device().is_cpu() {
        return conv3d_reference(x, weight, cfg);
    }
    match x.dtype() {
        DType::F32 => {
            let w = weight.to_dtype(DType::F32)?.contiguous()?;
            x.contiguous()?.apply_op2(&w, Conv3dOp { cfg: *cfg })
        }
        DType::F16 | DType::BF16 => {
            let y = conv3d(&x.to_dtype(DType::F32)?, weight, cfg)?;
            y.to_dtype(x.dtype())
        }
        _ => conv3d_reference(x, weight, cfg),
    }
}

/// 3D convolution composed of candle's own ops (a `conv2d` per kernel depth tap), on any
/// device and dtype, differentiable through candle's autograd.
///
/// It is the reference the fast kernel is tested against, and the path used off the CPU.
///
/// # Shapes
/// As [`conv3d`].
///
/// # Errors
/// As [`conv3d`].
pub fn conv3d_reference(x: &Tensor, weight: &Tensor, cfg: &Conv3dConfig) -> Result<Tensor> {
    let g = ConvGeometry::new(x.dims(), weight.dims(), cfg)?;
    let mut xp = x.clone();
    for (axis, &(before, after)) in cfg.padding.iter().enumerate() {
        if before + after > 0 {
            xp = xp.pad_with_zeros(2 + axis, before, after)?;
        }
    }
    let [od, oh, ow] = g.output;
    let (hp, wp) = (xp.dim(3)?, xp.dim(4)?);
    let mut acc: Option<Tensor> = None;
    for kd in 0..g.kernel[0] {
        let depths: Vec<u32> = (0..od).map(|o| (kd + o * g.stride[0]) as u32).collect();
        let depths = Tensor::new(depths, x.device())?;
        let slab = xp
            .index_select(&depths, 2)?
            .permute((0, 2, 1, 3, 4))?
            .reshape((g.batch * od, g.c_in, hp, wp))?;
        let w2 = weight.narrow(2, kd, 1)?.squeeze(2)?.contiguous()?;
        let mut y = slab.conv2d(&w2, 0, 1, 1, 1)?;
        for (axis, stride, len) in [(2, g.stride[1], oh), (3, g.stride[2], ow)] {
            if stride > 1 {
                let keep: Vec<u32> = (0..len).map(|i| (i * stride) as u32).collect();
                y = y.index_select(&Tensor::new(keep, x.device())?, axis)?;
            }
        }
        acc = Some(match acc {
            None => y,
            Some(a) => (a + y)?,
        });
    }
    let acc = acc.ok_or_else(|| NnError::EmptyDim {
        op: "conv3d",
        shape: weight.dims().to_vec(),
    })?;
    acc.reshape((g.batch, od, g.c_out, oh, ow))?
        .permute((0, 2, 1, 3, 4))?
        .contiguous()
}

/// Stride, padding and output padding of a transposed 3D convolution, as
/// `torch.nn.ConvTranspose3d` takes them (the same value along every axis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvTranspose3dConfig {
    /// Stride of the convolution this one transposes.
    pub stride: usize,
    /// Padding of the convolution this one transposes (removed from the output).
    pub padding: usize,
    /// Extra size added after each axis of the output (less than `stride`).
    pub output_padding: usize,
}

impl Default for ConvTranspose3dConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            output_padding: 0,
        }
    }
}

/// Transposed 3D convolution (PyTorch's `conv_transpose3d`, groups = 1), without bias.
///
/// # Shapes
/// `x`: `[b, c_in, d, h, w]`, `weight`: `[c_in, c_out, k, k, k]` (PyTorch's layout) →
/// `[b, c_out, (d − 1)·stride − 2·padding + k + output_padding, …]`.
///
/// # Errors
/// [`NnError`] for a wrong rank, a channel mismatch or an output padding not below the stride.
pub fn conv_transpose3d(
    x: &Tensor,
    weight: &Tensor,
    cfg: &ConvTranspose3dConfig,
) -> Result<Tensor> {
    const OP: &str = "conv_transpose3d";
    crate::error::check_rank(OP, x.dims(), 5)?;
    crate::error::check_rank(OP, weight.dims(), 5)?;
    if x.dim(1)? != weight.dim(0)? {
        return Err(NnError::Channels {
            op: OP,
            expected: weight.dim(0)?,
            got: x.dim(1)?,
        }
        .into());
    }
    if cfg.stride == 0 || cfg.output_padding >= cfg.stride {
        return Err(NnError::Geometry {
            op: OP,
            reason: format!(
                "output padding {} must be smaller than the stride {}",
                cfg.output_padding, cfg.stride
            ),
        }
        .into());
    }
    let w_t = flip_transpose(weight)?;
    let mut pads = [(0isize, 0isize); 3];
    for (a, pad) in pads.iter_mut().enumerate() {
        let k = weight.dim(2 + a)? as isize;
        let p = cfg.padding as isize;
        *pad = (k - 1 - p, k - 1 - p + cfg.output_padding as isize);
    }
    correlate_dilated(x, &w_t, [cfg.stride; 3], pads)
}

/// Swaps the channel axes of a `[a, b, k…]` kernel and reverses its taps: the kernel that
/// maps a convolution's output gradient back to its input.
fn flip_transpose(weight: &Tensor) -> Result<Tensor> {
    let (a, b, kd, kh, kw) = weight.dims5()?;
    if !(weight.device().is_cpu() && weight.dtype() == DType::F32) {
        return weight.flip(&[2, 3, 4])?.transpose(0, 1)?.contiguous();
    }
    // Reversing all three tap axes reverses each channel pair's raster of taps (candle's
    // `flip` gathers axis by axis, several times slower).
    let taps = kd * kh * kw;
    let w = weight.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; w.len()];
    for (pair, src) in w.chunks_exact(taps).enumerate() {
        let (i, j) = (pair / b, pair % b);
        let dst = &mut out[(j * a + i) * taps..(j * a + i + 1) * taps];
        dst.iter_mut()
            .zip(src.iter().rev())
            .for_each(|(d, s)| *d = *s);
    }
    Tensor::from_vec(out, (b, a, kd, kh, kw), weight.device())
}

/// Stride-1 correlation of `x` dilated by `dilation` (zeros between samples) with `weight`,
/// after padding `(before, after)` per axis; negative padding crops.
fn correlate_dilated(
    x: &Tensor,
    weight: &Tensor,
    dilation: [usize; 3],
    pads: [(isize, isize); 3],
) -> Result<Tensor> {
    let mut x = x.clone();
    for (a, &s) in dilation.iter().enumerate() {
        if s > 1 {
            let axis = 2 + a;
            let len = x.dim(axis)?;
            let mut dims = x.dims().to_vec();
            dims[axis] = len * s;
            x = x
                .unsqueeze(axis + 1)?
                .pad_with_zeros(axis + 1, 0, s - 1)?
                .reshape(dims)?
                .narrow(axis, 0, (len - 1) * s + 1)?;
        }
    }
    let mut padding = [(0usize, 0usize); 3];
    for (a, &(before, after)) in pads.iter().enumerate() {
        let axis = 2 + a;
        if before < 0 {
            let cut = before.unsigned_abs();
            x = x.narrow(axis, cut, x.dim(axis)? - cut)?;
        }
        if after < 0 {
            let cut = after.unsigned_abs();
            x = x.narrow(axis, 0, x.dim(axis)? - cut)?;
        }
        padding[a] = (before.max(0) as usize, after.max(0) as usize);
    }
    let cfg = Conv3dConfig {
        stride: [1; 3],
        padding,
    };
    conv3d(&x, weight, &cfg)
}

/// The fast CPU convolution as a candle op with its backward pass.
struct Conv3dOp {
    cfg: Conv3dConfig,
}

impl CustomOp2 for Conv3dOp {
    fn name(&self) -> &'static str {
        "conv3d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = ConvGeometry::new(l1.dims(), l2.dims(), &self.cfg)?;
        let x = contiguous_f32(s1, l1, "conv3d")?;
        let w = contiguous_f32(s2, l2, "conv3d")?;
        let out = cpu::conv3d_forward(x, w, &g);
        let shape = Shape::from((g.batch, g.c_out, g.output[0], g.output[1], g.output[2]));
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = ConvGeometry::new(x.dims(), w.dims(), &self.cfg)?;
        let grad = grad.contiguous()?;
        // Gradients only for the operands that carry one (not an image, a detached tensor or
        // frozen weights): candle asks for both.
        let grad_x = if !x.track_op() {
            None
        } else if g.stride == [1; 3] {
            // The output gradient correlated with the flipped, channel-transposed kernel,
            // padded so that the result has the input's size.
            let mut pads = [(0isize, 0isize); 3];
            for (a, pad) in pads.iter_mut().enumerate() {
                let k = g.kernel[a] as isize;
                let before = g.padding[a].0 as isize;
                *pad = (
                    k - 1 - before,
                    before + g.input[a] as isize - g.output[a] as isize,
                );
            }
            Some(correlate_dilated(&grad, &flip_transpose(w)?, [1; 3], pads)?)
        } else {
            Some(grad.apply_op2_no_bwd(
                w,
                &Conv3dInputGradOp {
                    cfg: self.cfg,
                    x_dims: [g.batch, g.c_in, g.input[0], g.input[1], g.input[2]],
                },
            )?)
        };
        let grad_w = if w.track_op() {
            Some(x.apply_op2_no_bwd(
                &grad,
                &Conv3dWeightGradOp {
                    cfg: self.cfg,
                    kernel: g.kernel,
                    c_out: g.c_out,
                },
            )?)
        } else {
            None
        };
        Ok((grad_x, grad_w))
    }
}

/// The input gradient of a strided [`Conv3dOp`]: `(grad_out, weight) → grad_x`.
struct Conv3dInputGradOp {
    cfg: Conv3dConfig,
    x_dims: [usize; 5],
}

impl CustomOp2 for Conv3dInputGradOp {
    fn name(&self) -> &'static str {
        "conv3d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = ConvGeometry::new(&self.x_dims, l2.dims(), &self.cfg)?;
        let grad = contiguous_f32(s1, l1, "conv3d-input-grad")?;
        let w = contiguous_f32(s2, l2, "conv3d-input-grad")?;
        let gx = cpu::conv3d_input_grad(grad, w, &g);
        Ok((CpuStorage::F32(gx), Shape::from(self.x_dims.to_vec())))
    }
}

/// The weight gradient of [`Conv3dOp`]: `(x, grad_out) → grad_weight`.
struct Conv3dWeightGradOp {
    cfg: Conv3dConfig,
    kernel: [usize; 3],
    c_out: usize,
}

impl CustomOp2 for Conv3dWeightGradOp {
    fn name(&self) -> &'static str {
        "conv3d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x_dims = l1.dims();
        let [kd, kh, kw] = self.kernel;
        let w_dims = [self.c_out, x_dims[1], kd, kh, kw];
        let g = ConvGeometry::new(x_dims, &w_dims, &self.cfg)?;
        let x = contiguous_f32(s1, l1, "conv3d-weight-grad")?;
        let grad = contiguous_f32(s2, l2, "conv3d-weight-grad")?;
        let gw = cpu::conv3d_weight_grad(x, grad, &g);
        Ok((CpuStorage::F32(gw), Shape::from(w_dims.to_vec())))
    }
}

/// A 3D convolution layer with optional bias; weights in PyTorch's layout.
#[derive(Debug, Clone)]
pub struct Conv3d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv3dConfig,
}

impl Conv3d {
    /// A layer from its weight `[c_out, c_in, kd, kh, kw]` and optional bias `[c_out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv3dConfig) -> Self {
        Self {
            weight,
            bias,
            config,
        }
    }

    /// The weight, `[c_out, c_in, kd, kh, kw]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[c_out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Stride and padding.
    pub fn config(&self) -> &Conv3dConfig {
        &self.config
    }
}

impl Module for Conv3d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = conv3d(x, &self.weight, &self.config)?;
        match &self.bias {
            None => Ok(y),
            Some(b) => add_channel_bias(&y, b),
        }
    }
}

/// Loads a [`Conv3d`] with bias from `vb` (`weight`, `bias`), as `torch.nn.Conv3d` stores it.
///
/// # Errors
/// A candle error naming the key when a tensor is missing or has the wrong shape.
pub fn conv3d_layer(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    config: Conv3dConfig,
    vb: VarBuilder,
) -> Result<Conv3d> {
    let init = candle_nn::init::DEFAULT_KAIMING_NORMAL;
    let weight = vb.get_with_hints((c_out, c_in, kernel, kernel, kernel), "weight", init)?;
    let bound = 1.0 / ((c_in * kernel * kernel * kernel) as f64).sqrt();
    let bias_init = candle_nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let bias = vb.get_with_hints(c_out, "bias", bias_init)?;
    Ok(Conv3d::new(weight, Some(bias), config))
}

/// Loads a transposed convolution `[c_in, c_out, k, k, k]` with bias from `vb`, as
/// `torch.nn.ConvTranspose3d` stores it.
///
/// # Errors
/// A candle error naming the key when a tensor is missing or has the wrong shape.
pub fn conv_transpose3d_layer(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    config: ConvTranspose3dConfig,
    vb: VarBuilder,
) -> Result<ConvTranspose3d> {
    let init = candle_nn::init::DEFAULT_KAIMING_NORMAL;
    let weight = vb.get_with_hints((c_in, c_out, kernel, kernel, kernel), "weight", init)?;
    let bias = vb.get_with_hints(c_out, "bias", candle_nn::Init::Const(0.0))?;
    Ok(ConvTranspose3d {
        weight,
        bias: Some(bias),
        config,
    })
}

/// A transposed 3D convolution layer with optional bias; weights in PyTorch's layout
/// `[c_in, c_out, k, k, k]`.
#[derive(Debug, Clone)]
pub struct ConvTranspose3d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: ConvTranspose3dConfig,
}

impl ConvTranspose3d {
    /// A layer from its weight `[c_in, c_out, k, k, k]` and optional bias `[c_out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: ConvTranspose3dConfig) -> Self {
        Self {
            weight,
            bias,
            config,
        }
    }
}

impl Module for ConvTranspose3d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = conv_transpose3d(x, &self.weight, &self.config)?;
        match &self.bias {
            None => Ok(y),
            Some(b) => add_channel_bias(&y, b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The CPU f32 path equals candle's flip + transpose (which other devices use).
    #[test]
    fn flip_transpose_reverses_taps_and_swaps_channels() {
        let w = Tensor::rand(-1f32, 1f32, (3, 2, 3, 2, 4), &Device::Cpu).unwrap();
        let reference = w
            .flip(&[2, 3, 4])
            .and_then(|t| t.transpose(0, 1))
            .and_then(|t| t.contiguous())
            .unwrap();
        let got = flip_transpose(&w).unwrap();
        assert_eq!(got.dims(), [2, 3, 3, 2, 4]);
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(values(&got), values(&reference));
    }
}
