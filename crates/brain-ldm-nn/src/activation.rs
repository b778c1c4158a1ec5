//! Activations beyond candle's own (`Tensor::silu`, `Tensor::gelu_erf`).

use candle_core::{Result, Tensor, D};

/// The gated GELU of MONAI's transformer feed-forward: the last axis is split into halves
/// `(a, b)` and the result is `a · gelu_erf(b)` (first half value, second half gate).
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
    let a = x.narrow(D::Minus1, 0, n / 2)?;
    let b = x.narrow(D::Minus1, n / 2, n / 2)?;
    a * b.gelu_erf()?
}
