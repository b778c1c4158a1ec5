//! Stage 1: the KL autoencoder with L1 + KL (+ perceptual) + least-squares patch adversarial
//! loss and its discriminator.

use std::path::{Path, PathBuf};

use brain_ldm_autoencoder::{AutoencoderKL, PatchDiscriminator, PatchDiscriminatorConfig};
use brain_ldm_nifti::preprocess::PreprocessOptions;
use brain_ldm_schedulers::NoiseGenerator;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde_json::json;

use crate::config::{AutoencoderTrainConfig, CommonConfig};
use crate::data::{batch_items, load_preprocessed, mix, Dataset, Prefetcher, Subject};
use crate::error::{Result, TrainError};
use crate::losses::{kl_loss, l1_loss, PatchAdversarialLoss, PerceptualLoss};
use crate::optim::{AdamW, Ema, Gradients, Parameters};
use crate::run::{
    load_tensors, save_tensors, seeded_init, train_until, write_atomically, RunDir, Stage,
    StepLosses, StepReport,
};

/// The discriminator with its variables and optimiser.
struct Critic {
    model: PatchDiscriminator,
    opt: AdamW,
}

/// Trains an [`AutoencoderKL`] on a dataset into an output folder holding
/// `autoencoder.json` + `autoencoder.safetensors` (what `brain-ldm train diffusion
/// --autoencoder` reads), `discriminator.safetensors`, checkpoints and `log.jsonl`.
pub struct AutoencoderTrainer {
    config: AutoencoderTrainConfig,
    run: RunDir,
    device: Device,
    /// `[data.preprocess]`, resolved.
    preprocess: Option<PreprocessOptions>,
    train: Vec<Subject>,
    val: Vec<Subject>,
    model: AutoencoderKL,
    params: Parameters,
    opt: AdamW,
    ema: Option<Ema>,
    critic: Option<Critic>,
    perceptual: Option<Box<dyn PerceptualLoss>>,
    step: u64,
}

impl AutoencoderTrainer {
    /// Opens the dataset, builds (or, with `resume`, restores) the models and optimisers.
    /// Every check on the data and configuration runs here, before any training. With
    /// `[data.preprocess]` every image (training batches on the loader thread, validation)
    /// is preprocessed as it is read.
    ///
    /// # Errors
    /// Dataset, configuration, shape and resume errors ([`TrainError`]).
    pub fn new(
        config: AutoencoderTrainConfig,
        data: &Path,
        out: &Path,
        resume: bool,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let preprocess = config.data.preprocess_options()?;
        let dataset = Dataset::open(data, &config.data, false)?;
        let f = config.model.downsampling_factor();
        if dataset.image_shape.iter().any(|s| s % f != 0) {
            return Err(TrainError::ImageShape {
                path: dataset.subjects[0].image.clone(),
                expected: format!("every axis a multiple of the autoencoder's downsampling {f}"),
                got: dataset.image_shape.to_vec(),
            });
        }
        let (train, val) = dataset.split(config.common.validation_fraction, config.common.seed)?;
        if train.len() < config.common.batch_size {
            return Err(TrainError::InvalidConfig {
                key: "batch_size".into(),
                reason: format!(
                    "{} exceeds the {} training subjects",
                    config.common.batch_size,
                    train.len()
                ),
            });
        }
        let cfg_json = serde_json::to_value(&config).map_err(|e| TrainError::InvalidConfig {
            key: "<config>".into(),
            reason: e.to_string(),
        })?;
        let (run, checkpoint) = RunDir::open(out, &cfg_json, resume)?;

        let vars = VarMap::new();
        let model = AutoencoderKL::new(
            &config.model,
            VarBuilder::from_varmap(&vars, DType::F32, device),
        )?
        .with_streaming(None);
        let params = Parameters::from_varmap(&vars);
        seeded_init(&params, config.common.seed)?;
        let opt = AdamW::new(params.clone(), config.optimizer.adamw())?;
        let critic = if config.adversarial_weight > 0.0 {
            let dcfg = PatchDiscriminatorConfig::from_json(
                &json!({
                    "spatial_dims": 3,
                    "channels": config.discriminator.channels,
                    "num_layers_d": config.discriminator.num_layers_d,
                    "in_channels": config.model.out_channels,
                })
                .to_string(),
            )?;
            let dvars = VarMap::new();
            let dmodel = PatchDiscriminator::new(
                &dcfg,
                VarBuilder::from_varmap(&dvars, DType::F32, device),
            )?;
            let dparams = Parameters::from_varmap(&dvars);
            seeded_init(&dparams, mix(config.common.seed, 1, 0xD15C))?;
            let dopt = AdamW::new(dparams, config.discriminator.optimizer.adamw())?;
            Some(Critic {
                model: dmodel,
                opt: dopt,
            })
        } else {
            None
        };
        let ema = if config.common.ema_decay > 0.0 {
            Some(Ema::new(&params, config.common.ema_decay)?)
        } else {
            None
        };
        let mut trainer = Self {
            config,
            run,
            device: device.clone(),
            preprocess,
            train,
            val,
            model,
            params,
            opt,
            ema,
            critic,
            perceptual: None,
            step: 0,
        };
        if let Some(dir) = checkpoint {
            trainer.restore(&dir)?;
        }
        Ok(trainer)
    }

    /// Adds a perceptual loss, weighted by the configuration's `perceptual_weight`.
    pub fn with_perceptual_loss(mut self, loss: Box<dyn PerceptualLoss>) -> Self {
        self.perceptual = Some(loss);
        self
    }

    /// Optimiser steps done so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The model being trained.
    pub fn model(&self) -> &AutoencoderKL {
        &self.model
    }

    /// The model's weights by MONAI key (EMA weights when EMA is on).
    pub fn weights(&self) -> candle_core::Result<std::collections::HashMap<String, Tensor>> {
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
        let steps = |key: &str| -> Result<std::collections::HashMap<String, u64>> {
            serde_json::from_value(state[key].clone()).map_err(|e| err(format!("{key}: {e}")))
        };
        self.params.load(&load_tensors(
            &dir.join("weights.safetensors"),
            &self.device,
        )?)?;
        self.opt.load_state(
            &load_tensors(&dir.join("optimizer.safetensors"), &self.device)?,
            &steps("optimizer_steps")?,
        )?;
        if let Some(ema) = &mut self.ema {
            ema.load(
                &self.params,
                &load_tensors(&dir.join("ema.safetensors"), &self.device)?,
            )?;
        }
        if let Some(c) = &mut self.critic {
            let dparams = c.opt.parameters().clone();
            dparams.load(&load_tensors(
                &dir.join("discriminator.safetensors"),
                &self.device,
            )?)?;
            c.opt.load_state(
                &load_tensors(
                    &dir.join("discriminator_optimizer.safetensors"),
                    &self.device,
                )?,
                &steps("discriminator_optimizer_steps")?,
            )?;
        }
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
        let mut state =
            json!({ "step": self.step, "seed": self.config.common.seed, "optimizer_steps": steps });
        if let Some(c) = &self.critic {
            let (dm, dsteps) = c.opt.state();
            files.push(("discriminator.safetensors", c.opt.parameters().snapshot()?));
            files.push(("discriminator_optimizer.safetensors", dm));
            state["discriminator_optimizer_steps"] = json!(dsteps);
        }
        self.run.save_checkpoint(
            self.step,
            files,
            &state,
            self.config.common.keep_checkpoints,
        )?;
        // The model for stage 2.
        let out = &self.run.out;
        save_tensors(&out.join("autoencoder.safetensors"), self.weights()?)?;
        let cfg = serde_json::to_string_pretty(&self.config.model).unwrap_or_default();
        write_atomically(&out.join("autoencoder.json"), cfg.as_bytes())?;
        if let Some(c) = &self.critic {
            save_tensors(
                &out.join("discriminator.safetensors"),
                c.opt.parameters().snapshot()?,
            )?;
        }
        Ok(())
    }

    /// Mean L1 of `decode(encode(x).mu)` over the validation subjects (`None` without any).
    ///
    /// # Errors
    /// Image and model errors.
    pub fn validation_loss(&self) -> Result<Option<f64>> {
        if self.val.is_empty() {
            return Ok(None);
        }
        let mut total = 0.0;
        for s in &self.val {
            let x = load_preprocessed(&s.image, self.preprocess.as_ref(), &self.device)?;
            let recon = self.model.reconstruct(&x)?;
            total += l1_loss(&recon.detach(), &x)?.to_scalar::<f32>()? as f64;
        }
        Ok(Some(total / self.val.len() as f64))
    }

    /// Trains until the configured number of steps (or `stop_after` steps in total, to split a
    /// run), checkpointing every `checkpoint_every` steps and at the end, each checkpoint
    /// followed by `loss.png` redrawn from `log.jsonl` (a failure to draw it is the step's
    /// [`StepReport::warning`], not an error); `on_step` is called after every step. Each
    /// step is one [`train_step`](Self::train_step) on the next `grad_accumulation`
    /// micro-batches of the seeded shuffle.
    ///
    /// # Errors
    /// Image, model and I/O errors; [`TrainError::NonFiniteLoss`] when training diverges.
    pub fn run(
        &mut self,
        stop_after: Option<u64>,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<()> {
        let c = self.config.common.clone();
        let end = stop_after.map_or(c.steps, |s| s.min(c.steps));
        if self.step >= end {
            return Ok(());
        }
        let accum = c.grad_accumulation as u64;
        let n = self.train.len();
        let batches: Vec<Vec<PathBuf>> = (self.step * accum..end * accum)
            .map(|i| {
                batch_items(n, c.batch_size, c.seed, i)
                    .1
                    .iter()
                    .map(|&j| self.train[j].image.clone())
                    .collect()
            })
            .collect();
        let mut loader = Prefetcher::start(batches, c.prefetch, self.preprocess.clone());
        train_until(self, end, on_step, |trainer| {
            let micro_batches = (0..accum)
                .map(|_| loader.next_batch())
                .collect::<Result<Vec<_>>>()?;
            trainer.train_step(&micro_batches)
        })
    }

    /// One optimiser step on `micro_batches` (each `[b, in_channels, d, h, w]`, every spatial
    /// axis a multiple of the downsampling factor; [`run`](Self::run) passes
    /// `grad_accumulation` of them): per micro-batch the forward pass with seeded latent
    /// noise, L1 + `kl_weight`·KL (+ perceptual) (+ `adversarial_weight`·generator
    /// adversarial loss once `adversarial_start_step` is reached) and its backward pass, then
    /// the discriminator's loss on the detached reconstruction and the real image and its
    /// backward pass; then the averaged gradients are clipped (`grad_clip_norm`) and AdamW
    /// steps the autoencoder and the discriminator at the scheduled learning rates, the EMA
    /// is updated and [`step`](Self::step) advances by one. Nothing is written to disk.
    ///
    /// # Errors
    /// [`TrainError::Shape`] for no micro-batch or one of another shape; model errors;
    /// [`TrainError::NonFiniteLoss`] when the loss is NaN or infinite (then no optimiser
    /// steps and [`step`](Self::step) stays).
    pub fn train_step(&mut self, micro_batches: &[Tensor]) -> Result<StepLosses> {
        if micro_batches.is_empty() {
            return Err(TrainError::Shape {
                what: "micro-batches",
                expected: "at least one".into(),
                got: vec![],
            });
        }
        let step = self.step;
        let total = self.config.common.steps;
        let seed = self.config.common.seed;
        let accum = micro_batches.len() as u64;
        let lr = self.config.optimizer.lr_at(step, total);
        self.opt.set_learning_rate(lr);
        let adversarial = self.critic.is_some() && step >= self.config.adversarial_start_step;
        let adv = PatchAdversarialLoss::default();
        let mut g_acc: Option<Gradients> = None;
        let mut d_acc: Option<Gradients> = None;
        let mut sums = [0f64; 5];
        for (micro, x) in (0..).zip(micro_batches) {
            let eps = NoiseGenerator::new(mix(seed, step, micro)).randn(
                self.latent_shape(x)?,
                DType::F32,
                &self.device,
            )?;
            let x = x.to_device(&self.device)?;
            let (recon, mu, sigma) = self.model.forward(&x, &eps)?;
            let l1 = l1_loss(&recon, &x)?;
            let kl = kl_loss(&mu, &sigma)?;
            let mut loss = (&l1 + (&kl * self.config.kl_weight)?)?;
            if let (Some(p), true) = (&self.perceptual, self.config.perceptual_weight > 0.0) {
                loss = (loss + (p.loss(&recon, &x)? * self.config.perceptual_weight)?)?;
            }
            let mut g_adv = 0.0;
            if let (true, Some(critic)) = (adversarial, &self.critic) {
                // Frozen: the generator's step needs no discriminator weight gradients.
                let logits = last(critic.model.detached().forward_t(&recon, true)?)?;
                let g = adv.generator(&logits)?;
                g_adv = g.to_scalar::<f32>()? as f64;
                loss = (loss + (g * self.config.adversarial_weight)?)?;
            }
            let value = loss.to_scalar::<f32>()? as f64;
            if !value.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    step: step + 1,
                    value,
                });
            }
            let grads = self.params.gradients(&loss.backward()?);
            add(&mut g_acc, grads)?;
            let mut d_value = 0.0;
            if let (true, Some(critic)) = (adversarial, &self.critic) {
                let fake = last(critic.model.forward_t(&recon.detach(), true)?)?;
                let real = last(critic.model.forward_t(&x, true)?)?;
                let d = adv.discriminator(&fake, &real)?;
                d_value = d.to_scalar::<f32>()? as f64;
                add(
                    &mut d_acc,
                    critic.opt.parameters().gradients(&d.backward()?),
                )?;
            }
            for (s, v) in sums.iter_mut().zip([
                value,
                l1.to_scalar::<f32>()? as f64,
                kl.to_scalar::<f32>()? as f64,
                g_adv,
                d_value,
            ]) {
                *s += v / accum as f64;
            }
        }
        if let Some(mut g) = g_acc {
            g.scale(1.0 / accum as f64)?;
            if self.config.optimizer.grad_clip_norm > 0.0 {
                g.clip_global_norm(self.config.optimizer.grad_clip_norm)?;
            }
            self.opt.step(&g)?;
        }
        if let (Some(mut g), Some(critic)) = (d_acc, &mut self.critic) {
            g.scale(1.0 / accum as f64)?;
            let d_opt = &self.config.discriminator.optimizer;
            critic.opt.set_learning_rate(d_opt.lr_at(step, total));
            if d_opt.grad_clip_norm > 0.0 {
                g.clip_global_norm(d_opt.grad_clip_norm)?;
            }
            critic.opt.step(&g)?;
        }
        if let Some(ema) = &mut self.ema {
            ema.update(&self.params)?;
        }
        self.step += 1;
        let mut losses = vec![("loss", sums[0]), ("l1", sums[1]), ("kl", sums[2])];
        if adversarial {
            losses.extend([
                ("generator_adversarial", sums[3]),
                ("discriminator", sums[4]),
            ]);
        }
        Ok(StepLosses { lr, losses })
    }

    /// The latent noise's shape for micro-batch `x`, which must be `[b, in_channels, d, h, w]`
    /// with every spatial axis a multiple of the downsampling factor.
    fn latent_shape(&self, x: &Tensor) -> Result<Vec<usize>> {
        let m = &self.config.model;
        let f = m.downsampling_factor();
        match *x.dims() {
            [b, c, d, h, w]
                if b > 0 && c == m.in_channels && [d, h, w].iter().all(|s| s % f == 0) =>
            {
                Ok(vec![b, m.latent_channels, d / f, h / f, w / f])
            }
            _ => Err(TrainError::Shape {
                what: "autoencoder micro-batch",
                expected: format!(
                    "[b, {}, d, h, w] with d, h, w multiples of {f}",
                    m.in_channels
                ),
                got: x.dims().to_vec(),
            }),
        }
    }
}

impl Stage for AutoencoderTrainer {
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

fn last(mut outs: Vec<Tensor>) -> Result<Tensor> {
    outs.pop().ok_or_else(|| TrainError::Shape {
        what: "discriminator outputs",
        expected: "at least one".into(),
        got: vec![],
    })
}

fn add(acc: &mut Option<Gradients>, g: Gradients) -> candle_core::Result<()> {
    match acc {
        Some(a) => a.accumulate(g),
        None => {
            *acc = Some(g);
            Ok(())
        }
    }
}
