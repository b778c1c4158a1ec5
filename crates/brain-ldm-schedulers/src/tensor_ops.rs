//! Small tensor helpers shared by the schedulers: compute dtype, shape checks, per-sample
//! coefficients, and linear combinations with host (f64) coefficients.

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// The dtype a scheduler computes in for a tensor of `dtype`: f32 for f16/bf16/f32, f64 for
/// f64.
pub(crate) fn compute_dtype(what: &'static str, dtype: DType) -> Result<DType> {
    match dtype {
        DType::F16 | DType::BF16 | DType::F32 => Ok(DType::F32),
        DType::F64 => Ok(DType::F64),
        other => Err(Error::UnsupportedDType { what, dtype: other }),
    }
}

/// Errors unless `got` has the shape `expected`.
pub(crate) fn check_shape(what: &'static str, expected: &[usize], got: &Tensor) -> Result<()> {
    if got.dims() != expected {
        return Err(Error::ShapeMismatch {
            what,
            expected: expected.to_vec(),
            got: got.dims().to_vec(),
        });
    }
    Ok(())
}

/// `a·x + b·y` with host coefficients.
pub(crate) fn lin2(a: f64, x: &Tensor, b: f64, y: &Tensor) -> Result<Tensor> {
    Ok(((x * a)? + (y * b)?)?)
}

/// A `[B, 1, …, 1]` tensor of rank `rank` holding one value per sample, to broadcast against a
/// batch.
pub(crate) fn per_sample(
    values: &[f64],
    rank: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let mut shape = vec![1usize; rank.max(1)];
    shape[0] = values.len();
    let t = Tensor::from_slice(values, values.len(), &Device::Cpu)?
        .reshape(shape)?
        .to_dtype(dtype)?
        .to_device(device)?;
    Ok(t)
}

/// The per-sample timesteps of a 1-D tensor of length `batch`, checked to be whole numbers in
/// `0..num_train_timesteps`. Any integer or float dtype is accepted.
pub(crate) fn timesteps_vec(
    timesteps: &Tensor,
    batch: usize,
    num_train_timesteps: usize,
) -> Result<Vec<usize>> {
    check_shape("timesteps", &[batch], timesteps)?;
    let values = timesteps.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    values
        .into_iter()
        .map(|v| {
            if v.fract() != 0.0 || !v.is_finite() {
                return Err(Error::NonIntegerTimestep { value: v });
            }
            if v < 0.0 || v >= num_train_timesteps as f64 {
                return Err(Error::TimestepOutOfRange {
                    timestep: v as i64,
                    num_train_timesteps,
                });
            }
            Ok(v as usize)
        })
        .collect()
}
