//! Stage 2: the diffusion UNet on cached latents of a trained autoencoder, conditioned on the
//! covariates, with conditioning dropout and EMA; writes a model folder `brain-ldm sample`
//! loads.

use std::collections::HashMap;
use std::path::Path;

use brain_ldm::{ConditioningMode, ModelFolderConfig, MODEL_FOLDER_FORMAT, NUM_COVARIATES};
use brain_ldm_autoencoder::{AutoencoderKL, AutoencoderKLConfig};
use brain_ldm_schedulers::{NoiseGenerator, NoiseSchedule, PredictionType};
use brain_ldm_unet::DiffusionModelUNet;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::config::{CommonConfig, DiffusionTrainConfig};
use crate::data::{batch_items, conditioning, covariate_scaling, mix, Dataset, Subject};
use crate::error::{io, Result, TrainError};
use crate::latents;
use crate::losses::diffusion_loss;
use crate::optim::{AdamW, Ema, Gradients, Parameters};
use crate::run::{
    load_tensors, save_tensors, seeded_init, train_until, write_atomically, RunDir, Stage,
    StepLosses, StepReport,
};

/// One subject's cached latent distribution and normalised covariates.
struct Item {
    mu: Tensor,
    sigma: Tensor,
    cond: [f32; 4],
}

/// Trains a [`DiffusionModelUNet`] on the latents of a stage-1 autoencoder. The output folder
/// is a brain-ldm model folder (`model.json`, `autoencoder.safetensors`, `unet.safetensors`:
/// EMA weights when EMA is on) plus checkpoints and `log.jsonl`.
pub struct DiffusionTrainer {
    config: DiffusionTrainConfig,
    run: RunDir,
    device: Device,
    autoencoder_dir: std::path::PathBuf,
    train: Vec<Item>,
    val: Vec<Item>,
    model: DiffusionModelUNet,
    params: Parameters,
    opt: AdamW,
    ema: Option<Ema>,
    schedule: NoiseSchedule,
    prediction: PredictionType,
    mode: ConditioningMode,
    folder: ModelFolderConfig,
    step: u64,
    latents_cached: bool,
}

impl DiffusionTrainer {
    /// Opens the dataset (covariates required; images preprocessed as `[data.preprocess]`
    /// says, when given: the latent shape and `model.json`'s `image_affine` follow the
    /// preprocessed grid), loads the autoencoder from `autoencoder_dir`
    /// (`autoencoder.json` + `autoencoder.safetensors`, as stage 1 writes them), checks
    /// `out` (a fresh run must not be there; `resume` needs one of the same configuration),
    /// encodes every subject once (mean and sigma kept: a new latent is drawn every step)
    /// or reads them from the run's latent cache, computes the covariate scaling and latent
    /// scale factor, and builds (or, with `resume`, restores) the UNet and its optimiser.
    /// [`new_with_progress`](Self::new_with_progress) reports the encoding.
    ///
    /// # Errors
    /// Dataset, configuration, shape and resume errors ([`TrainError`]).
    pub fn new(
        config: DiffusionTrainConfig,
        data: &Path,
        autoencoder_dir: &Path,
        out: &Path,
        resume: bool,
        device: &Device,
    ) -> Result<Self> {
        Self::new_with_progress(
            config,
            data,
            autoencoder_dir,
            out,
            resume,
            device,
            &mut |_, _| {},
        )
    }

    /// [`new`](Self::new), calling `on_encoded(done, total)` after each subject the
    /// autoencoder encodes (`total`: training and validation subjects) — never when the
    /// latents come from the cache.
    ///
    /// The latent cache is `out/latents.safetensors`: every subject's μ and σ with a SHA-256
    /// fingerprint of the autoencoder's weights file and configuration, the images' paths,
    /// sizes and modification times, the device and the `[data.preprocess]` options. It is
    /// written (temporary file + rename) after encoding and read instead of encoding — the
    /// same bits — by a later construction on the same folder (`resume`, or a fresh run
    /// where only the cache is left) whose fingerprint matches; a stale or unreadable cache
    /// is encoded again and replaced. Delete the file to force encoding.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn new_with_progress(
        config: DiffusionTrainConfig,
        data: &Path,
        autoencoder_dir: &Path,
        out: &Path,
        resume: bool,
        device: &Device,
        on_encoded: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        config.validate()?;
        let ddim = config.ddim()?;
        let cfg_path = autoencoder_dir.join("autoencoder.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(io(&cfg_path))?;
        let ae_config = AutoencoderKLConfig::from_json(&text)?;
        let ae_weights = autoencoder_dir.join("autoencoder.safetensors");
        let ae = AutoencoderKL::load(&ae_weights, &ae_config, device)?;
        let unet_cfg = &config.model;
        let c = ae_config.latent_channels;
        let mode = match ConditioningMode::of_unet(unet_cfg, c) {
            Some(mode) => mode,
            None => {
                return Err(TrainError::InvalidConfig {
                    key: "model.in_channels".into(),
                    reason: format!(
                        "{} input channels and no cross-attention: the UNet would take no covariates (use {} channels or with_conditioning)",
                        unet_cfg.in_channels,
                        c + NUM_COVARIATES
                    ),
                })
            }
        };
        if unet_cfg.out_channels != c || (!mode.uses_concatenation() && unet_cfg.in_channels != c) {
            return Err(TrainError::InvalidConfig {
                key: "model.in_channels/out_channels".into(),
                reason: format!("the autoencoder's latent has {c} channels"),
            });
        }
        if mode.uses_context() && unet_cfg.cross_attention_dim != Some(NUM_COVARIATES) {
            return Err(TrainError::InvalidConfig {
                key: "model.cross_attention_dim".into(),
                reason: format!("must be {NUM_COVARIATES} (the covariates)"),
            });
        }

        let dataset = Dataset::open(data, &config.data, true)?;
        let f = ae_config.downsampling_factor();
        let div = unet_cfg.spatial_divisor();
        if dataset
            .image_shape
            .iter()
            .any(|s| s % f != 0 || (s / f) % div != 0)
        {
            return Err(TrainError::ImageShape {
                path: dataset.subjects[0].image.clone(),
                expected: format!(
                    "every axis a multiple of {} (autoencoder {f} × UNet {div})",
                    f * div
                ),
                got: dataset.image_shape.to_vec(),
            });
        }
        let (train_idx, val_idx) =
            dataset.split_indices(config.common.validation_fraction, config.common.seed)?;
        if train_idx.len() < config.common.batch_size {
            return Err(TrainError::InvalidConfig {
                key: "batch_size".into(),
                reason: format!(
                    "{} exceeds the {} training subjects",
                    config.common.batch_size,
                    train_idx.len()
                ),
            });
        }
        let train_s: Vec<Subject> = train_idx
            .iter()
            .map(|&i| dataset.subjects[i].clone())
            .collect();
        let scaling = covariate_scaling(&train_s, &dataset.root)?;
        let [d, h, w] = dataset.image_shape;
        let latent_shape = [c, d / f, h / f, w / f];

        let cfg_json = serde_json::to_value(&config).map_err(|e| TrainError::InvalidConfig {
            key: "<config>".into(),
            reason: e.to_string(),
        })?;
        // A wrong `out` is refused before the encoding, which can take minutes.
        RunDir::check(out, &cfg_json, resume)?;
        let preprocess = config.data.preprocess_options()?;
        let fingerprint = latents::fingerprint(
            &ae_weights,
            &ae_config,
            &dataset.subjects,
            device,
            preprocess.as_ref(),
        )?;
        let encoder = latents::Encoder {
            ae: &ae,
            device,
            preprocess: preprocess.as_ref(),
        };
        let latents = latents::load_or_encode(
            &encoder,
            fingerprint,
            &dataset.subjects,
            latent_shape,
            out,
            on_encoded,
        )?;
        let items = |idx: &[usize]| -> Result<Vec<Item>> {
            let subjects: Vec<&Subject> = idx.iter().map(|&i| &dataset.subjects[i]).collect();
            let conds = conditioning(&subjects, &scaling)?;
            Ok(idx
                .iter()
                .zip(conds)
                .map(|(&i, cond)| {
                    let (mu, sigma) = latents.posteriors[i].clone();
                    Item { mu, sigma, cond }
                })
                .collect())
        };
        let train = items(&train_idx)?;
        let val = items(&val_idx)?;
        let (run, checkpoint) = RunDir::open(out, &cfg_json, resume)?;
        let scale_factor = if config.scale_factor > 0.0 {
            config.scale_factor
        } else {
            latent_scale_factor(&train, config.scale_factor_samples, config.common.seed)?
        };
        let vars = VarMap::new();
        let model =
            DiffusionModelUNet::new(unet_cfg, VarBuilder::from_varmap(&vars, DType::F32, device))?;
        let params = Parameters::from_varmap(&vars);
        seeded_init(&params, config.common.seed)?;
        let opt = AdamW::new(params.clone(), config.optimizer.adamw())?;
        let ema = if config.common.ema_decay > 0.0 {
            Some(Ema::new(&params, config.common.ema_decay)?)
        } else {
            None
        };
        let folder = ModelFolderConfig {
            format: MODEL_FOLDER_FORMAT.into(),
            autoencoder: serde_json::to_value(&ae_config).unwrap_or_default(),
            unet: serde_json::to_value(unet_cfg).unwrap_or_default(),
            scheduler: config.scheduler.clone(),
            latent_shape,
            scale_factor,
            conditioning: mode,
            covariate_scaling: scaling,
            image_affine: dataset.affine,
            // The unconditional mode exists only if it was trained.
            null_condition: (config.condition_dropout > 0.0).then_some(config.null_condition),
            // What sampling draws covariates left open from.
            training_covariates: Some(train.iter().map(|item| item.cond).collect()),
            // Plain conditional sampling; `brain-ldm convert --guidance-scale` records another.
            guidance_scale: None,
        };
        let mut trainer = Self {
            schedule: ddim.noise_schedule.build()?,
            prediction: ddim.prediction_type,
            config,
            run,
            device: device.clone(),
            autoencoder_dir: autoencoder_dir.to_path_buf(),
            train,
            val,
            model,
            params,
            opt,
            ema,
            mode,
            folder,
            step: 0,
            latents_cached: latents.cached,
        };
        if let Some(dir) = checkpoint {
            trainer.restore(&dir)?;
        }
        Ok(trainer)
    }

    /// Optimiser steps done so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Whether the latents were read from the run folder's cache ([`crate::LATENT_CACHE`])
    /// rather than encoded by this construction.
    pub fn latents_cached(&self) -> bool {
        self.latents_cached
    }

    /// The latent scale factor in use.
    pub fn scale_factor(&self) -> f64 {
        self.folder.scale_factor
    }

    /// The model folder's configuration (`model.json`).
    pub fn model_config(&self) -> &ModelFolderConfig {
        &self.folder
    }

    /// The UNet's weights by MONAI key (EMA weights when EMA is on).
    ///
    /// # Errors
    /// A candle error from the copy.
    pub fn weights(&self) -> candle_core::Result<HashMap<String, Tensor>> {
        match &self.ema {
            Some(e) => Ok(e.tensors(&self.params)),
            None => self.params.snapshot(),
        }
    }

    fn restore(&mut self, dir: &Path) -> Result<()> {
        let err = |reason: String| TrainError::Resume {
            path: dir.to_path_buf(),
            reason,
        };
        let text =
            std::fs::read_to_string(dir.join("state.json")).map_err(|e| err(e.to_string()))?;
        let state: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let steps: HashMap<String, u64> = serde_json::from_value(state["optimizer_steps"].clone())
            .map_err(|e| err(e.to_string()))?;
        self.params.load(&load_tensors(
            &dir.join("weights.safetensors"),
            &self.device,
        )?)?;
        self.opt.load_state(
            &load_tensors(&dir.join("optimizer.safetensors"), &self.device)?,
            &steps,
        )?;
        if let Some(ema) = &mut self.ema {
            ema.load(
                &self.params,
                &load_tensors(&dir.join("ema.safetensors"), &self.device)?,
            )?;
        }
        self.folder.scale_factor = state["scale_factor"]
            .as_f64()
            .ok_or_else(|| err("no scale_factor".into()))?;
        self.step = state["step"]
            .as_u64()
            .ok_or_else(|| err("state.json has no step".into()))?;
        self.run.truncate_log(self.step)?;
        Ok(())
    }

    fn save(&self) -> Result<()> {
        let (m, steps) = self.opt.state();
        let mut files = vec![
            ("weights.safetensors", self.params.snapshot()?),
            ("optimizer.safetensors", m),
        ];
        if let Some(e) = &self.ema {
            files.push(("ema.safetensors", e.tensors(&self.params)));
        }
        let state = json!({
            "step": self.step,
            "seed": self.config.common.seed,
            "optimizer_steps": steps,
            "scale_factor": self.folder.scale_factor,
        });
        self.run.save_checkpoint(
            self.step,
            files,
            &state,
            self.config.common.keep_checkpoints,
        )?;
        let out = &self.run.out;
        // The autoencoder the latents came from (it may have been retrained since the run
        // began: a resume then re-encodes, and the folder must pair the UNet with it).
        let ae_out = out.join("autoencoder.safetensors");
        let src = self.autoencoder_dir.join("autoencoder.safetensors");
        let bytes = std::fs::read(&src).map_err(io(&src))?;
        if std::fs::read(&ae_out).ok().as_deref() != Some(bytes.as_slice()) {
            write_atomically(&ae_out, &bytes)?;
        }
        save_tensors(&out.join("unet.safetensors"), self.weights()?)?;
        let text = serde_json::to_string_pretty(&self.folder).unwrap_or_default();
        write_atomically(&out.join("model.json"), text.as_bytes())?;
        Ok(())
    }

    /// The loss of one batch of items; `rng_key` fixes every random draw.
    fn batch_loss(&self, items: &[&Item], rng_key: u64, dropout: f64) -> Result<Tensor> {
        let mu = Tensor::cat(&items.iter().map(|i| &i.mu).collect::<Vec<_>>(), 0)?;
        let sigma = Tensor::cat(&items.iter().map(|i| &i.sigma).collect::<Vec<_>>(), 0)?;
        let b = items.len();
        let mut rng = ChaCha8Rng::seed_from_u64(rng_key);
        let t_max = self.schedule.num_train_timesteps() as u32;
        let timesteps: Vec<u32> = (0..b).map(|_| rng.random_range(0..t_max)).collect();
        let mut cond = Vec::with_capacity(b * NUM_COVARIATES);
        for item in items {
            let drop = dropout > 0.0 && rng.random::<f64>() < dropout;
            cond.extend_from_slice(if drop {
                &self.config.null_condition
            } else {
                &item.cond
            });
        }
        let eps_z = NoiseGenerator::new(mix(rng_key, 1, 0)).randn(
            mu.shape().clone(),
            DType::F32,
            &self.device,
        )?;
        let noise = NoiseGenerator::new(mix(rng_key, 2, 0)).randn(
            mu.shape().clone(),
            DType::F32,
            &self.device,
        )?;
        let z = ((mu + (eps_z * sigma)?)? * self.folder.scale_factor)?;
        let t = Tensor::from_vec(timesteps, b, &self.device)?;
        let noisy = self.schedule.add_noise(&z, &noise, &t)?;
        let cond = Tensor::from_vec(cond, (b, NUM_COVARIATES), &self.device)?;
        let (_, _, d, h, w) = noisy.dims5()?;
        let input = if self.mode.uses_concatenation() {
            let map = cond.reshape((b, NUM_COVARIATES, 1, 1, 1))?.broadcast_as((
                b,
                NUM_COVARIATES,
                d,
                h,
                w,
            ))?;
            Tensor::cat(&[&noisy, &map.contiguous()?], 1)?
        } else {
            noisy
        };
        let context = if self.mode.uses_context() {
            Some(cond.unsqueeze(1)?)
        } else {
            None
        };
        let pred = self.model.forward(&input, &t, context.as_ref(), None)?;
        Ok(diffusion_loss(
            &self.schedule,
            self.prediction,
            &pred,
            &z,
            &noise,
            &t,
        )?)
    }

    /// Mean loss over the validation subjects with fixed draws (`None` without any).
    ///
    /// # Errors
    /// Model errors.
    pub fn validation_loss(&self) -> Result<Option<f64>> {
        if self.val.is_empty() {
            return Ok(None);
        }
        let mut total = 0.0;
        for (i, item) in self.val.iter().enumerate() {
            let loss =
                self.batch_loss(&[item], mix(self.config.common.seed, i as u64, 0x7A11), 0.0)?;
            total += loss.to_scalar::<f32>()? as f64;
        }
        Ok(Some(total / self.val.len() as f64))
    }

    /// Trains until the configured number of steps (or `stop_after` steps in total),
    /// checkpointing every `checkpoint_every` steps and at the end, each checkpoint followed by
    /// `loss.png` redrawn from `log.jsonl` (a failure to draw it is the step's
    /// [`StepReport::warning`], not an error); `on_step` is called after every step. Each
    /// step is one [`train_step`](Self::train_step).
    ///
    /// # Errors
    /// Model and I/O errors; [`TrainError::NonFiniteLoss`].
    pub fn run(
        &mut self,
        stop_after: Option<u64>,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<()> {
        let steps = self.config.common.steps;
        let end = stop_after.map_or(steps, |s| s.min(steps));
        train_until(self, end, on_step, Self::train_step)
    }

    /// One optimiser step: for each of the `grad_accumulation` micro-batches of the seeded
    /// shuffle of the cached training latents, a latent drawn from each item's distribution
    /// (scaled), a timestep, noise and conditioning dropout drawn from `(seed, step,
    /// micro-batch)`, the UNet's forward pass on the noised latent with the covariates
    /// (concatenated and/or as cross-attention context) and the MSE loss's backward pass;
    /// then the averaged gradients are clipped (`grad_clip_norm`), AdamW steps at the
    /// scheduled learning rate, the EMA is updated and [`step`](Self::step) advances by one.
    /// Nothing is written to disk.
    ///
    /// # Errors
    /// Model errors; [`TrainError::NonFiniteLoss`] when the loss is NaN or infinite (then the
    /// optimiser does not step and [`step`](Self::step) stays).
    pub fn train_step(&mut self) -> Result<StepLosses> {
        let c = &self.config.common;
        let step = self.step;
        let accum = c.grad_accumulation as u64;
        let lr = self.config.optimizer.lr_at(step, c.steps);
        self.opt.set_learning_rate(lr);
        let mut acc: Option<Gradients> = None;
        let mut sum = 0.0;
        for micro in 0..accum {
            let idx = batch_items(self.train.len(), c.batch_size, c.seed, step * accum + micro).1;
            let items: Vec<&Item> = idx.iter().map(|&i| &self.train[i]).collect();
            let loss = self.batch_loss(
                &items,
                mix(c.seed, step, micro + 0x100),
                self.config.condition_dropout,
            )?;
            let value = loss.to_scalar::<f32>()? as f64;
            if !value.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    step: step + 1,
                    value,
                });
            }
            sum += value / accum as f64;
            let g = self.params.gradients(&loss.backward()?);
            match &mut acc {
                Some(a) => a.accumulate(g)?,
                None => acc = Some(g),
            }
        }
        if let Some(mut g) = acc {
            g.scale(1.0 / accum as f64)?;
            if self.config.optimizer.grad_clip_norm > 0.0 {
                g.clip_global_norm(self.config.optimizer.grad_clip_norm)?;
            }
            self.opt.step(&g)?;
        }
        if let Some(ema) = &mut self.ema {
            ema.update(&self.params)?;
        }
        self.step += 1;
        Ok(StepLosses {
            lr,
            losses: vec![("loss", sum)],
        })
    }
}

impl Stage for DiffusionTrainer {
    fn common(&self) -> &CommonConfig {
        &self.config.common
    }
    fn steps_done(&self) -> u64 {
        self.step
    }
    fn train_len(&self) -> usize {
        self.train.len()
    }
    fn run_dir(&self) -> &RunDir {
        &self.run
    }
    fn validate(&self) -> Result<Option<f64>> {
        self.validation_loss()
    }
    fn checkpoint(&self) -> Result<()> {
        self.save()
    }
}

/// `1 / std` of latents drawn (`mu + sigma·ε`, seeded) for the first `samples` items.
fn latent_scale_factor(items: &[Item], samples: usize, seed: u64) -> Result<f64> {
    let mut values: Vec<f32> = Vec::new();
    for (i, item) in items.iter().take(samples.max(1)).enumerate() {
        let eps = NoiseGenerator::new(mix(seed, i as u64, 0x5CA1E)).randn(
            item.mu.shape().clone(),
            DType::F32,
            item.mu.device(),
        )?;
        let z = (&item.mu + (eps * &item.sigma)?)?;
        values.extend(z.flatten_all()?.to_vec1::<f32>()?);
    }
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0).max(1.0);
    let std = var.sqrt();
    if !(std.is_finite() && std > 0.0) {
        return Err(TrainError::InvalidConfig {
            key: "scale_factor".into(),
            reason: format!(
                "the latents' standard deviation is {std}: set scale_factor explicitly"
            ),
        });
    }
    Ok(1.0 / std)
}
