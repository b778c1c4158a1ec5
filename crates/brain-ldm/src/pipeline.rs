//! The latent diffusion pipeline: starting noise → denoising loop in latent space, conditioned
//! on the covariates → decoded image.

use crate::covariates::{Conditioning, CovariateScaling};
use crate::error::{Error, Result};
use brain_ldm_autoencoder::AutoencoderKL;
use brain_ldm_nifti::Affine;
use brain_ldm_schedulers::{
    DDIMConfig, DDIMScheduler, NoiseGenerator, Scheduler, SchedulerKind, TimestepSpacing,
};
use brain_ldm_unet::DiffusionModelUNet;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

/// How the covariates reach the UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditioningMode {
    /// As a one-token cross-attention context `(B, 1, 4)`.
    CrossAttention,
    /// Broadcast to the latent grid and concatenated after the latent channels.
    Concatenation,
    /// Both, as the public brain-LDM bundle does.
    Both,
}

impl ConditioningMode {
    /// The mode a UNet's configuration implies for a `latent_channels`-channel latent:
    /// concatenation when it takes [`NUM_COVARIATES`] extra input channels, cross-attention
    /// when it is built `with_conditioning`; `None` when it takes no covariates.
    pub fn of_unet(
        unet: &brain_ldm_unet::DiffusionModelUNetConfig,
        latent_channels: usize,
    ) -> Option<Self> {
        let concat = unet.in_channels == latent_channels + NUM_COVARIATES;
        match (unet.with_conditioning, concat) {
            (true, true) => Some(Self::Both),
            (true, false) => Some(Self::CrossAttention),
            (false, true) => Some(Self::Concatenation),
            (false, false) => None,
        }
    }

    /// Whether the covariates go in as a cross-attention context.
    pub fn uses_context(self) -> bool {
        matches!(self, Self::CrossAttention | Self::Both)
    }

    /// Whether the covariates are concatenated to the latent as channels.
    pub fn uses_concatenation(self) -> bool {
        matches!(self, Self::Concatenation | Self::Both)
    }
}

/// The public bundle's image grid: the 160×224×160 crop of MNI space at 1 mm. Its saver
/// writes the sub-volume `[5:-5, 5:-5, :-15]` with the affine
/// `[[-1, 0, 0, 96.48149872], [0, 1, 0, -141.47715759], [0, 0, 1, -156.55375671]]`; this is
/// the same grid extended by those 5 voxels on the first two axes.
pub const BUNDLE_IMAGE_AFFINE: Affine = [
    [-1.0, 0.0, 0.0, 101.48149872],
    [0.0, 1.0, 0.0, -146.47715759],
    [0.0, 0.0, 1.0, -156.55375671],
    [0.0, 0.0, 0.0, 1.0],
];

/// Number of covariates the conditioning carries.
pub const NUM_COVARIATES: usize = 4;

/// How a sample is drawn: sampler, number of steps, stochasticity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingSettings {
    /// The sampler.
    pub scheduler: SchedulerKind,
    /// Denoising steps.
    pub steps: usize,
    /// DDIM's eta: 0 deterministic, 1 as stochastic as DDPM (DDIM only).
    pub eta: f64,
    /// How the steps are spaced among the training timesteps.
    pub spacing: TimestepSpacing,
}

impl Default for SamplingSettings {
    /// The public bundle's: DDIM, 50 steps, eta 0, GenerativeModels-0.2 "leading" spacing.
    fn default() -> Self {
        Self {
            scheduler: SchedulerKind::Ddim,
            steps: 50,
            eta: 0.0,
            spacing: TimestepSpacing::Leading,
        }
    }
}

/// Autoencoder + UNet + the way they are conditioned: everything needed to turn covariates
/// into images with any [`Scheduler`].
pub struct LatentDiffusionPipeline {
    /// The first stage: decodes latents into images.
    pub autoencoder: AutoencoderKL,
    /// The denoiser.
    pub unet: DiffusionModelUNet,
    /// How the covariates reach the UNet.
    pub conditioning: ConditioningMode,
    /// The latent's shape without the batch axis, `[channels, d, h, w]`.
    pub latent_shape: [usize; 4],
    /// Latents are multiplied by this after encoding for training, divided before decoding.
    pub scale_factor: f64,
    /// The noise schedule and prediction type the UNet was trained with, in MONAI's argument
    /// names (`num_train_timesteps`, `schedule`, `beta_start`, `beta_end`, `prediction_type`, …).
    pub scheduler_config: serde_json::Value,
    /// Maps physical covariates to the model's normalised inputs.
    pub covariate_scaling: CovariateScaling,
    /// The world grid of the decoded images.
    pub image_affine: Affine,
}

impl LatentDiffusionPipeline {
    /// Checks that the parts fit together: channels, conditioning width, latent size.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the mismatch.
    pub fn validate(&self) -> Result<()> {
        let unet = self.unet.config();
        let ae = self.autoencoder.config();
        let [c, d, h, w] = self.latent_shape;
        let bad = |reason: String| Err(Error::InvalidRequest(reason));
        if ae.latent_channels != c || unet.out_channels != c {
            return bad(format!(
                "latent has {c} channels, the autoencoder {} and the UNet outputs {}",
                ae.latent_channels, unet.out_channels
            ));
        }
        let concat = if self.conditioning.uses_concatenation() {
            NUM_COVARIATES
        } else {
            0
        };
        if unet.in_channels != c + concat {
            return bad(format!(
                "the UNet takes {} input channels; {:?} conditioning of a {c}-channel latent needs {}",
                unet.in_channels,
                self.conditioning,
                c + concat
            ));
        }
        if self.conditioning.uses_context()
            && (!unet.with_conditioning || unet.cross_attention_dim != Some(NUM_COVARIATES))
        {
            return bad(format!(
                "cross-attention conditioning needs a UNet with_conditioning and cross_attention_dim {NUM_COVARIATES} (it has {:?})",
                unet.cross_attention_dim
            ));
        }
        let divisor = unet.spatial_divisor();
        if [d, h, w].iter().any(|s| s % divisor != 0) {
            return bad(format!(
                "latent grid {d}×{h}×{w} is not divisible by the UNet's {divisor}"
            ));
        }
        if !(self.scale_factor.is_finite() && self.scale_factor > 0.0) {
            return bad(format!(
                "scale factor {} must be positive",
                self.scale_factor
            ));
        }
        Ok(())
    }

    /// A scheduler for `settings`, on the noise schedule and prediction type the model was
    /// trained with.
    ///
    /// # Errors
    /// [`Error::Scheduler`] for settings the scheduler rejects (e.g. eta outside [0, 1]).
    pub fn scheduler(
        &self,
        settings: &SamplingSettings,
    ) -> Result<Box<dyn Scheduler + Send + Sync>> {
        let trained: DDIMConfig = serde_json::from_value(self.scheduler_config.clone())
            .map_err(|e| Error::InvalidRequest(format!("scheduler configuration: {e}")))?;
        if settings.scheduler != SchedulerKind::Ddim && settings.eta != 0.0 {
            return Err(Error::InvalidRequest(format!(
                "eta applies to DDIM only, not to {}",
                settings.scheduler
            )));
        }
        let mut scheduler: Box<dyn Scheduler + Send + Sync> = match settings.scheduler {
            SchedulerKind::Ddim => Box::new(DDIMScheduler::new(DDIMConfig {
                eta: settings.eta,
                timestep_spacing: settings.spacing,
                ..trained
            })?),
            kind => kind.build(
                trained.noise_schedule,
                trained.prediction_type,
                settings.spacing,
            )?,
        };
        scheduler.set_timesteps(settings.steps)?;
        Ok(scheduler)
    }

    /// The denoised latent for one sample: starts from `noise` (`[1, c, d, h, w]`) and runs
    /// every timestep of `scheduler` (already given its steps), drawing the noise of
    /// stochastic steps from `noise_source`. `progress(done, total)` is called after each step.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a noise tensor of the wrong shape; model and scheduler
    /// errors.
    pub fn denoise(
        &self,
        scheduler: &mut dyn Scheduler,
        conditioning: &Conditioning,
        noise: Tensor,
        noise_source: &mut NoiseGenerator,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor> {
        let [c, d, h, w] = self.latent_shape;
        if noise.dims() != [1, c, d, h, w] {
            return Err(Error::InvalidRequest(format!(
                "starting noise has shape {:?}, the model's latent is [1, {c}, {d}, {h}, {w}]",
                noise.dims()
            )));
        }
        let conditioning = conditioning.validated()?;
        let device = noise.device().clone();
        let values = Tensor::new(&conditioning.0, &device)?;
        let context = values.reshape((1, 1, NUM_COVARIATES))?;
        let concat = values
            .reshape((1, NUM_COVARIATES, 1, 1, 1))?
            .broadcast_as((1, NUM_COVARIATES, d, h, w))?
            .contiguous()?;
        let timesteps = scheduler.timesteps().to_vec();
        let mut latent = (noise * scheduler.init_noise_sigma())?;
        for (i, &t) in timesteps.iter().enumerate() {
            let model_input = scheduler.scale_model_input(&latent, t)?;
            let model_input = if self.conditioning.uses_concatenation() {
                Tensor::cat(&[&model_input, &concat], 1)?
            } else {
                model_input
            };
            let t_tensor = Tensor::new(&[t as u32], &device)?;
            let context = self.conditioning.uses_context().then_some(&context);
            let prediction = self.unet.forward(&model_input, &t_tensor, context, None)?;
            let step_noise = if scheduler.is_stochastic() {
                Some(noise_source.randn_like(&latent)?)
            } else {
                None
            };
            latent = scheduler
                .step(&prediction, t, &latent, step_noise.as_ref())?
                .prev_sample;
            progress(i + 1, timesteps.len());
        }
        Ok(latent)
    }

    /// The image `[1, 1, D, H, W]` of a denoised latent (divided by the scale factor first).
    ///
    /// # Errors
    /// Autoencoder errors.
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        let z = (latent / self.scale_factor)?;
        Ok(self.autoencoder.decode(&z)?)
    }

    /// Sample `index` of the run `seed`: its starting noise is stream `index` of `seed`, so the
    /// same `(seed, index)` gives the same image on the same device whatever else is sampled.
    ///
    /// # Errors
    /// As [`denoise`](Self::denoise) and [`decode`](Self::decode).
    pub fn sample(
        &self,
        scheduler: &mut dyn Scheduler,
        conditioning: &Conditioning,
        seed: u64,
        index: u64,
        device: &Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor> {
        let mut noise_source = NoiseGenerator::with_stream(seed, index);
        let [c, d, h, w] = self.latent_shape;
        let noise = noise_source.randn((1, c, d, h, w), DType::F32, device)?;
        let latent = self.denoise(scheduler, conditioning, noise, &mut noise_source, progress)?;
        self.decode(&latent)?
            .to_dtype(DType::F32)
            .map_err(Error::from)
    }
}
