//! A seeded source of standard-normal noise that the caller owns.
//!
//! Candle's CPU backend cannot be seeded (`Device::set_seed` fails on the CPU), so
//! `Tensor::randn` is not reproducible there. [`NoiseGenerator`] draws on the host from a
//! ChaCha8 stream (value-stable across `rand_chacha` releases) and moves the result to the
//! target device, so a seed gives the same noise on every device and dtype (up to the dtype's
//! rounding).

use candle_core::{DType, Device, Shape, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::tensor_ops::compute_dtype;
use crate::Result;

/// Standard-normal noise from a seeded generator: the initial noise of a sampling loop and
/// the noise of stochastic steps ([`crate::Scheduler::step`]'s `noise` argument).
///
/// Draws are sequential: the `k`-th tensor drawn depends on the seed and on the sizes of the
/// tensors drawn before it, never on the device or on other generators.
///
/// ```
/// use brain_ldm_schedulers::NoiseGenerator;
/// use candle_core::{DType, Device};
///
/// let mut a = NoiseGenerator::new(42);
/// let mut b = NoiseGenerator::new(42);
/// let x = a.randn((2, 3), DType::F32, &Device::Cpu)?;
/// let y = b.randn((2, 3), DType::F32, &Device::Cpu)?;
/// assert_eq!(x.to_vec2::<f32>()?, y.to_vec2::<f32>()?);
/// # Ok::<(), brain_ldm_schedulers::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct NoiseGenerator {
    seed: u64,
    rng: ChaCha8Rng,
}

impl NoiseGenerator {
    /// A generator at the start of stream `stream` of `seed`: independent streams of one
    /// seed, e.g. one per sample of a run, so that sample `i` does not depend on the others.
    pub fn with_stream(seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Self { seed, rng }
    }

    /// A generator at the start of the stream of `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The seed this generator was created with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A tensor of independent `N(0, 1)` values (Box–Muller on the host in f64, rounded to
    /// `dtype`), on `device`.
    ///
    /// # Errors
    /// [`crate::Error::UnsupportedDType`] for a non-float `dtype`; a candle error from the
    /// transfer to `device`.
    pub fn randn<S: Into<Shape>>(
        &mut self,
        shape: S,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        compute_dtype("noise", dtype)?;
        let shape: Shape = shape.into();
        let n = shape.elem_count();
        let mut values = Vec::with_capacity(n + 1);
        while values.len() < n {
            // u1 in (0, 1] keeps the logarithm finite.
            let u1: f64 = 1.0 - self.rng.random::<f64>();
            let u2: f64 = self.rng.random::<f64>();
            let r = (-2.0 * u1.ln()).sqrt();
            let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
            values.push(r * c);
            values.push(r * s);
        }
        values.truncate(n);
        let t = Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?;
        Ok(t.to_device(device)?)
    }

    /// Noise of the shape, dtype and device of `like`.
    ///
    /// # Errors
    /// As [`NoiseGenerator::randn`].
    pub fn randn_like(&mut self, like: &Tensor) -> Result<Tensor> {
        self.randn(like.shape().clone(), like.dtype(), like.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_noise_other_seed_other_noise() {
        let draw = |seed| {
            let mut g = NoiseGenerator::new(seed);
            let a = g
                .randn(7, DType::F64, &Device::Cpu)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let b = g
                .randn(7, DType::F64, &Device::Cpu)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            (a, b)
        };
        let (a1, b1) = draw(3);
        let (a2, b2) = draw(3);
        assert_eq!((&a1, &b1), (&a2, &b2));
        assert_ne!(a1, b1, "consecutive draws must differ");
        assert_ne!(a1, draw(4).0);
    }

    #[test]
    fn moments_are_standard_normal() {
        let mut g = NoiseGenerator::new(7);
        let n = 200_000;
        let x = g
            .randn(n, DType::F64, &Device::Cpu)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let mean = x.iter().sum::<f64>() / n as f64;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        // Standard errors: 1/sqrt(n) = 2.2e-3 for the mean, sqrt(2/n) = 3.2e-3 for the variance.
        assert!(mean.abs() < 0.011, "mean {mean}");
        assert!((var - 1.0).abs() < 0.016, "variance {var}");
    }

    #[test]
    fn dtypes_round_the_same_draw_and_integers_are_refused() {
        let f32s = NoiseGenerator::new(1)
            .randn((2, 2), DType::F32, &Device::Cpu)
            .unwrap();
        let f16s = NoiseGenerator::new(1)
            .randn((2, 2), DType::F16, &Device::Cpu)
            .unwrap();
        assert_eq!(f16s.dtype(), DType::F16);
        let a = f32s
            .to_dtype(DType::F16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let b = f16s.to_dtype(DType::F32).unwrap();
        assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
        let err = NoiseGenerator::new(1).randn(3, DType::U32, &Device::Cpu);
        assert!(matches!(err, Err(crate::Error::UnsupportedDType { .. })));
    }
}
