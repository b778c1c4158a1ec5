//! The latent diffusion pipeline: starting noise → denoising loop in latent space, conditioned
//! on the covariates → decoded image.

use crate::covariates::{Conditioning, CovariateScaling, Covariates, PartialCovariates};
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
    /// The normalised conditioning that stood for "no covariates" in training (conditioning
    /// dropout), the unconditional branch of classifier-free guidance. `None` for a model
    /// trained without dropout (the public bundle): it can only sample conditionally, with
    /// guidance scale 1.
    pub null_condition: Option<[f32; 4]>,
    /// The normalised covariates of the training subjects, one row each: the distribution
    /// covariates left open are drawn from ([`complete_covariates`](Self::complete_covariates)).
    pub training_covariates: Option<Vec<[f32; 4]>>,
    /// The classifier-free guidance scale to sample with when the caller has no other
    /// (`model.json`'s `guidance_scale`; 1 when it has none, and for the public bundle).
    pub guidance_scale: f64,
}

/// Checks a model's default guidance scale: finite, and 1 unless the model `has_null`
/// condition; the error says which.
pub(crate) fn check_default_guidance(
    scale: f64,
    has_null: bool,
) -> std::result::Result<(), String> {
    if !scale.is_finite() {
        return Err(format!("default guidance scale {scale} is not finite"));
    }
    if scale != 1.0 && !has_null {
        return Err(format!(
            "default guidance scale {scale} needs a null condition (a model trained with conditioning dropout)"
        ));
    }
    Ok(())
}

/// One sample of a batch: its conditioning (None = unconditional) and its noise stream.
///
/// The starting noise is stream `index` of `seed` ([`NoiseGenerator::with_stream`]), and the
/// noise of stochastic steps comes from the same stream, so a request gives the same image
/// whatever else is in its batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRequest {
    /// The normalised covariates; `None` samples from the model's unconditional mode
    /// (needs a model with a [null condition](LatentDiffusionPipeline::null_condition)).
    pub conditioning: Option<Conditioning>,
    /// The run's seed.
    pub seed: u64,
    /// The sample's index in the run: its noise stream.
    pub index: u64,
}

impl LatentDiffusionPipeline {
    /// Checks that the parts fit together: channels, conditioning width, latent size; that
    /// the stored null condition and training covariates are finite; and that the default
    /// guidance scale is finite, and 1 unless there is a null condition.
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
        if let Some(null) = self
            .null_condition
            .filter(|v| v.iter().any(|x| !x.is_finite()))
        {
            return bad(format!("null condition {null:?} is not finite"));
        }
        check_default_guidance(self.guidance_scale, self.null_condition.is_some())
            .map_err(Error::InvalidRequest)?;
        let rows = self.training_covariates.as_deref().unwrap_or_default();
        if let Some(i) = rows.iter().position(|r| r.iter().any(|x| !x.is_finite())) {
            return bad(format!(
                "training covariates row {i} ({:?}) is not finite",
                rows[i]
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
        let plan = self.guidance_plan(1.0, &[Some(conditioning.validated()?)])?;
        self.denoise_planned(
            scheduler,
            &plan,
            noise,
            std::slice::from_mut(noise_source),
            progress,
        )
    }

    /// Checks that the model can sample with `guidance_scale`, and unconditionally when
    /// `unconditional`: both need a [null condition](Self::null_condition) unless the scale
    /// is 1 and every sample is conditional. Cheap: call it before any long computation.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a non-finite scale, or guidance or unconditional
    /// sampling on a model without a null condition.
    pub fn check_guidance(&self, guidance_scale: f64, unconditional: bool) -> Result<()> {
        if !guidance_scale.is_finite() {
            return Err(Error::InvalidRequest(format!(
                "guidance scale {guidance_scale} is not a finite number"
            )));
        }
        if self.null_condition.is_none() {
            let what = if unconditional {
                "unconditional sampling".to_string()
            } else if guidance_scale != 1.0 {
                format!("guidance scale {guidance_scale}")
            } else {
                return Ok(());
            };
            return Err(Error::InvalidRequest(format!(
                "{what} needs a model trained with conditioning dropout (a null_condition in its model.json); this model has none, so it only samples conditionally with guidance scale 1"
            )));
        }
        Ok(())
    }

    /// The open covariates of `partial` drawn from the model's training distribution
    /// ([`training_covariates`](Self::training_covariates)), deterministically from
    /// `(seed, index)`; see [`PartialCovariates::complete`].
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when a covariate is open and the model stores no training
    /// covariates; [`Error::InvalidCovariate`] for non-finite values.
    pub fn complete_covariates(
        &self,
        partial: &PartialCovariates,
        seed: u64,
        index: u64,
    ) -> Result<Covariates> {
        partial.complete(
            &self.covariate_scaling,
            self.training_covariates.as_deref(),
            seed,
            index,
        )
    }

    /// Lays out the UNet batch for `conditionings` at `guidance_scale`; checks the request.
    fn guidance_plan(
        &self,
        guidance_scale: f64,
        conditionings: &[Option<Conditioning>],
    ) -> Result<GuidancePlan> {
        let unconditional = conditionings.iter().any(Option::is_none);
        self.check_guidance(guidance_scale, unconditional)?;
        let null = self.null_condition.unwrap_or([0.0; NUM_COVARIATES]);
        let n = conditionings.len();
        let mut plan = GuidancePlan {
            source: (0..n as u32).collect(),
            conditioning: Vec::with_capacity(2 * n * NUM_COVARIATES),
            cond_row: (0..n as u32).collect(),
            uncond_row: (0..n as u32).collect(),
            scale: vec![0.0; n],
            guided: false,
        };
        // First one row per request: conditional when its output is needed, else the null
        // condition; then an extra unconditional row for each request that is guided.
        for conditioning in conditionings {
            let row = match conditioning {
                Some(c) if guidance_scale != 0.0 => c.0,
                _ => null,
            };
            plan.conditioning.extend_from_slice(&row);
        }
        for (i, conditioning) in conditionings.iter().enumerate() {
            if conditioning.is_some() && guidance_scale != 0.0 && guidance_scale != 1.0 {
                plan.uncond_row[i] = plan.source.len() as u32;
                plan.source.push(i as u32);
                plan.conditioning.extend_from_slice(&null);
                plan.scale[i] = guidance_scale as f32;
                plan.guided = true;
            }
        }
        Ok(plan)
    }

    /// The denoising loop over a batch `noise` `[n, c, d, h, w]` laid out by `plan`, with one
    /// noise generator per sample for stochastic steps.
    fn denoise_planned(
        &self,
        scheduler: &mut dyn Scheduler,
        plan: &GuidancePlan,
        noise: Tensor,
        noise_sources: &mut [NoiseGenerator],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor> {
        let (_, _, d, h, w) = noise.dims5()?;
        let device = noise.device().clone();
        let rows = plan.source.len();
        let values = Tensor::from_slice(&plan.conditioning, (rows, NUM_COVARIATES), &device)?
            .to_dtype(noise.dtype())?;
        let context = values.reshape((rows, 1, NUM_COVARIATES))?;
        let concat = values
            .reshape((rows, NUM_COVARIATES, 1, 1, 1))?
            .broadcast_as((rows, NUM_COVARIATES, d, h, w))?
            .contiguous()?;
        let index = |rows: &[u32]| Tensor::from_slice(rows, rows.len(), &device);
        let (source, cond_rows, uncond_rows) = (
            index(&plan.source)?,
            index(&plan.cond_row)?,
            index(&plan.uncond_row)?,
        );
        let scale = Tensor::from_slice(&plan.scale, (plan.scale.len(), 1, 1, 1, 1), &device)?
            .to_dtype(noise.dtype())?;
        let timesteps = scheduler.timesteps().to_vec();
        let mut latent = (noise * scheduler.init_noise_sigma())?;
        for (i, &t) in timesteps.iter().enumerate() {
            let model_input = scheduler.scale_model_input(&latent, t)?;
            let model_input = if plan.guided {
                model_input.index_select(&source, 0)?
            } else {
                model_input
            };
            let model_input = if self.conditioning.uses_concatenation() {
                Tensor::cat(&[&model_input, &concat], 1)?
            } else {
                model_input
            };
            let t_tensor = Tensor::new(&[t as u32], &device)?;
            let context = self.conditioning.uses_context().then_some(&context);
            let output = self.unet.forward(&model_input, &t_tensor, context, None)?;
            // eps = eps_uncond + s · (eps_cond − eps_uncond), per sample.
            let prediction = if plan.guided {
                let cond = output.index_select(&cond_rows, 0)?;
                let uncond = output.index_select(&uncond_rows, 0)?;
                (&uncond + (cond - &uncond)?.broadcast_mul(&scale)?)?
            } else {
                output
            };
            let step_noise = if scheduler.is_stochastic() {
                let per_sample = noise_sources
                    .iter_mut()
                    .enumerate()
                    .map(|(k, g)| g.randn_like(&latent.narrow(0, k, 1)?))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Some(Tensor::cat(&per_sample, 0)?)
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
    /// [`sample_batch`](Self::sample_batch) with one conditional request and guidance scale 1.
    ///
    /// # Errors
    /// As [`sample_batch`](Self::sample_batch).
    pub fn sample(
        &self,
        scheduler: &mut dyn Scheduler,
        conditioning: &Conditioning,
        seed: u64,
        index: u64,
        device: &Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor> {
        let request = SampleRequest {
            conditioning: Some(*conditioning),
            seed,
            index,
        };
        self.sample_batch(scheduler, 1.0, &[request], device, progress)
    }

    /// Samples every request in one batched denoising loop; returns [n, 1, D, H, W] f32.
    ///
    /// `scheduler` must already have its steps and be fresh (multistep schedulers keep the
    /// batch's history). Each request's starting noise is stream `index` of its `seed` and
    /// the noise of its stochastic steps comes from the same stream, so a request gives the
    /// same image whatever else is in the batch (up to the rounding of batched matrix
    /// products). One UNet forward per step serves the whole batch.
    ///
    /// Classifier-free guidance: the model output is
    /// `out_uncond + guidance_scale · (out_cond − out_uncond)` (whatever the prediction type),
    /// the unconditional output being the model's at its [null
    /// condition](Self::null_condition), computed in the same forward (the batch grows by
    /// one row per conditional request) only when the scale is not 1 or 0. Scale 1 is plain
    /// conditional sampling, scale 0 unconditional; a request without conditioning is
    /// unconditional at any scale. Each image is decoded on its own (decoding is per sample
    /// anyway, and a full-size batch would need gigabytes of activations).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for an empty batch, a non-finite scale, or guidance or an
    /// unconditional request on a model without a null condition, all before any sampling;
    /// [`Error::InvalidCovariate`] for non-finite conditioning; model and scheduler errors.
    pub fn sample_batch(
        &self,
        scheduler: &mut dyn Scheduler,
        guidance_scale: f64,
        requests: &[SampleRequest],
        device: &Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor> {
        if requests.is_empty() {
            return Err(Error::InvalidRequest("no samples requested".into()));
        }
        let conditionings = requests
            .iter()
            .map(|r| r.conditioning.map(Conditioning::validated).transpose())
            .collect::<Result<Vec<_>>>()?;
        let plan = self.guidance_plan(guidance_scale, &conditionings)?;
        let [c, d, h, w] = self.latent_shape;
        let mut noise_sources: Vec<NoiseGenerator> = requests
            .iter()
            .map(|r| NoiseGenerator::with_stream(r.seed, r.index))
            .collect();
        let noise = noise_sources
            .iter_mut()
            .map(|g| g.randn((1, c, d, h, w), DType::F32, device))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let noise = Tensor::cat(&noise, 0)?;
        let latent = self.denoise_planned(scheduler, &plan, noise, &mut noise_sources, progress)?;
        let images = (0..requests.len())
            .map(|k| {
                self.decode(&latent.narrow(0, k, 1)?)?
                    .to_dtype(DType::F32)
                    .map_err(Error::from)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&images, 0)?)
    }
}

/// How a batch of requests maps onto UNet rows under classifier-free guidance.
#[derive(Debug)]
struct GuidancePlan {
    /// Per UNet row, the sample whose latent it takes (the identity unless `guided`).
    source: Vec<u32>,
    /// Per UNet row, its normalised conditioning (`rows × 4`).
    conditioning: Vec<f32>,
    /// Per sample, the row of its conditional output.
    cond_row: Vec<u32>,
    /// Per sample, the row of its unconditional output (its `cond_row` when it has one row).
    uncond_row: Vec<u32>,
    /// Per sample, the guidance scale (unused when it has one row).
    scale: Vec<f32>,
    /// Whether some sample has two rows to combine.
    guided: bool,
}
