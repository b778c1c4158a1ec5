//! The training losses, as MONAI computes them.
//!
//! Every function returns a scalar (rank-0) tensor that stays in the autograd graph.

use brain_ldm_schedulers::{NoiseSchedule, PredictionType};
use candle_core::{Result, Tensor};

/// Mean absolute error `mean|reconstruction − target|` (PyTorch's `L1Loss`).
///
/// ```
/// use candle_core::{Device, Tensor};
/// let a = Tensor::new(&[1f32, 2.0, 3.0], &Device::Cpu)?;
/// let b = Tensor::new(&[1f32, 0.0, 4.0], &Device::Cpu)?;
/// assert_eq!(brain_ldm_train::losses::l1_loss(&a, &b)?.to_scalar::<f32>()?, 1.0);
/// # Ok::<(), candle_core::Error>(())
/// ```
///
/// # Errors
/// A candle error when the shapes differ.
pub fn l1_loss(reconstruction: &Tensor, target: &Tensor) -> Result<Tensor> {
    (reconstruction - target)?.abs()?.mean_all()
}

/// Mean squared error `mean((prediction − target)²)` (PyTorch's `MSELoss`).
///
/// # Errors
/// A candle error when the shapes differ.
pub fn mse_loss(prediction: &Tensor, target: &Tensor) -> Result<Tensor> {
    (prediction - target)?.sqr()?.mean_all()
}

/// The KL divergence of `N(mu, sigma²)` from `N(0, 1)` as MONAI's tutorials compute it:
/// `0.5 · Σ_(C,D,H,W) (mu² + sigma² − log sigma² − 1)` per sample, summed over the batch and
/// divided by the batch size.
///
/// # Shapes
/// `mu`, `sigma`: `[b, c, d, h, w]` (any rank ≥ 1; the first axis is the batch).
///
/// # Errors
/// A candle error when the shapes differ.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let mu = Tensor::zeros((2, 3, 1, 1, 1), candle_core::DType::F32, &Device::Cpu)?;
/// let sigma = mu.ones_like()?;
/// assert_eq!(brain_ldm_train::losses::kl_loss(&mu, &sigma)?.to_scalar::<f32>()?, 0.0);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn kl_loss(mu: &Tensor, sigma: &Tensor) -> Result<Tensor> {
    let batch = mu.dim(0)?;
    let var = sigma.sqr()?;
    let terms = ((mu.sqr()? + &var)? - var.log()?)? - 1.0;
    terms?.sum_all()? * (0.5 / batch as f64)
}

/// MONAI's `PatchAdversarialLoss(criterion="least_squares")` on the discriminator's last
/// output (the patch logits).
///
/// MONAI first passes the logits through a LeakyReLU with slope 0.05 (unless constructed with
/// `no_activation_leastsq=True`: [`PatchAdversarialLoss::without_activation`]); with `a` that
/// activation:
///
/// * generator side: `mean((a(D(fake)) − 1)²)`: the fake is to be judged real;
/// * discriminator side: `0.5 · (mean(a(D(fake))²) + mean((a(D(real)) − 1)²))`, the average of
///   MONAI's fake and real terms as its tutorials combine them.
///
/// ```
/// use brain_ldm_train::losses::PatchAdversarialLoss;
/// use candle_core::{Device, Tensor};
/// let logits = Tensor::new(&[-2f32, 1.0], &Device::Cpu)?;
/// // LeakyReLU(0.05): [-0.1, 1.0] → mean((-1.1)², 0²) = 0.605.
/// let g = PatchAdversarialLoss::default().generator(&logits)?.to_scalar::<f32>()?;
/// assert!((g - 0.605).abs() < 1e-6);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatchAdversarialLoss {
    negative_slope: Option<f64>,
}

impl Default for PatchAdversarialLoss {
    /// MONAI's default: LeakyReLU(0.05) on the logits.
    fn default() -> Self {
        Self {
            negative_slope: Some(0.05),
        }
    }
}

impl PatchAdversarialLoss {
    /// MONAI's `no_activation_leastsq=True`: the logits enter the squares as they are.
    pub fn without_activation() -> Self {
        Self {
            negative_slope: None,
        }
    }

    fn activate(&self, logits: &Tensor) -> Result<Tensor> {
        match self.negative_slope {
            Some(slope) => logits.maximum(&(logits * slope)?),
            None => Ok(logits.clone()),
        }
    }

    /// The generator's loss on the logits of its reconstructions.
    ///
    /// # Errors
    /// A candle error from the tensor operations.
    pub fn generator(&self, logits_fake: &Tensor) -> Result<Tensor> {
        (self.activate(logits_fake)? - 1.0)?.sqr()?.mean_all()
    }

    /// The discriminator's loss; pass the logits of detached reconstructions as `logits_fake`.
    ///
    /// # Errors
    /// A candle error from the tensor operations.
    pub fn discriminator(&self, logits_fake: &Tensor, logits_real: &Tensor) -> Result<Tensor> {
        let fake = self.activate(logits_fake)?.sqr()?.mean_all()?;
        let real = (self.activate(logits_real)? - 1.0)?.sqr()?.mean_all()?;
        (fake + real)? * 0.5
    }
}

/// A perceptual (feature-space) reconstruction loss, such as LPIPS on a pretrained network.
///
/// brain-ldm ships no implementation: the networks the paper used (LPIPS over a 2D
/// ImageNet network, or MedicalNet/RadImageNet in MONAI's `PerceptualLoss`) need pretrained
/// weights that cannot be downloaded in this project's environment. Implement the trait over
/// your own network and pass it to [`crate::AutoencoderTrainer::with_perceptual_loss`]; its
/// value is weighted by `perceptual_weight` and added to the generator's loss.
///
/// ```
/// use brain_ldm_train::losses::PerceptualLoss;
/// use candle_core::Tensor;
/// /// Gradient-magnitude difference: a stand-in that needs no weights.
/// struct Edges;
/// impl PerceptualLoss for Edges {
///     fn loss(&self, reconstruction: &Tensor, target: &Tensor) -> candle_core::Result<Tensor> {
///         let d = |x: &Tensor| -> candle_core::Result<Tensor> {
///             let n = x.dim(2)?;
///             x.narrow(2, 1, n - 1)? - x.narrow(2, 0, n - 1)?
///         };
///         (d(reconstruction)? - d(target)?)?.abs()?.mean_all()
///     }
/// }
/// ```
pub trait PerceptualLoss: Send {
    /// The loss between a batch of reconstructions and their targets (`[b, c, d, h, w]`), a
    /// scalar tensor differentiable with respect to `reconstruction`.
    ///
    /// # Errors
    /// Whatever the implementation's tensor operations return.
    fn loss(&self, reconstruction: &Tensor, target: &Tensor) -> Result<Tensor>;
}

/// The denoising loss of latent diffusion: `mse(prediction, target)` where the target is
/// `ε`, `x₀` or the velocity `sqrt(ᾱ_t)·ε − sqrt(1 − ᾱ_t)·x₀` as `prediction_type` says
/// (MONAI's `DiffusionInferer` training step).
///
/// # Shapes
/// `prediction`, `x0`, `noise`: `[b, c, d, h, w]`; `timesteps`: `[b]`.
///
/// # Errors
/// [`brain_ldm_schedulers::Error`] for mismatched shapes or timesteps out of range.
pub fn diffusion_loss(
    schedule: &NoiseSchedule,
    prediction_type: PredictionType,
    prediction: &Tensor,
    x0: &Tensor,
    noise: &Tensor,
    timesteps: &Tensor,
) -> brain_ldm_schedulers::Result<Tensor> {
    let target = schedule.training_target(prediction_type, x0, noise, timesteps)?;
    Ok(mse_loss(prediction, &target)?)
}
