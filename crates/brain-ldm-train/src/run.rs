//! The run folder: configuration, checkpoints (each a directory renamed into place, then a
//! `latest` pointer renamed over the old one), the JSONL loss log, deterministic
//! initialisation and per-step randomness.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use brain_ldm_nn::checkpoint::Checkpoint;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::config::CommonConfig;
use crate::data::batch_items;
use crate::error::{io, Result, TrainError};
use crate::optim::Parameters;
use crate::plot::plot_run;

/// What a training loop reports after every optimiser step (and validation).
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// Optimiser steps done (1-based).
    pub step: u64,
    /// Steps in the run.
    pub total: u64,
    /// The epoch of the step's last micro-batch.
    pub epoch: u64,
    /// Learning rate used.
    pub lr: f64,
    /// Named losses of the step (averaged over micro-batches), e.g. `loss`, `l1`, `kl`.
    pub losses: Vec<(&'static str, f64)>,
    /// Validation loss, when it was computed at this step.
    pub validation: Option<f64>,
    /// Seconds since this process started training.
    pub elapsed: f64,
    /// A problem that did not stop training, to show the user: `loss.png` could not be
    /// redrawn after this step's checkpoint.
    pub warning: Option<String>,
}

impl StepReport {
    pub(crate) fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("step".into(), self.step.into());
        m.insert("epoch".into(), self.epoch.into());
        m.insert("lr".into(), self.lr.into());
        for (k, v) in &self.losses {
            m.insert((*k).into(), (*v).into());
        }
        if let Some(v) = self.validation {
            m.insert("val_loss".into(), v.into());
        }
        m.insert("seconds".into(), self.elapsed.into());
        Value::Object(m)
    }
}

/// What one optimiser step returns (`train_step` of either trainer).
#[derive(Debug, Clone, PartialEq)]
pub struct StepLosses {
    /// Learning rate used.
    pub lr: f64,
    /// Named losses of the step (averaged over micro-batches), as in [`StepReport::losses`].
    pub losses: Vec<(&'static str, f64)>,
}

/// What the training loop shared by both stages ([`train_until`]) needs of a trainer.
pub(crate) trait Stage {
    /// The shared settings.
    fn common(&self) -> &CommonConfig;
    /// Optimiser steps done so far.
    fn steps_done(&self) -> u64;
    /// Training items (for the epoch of a step).
    fn train_len(&self) -> usize;
    /// The run folder (log, loss plot).
    fn run_dir(&self) -> &RunDir;
    /// The validation loss (`None` without validation items).
    fn validate(&self) -> Result<Option<f64>>;
    /// Writes a checkpoint and the model files.
    fn checkpoint(&self) -> Result<()>;
}

/// Calls `train_step` until `end` steps are done; after each step: the validation loss every
/// `validate_every` steps, the `log.jsonl` line, a checkpoint every `checkpoint_every` steps
/// and at `end` (followed by `loss.png`; a failure to draw it is the report's warning), then
/// `on_step`.
pub(crate) fn train_until<T: Stage>(
    trainer: &mut T,
    end: u64,
    on_step: &mut dyn FnMut(&StepReport),
    mut train_step: impl FnMut(&mut T) -> Result<StepLosses>,
) -> Result<()> {
    let c = trainer.common().clone();
    let accum = c.grad_accumulation as u64;
    let started = Instant::now();
    while trainer.steps_done() < end {
        // The epoch of the step's last micro-batch.
        let last_micro = trainer.steps_done() * accum + accum - 1;
        let epoch = batch_items(trainer.train_len(), c.batch_size, c.seed, last_micro).0;
        let StepLosses { lr, losses } = train_step(trainer)?;
        let step = trainer.steps_done();
        let validation = if c.validate_every > 0 && step.is_multiple_of(c.validate_every) {
            trainer.validate()?
        } else {
            None
        };
        let mut report = StepReport {
            step,
            total: c.steps,
            epoch,
            lr,
            losses,
            validation,
            elapsed: started.elapsed().as_secs_f64(),
            warning: None,
        };
        trainer.run_dir().log(&report.to_json())?;
        if (c.checkpoint_every > 0 && step.is_multiple_of(c.checkpoint_every)) || step == end {
            trainer.checkpoint()?;
            report.warning = plot_run(&trainer.run_dir().out);
        }
        on_step(&report);
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Saves tensors as safetensors (temp + rename).
pub(crate) fn save_tensors(path: &Path, tensors: HashMap<String, Tensor>) -> Result<()> {
    Ok(Checkpoint::from_tensors(tensors, path.display().to_string()).save_safetensors(path)?)
}

/// Loads every tensor of a safetensors file.
pub(crate) fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    Ok(Checkpoint::load(path, device)?.tensors().clone())
}

/// The output folder of one run.
#[derive(Debug, Clone)]
pub(crate) struct RunDir {
    pub out: PathBuf,
}

impl RunDir {
    /// Prepares `out` for a fresh run (must not hold one; the lines of an abandoned run's
    /// `log.jsonl` are dropped) or, with `resume`, checks that it holds a run of the same
    /// configuration (only `steps` may grow) and returns its newest checkpoint directory;
    /// writes `train_config.json` (with the new `steps`).
    pub fn open(out: &Path, config: &Value, resume: bool) -> Result<(Self, Option<PathBuf>)> {
        let checkpoint = Self::check(out, config, resume)?;
        let run = Self {
            out: out.to_path_buf(),
        };
        if checkpoint.is_none() {
            std::fs::create_dir_all(out.join("checkpoints")).map_err(io(out))?;
            run.truncate_log(0)?;
        }
        let text = serde_json::to_string_pretty(config).unwrap_or_default();
        write_atomically(&out.join("train_config.json"), text.as_bytes())?;
        Ok((run, checkpoint))
    }

    /// The checks of [`RunDir::open`] without writing anything, so that a trainer can refuse
    /// a wrong `out` before expensive preparation: the newest checkpoint directory with
    /// `resume`, `None` for a fresh run.
    pub fn check(out: &Path, config: &Value, resume: bool) -> Result<Option<PathBuf>> {
        let config_path = out.join("train_config.json");
        if !resume {
            if config_path.exists() || out.join("latest").exists() {
                return Err(TrainError::OutputExists {
                    path: out.to_path_buf(),
                });
            }
            return Ok(None);
        }
        let resume_err = |reason: String| TrainError::Resume {
            path: out.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| resume_err(format!("{}: {e}", config_path.display())))?;
        let mut stored: Value =
            serde_json::from_str(&text).map_err(|e| resume_err(e.to_string()))?;
        if let (Some(s), Some(c)) = (stored.get_mut("steps"), config.get("steps")) {
            *s = c.clone();
        }
        if let Some(key) = differing_key(&stored, config, "") {
            return Err(resume_err(format!(
                "the configuration differs from the run's at `{key}`"
            )));
        }
        let latest = std::fs::read_to_string(out.join("latest"))
            .map_err(|e| resume_err(format!("no checkpoint to resume from ({e})")))?;
        let dir = out.join("checkpoints").join(latest.trim());
        if !dir.join("state.json").is_file() {
            return Err(resume_err(format!("{} is incomplete", dir.display())));
        }
        Ok(Some(dir))
    }

    /// Writes a checkpoint: every file into a temporary directory renamed to
    /// `checkpoints/step-NNNNNNNN`, then `latest` (temp + rename); keeps the newest `keep`.
    pub fn save_checkpoint(
        &self,
        step: u64,
        files: Vec<(&str, HashMap<String, Tensor>)>,
        state: &Value,
        keep: usize,
    ) -> Result<()> {
        let root = self.out.join("checkpoints");
        let name = format!("step-{step:08}");
        let tmp = root.join(format!(".{name}.tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        for (file, tensors) in files {
            save_tensors(&tmp.join(file), tensors)?;
        }
        write_atomically(
            &tmp.join("state.json"),
            serde_json::to_string_pretty(state)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        let dir = root.join(&name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
        write_atomically(&self.out.join("latest"), name.as_bytes())?;
        let mut old: Vec<PathBuf> = std::fs::read_dir(&root)
            .map_err(io(&root))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-"))
            })
            .collect();
        old.sort();
        let excess = old.len().saturating_sub(keep);
        for p in &old[..excess] {
            std::fs::remove_dir_all(p).map_err(io(p))?;
        }
        Ok(())
    }

    /// Drops log lines of steps after `step` (written after the checkpoint a run resumes from).
    pub fn truncate_log(&self, step: u64) -> Result<()> {
        let path = self.out.join("log.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        write_atomically(&path, kept.as_bytes())
    }

    /// Appends one JSON line to `log.jsonl`.
    pub fn log(&self, record: &Value) -> Result<()> {
        let path = self.out.join("log.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        writeln!(f, "{record}").map_err(io(&path))
    }
}

/// The first key path at which two JSON values differ.
fn differing_key(a: &Value, b: &Value, prefix: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(u), Some(v)) => differing_key(u, v, &format!("{prefix}{k}.")),
                _ => Some(format!("{prefix}{k}")),
            })
        }
        _ if a == b => None,
        _ => Some(prefix.trim_end_matches('.').to_string()),
    }
}

/// Re-initialises `params` from `seed` as PyTorch's default layer initialisation does:
/// weights of rank ≥ 2 (convolutions, linears) and their biases ~ U(±1/sqrt(fan_in)); norm
/// gains and shifts keep their constant initialisation. (candle's CPU random numbers cannot
/// be seeded, so this makes a run reproducible.)
///
/// # Errors
/// A candle error from setting a variable.
pub fn seeded_init(params: &Parameters, seed: u64) -> candle_core::Result<()> {
    let fan_in: HashMap<&str, usize> = params
        .names()
        .iter()
        .zip(params.vars())
        .filter(|(_, v)| v.rank() >= 2)
        .map(|(n, v)| (n.as_str(), v.dims()[1..].iter().product()))
        .collect();
    for (i, (name, var)) in params.names().iter().zip(params.vars()).enumerate() {
        let fan = if var.rank() >= 2 {
            fan_in.get(name.as_str()).copied()
        } else {
            name.strip_suffix(".bias")
                .and_then(|p| fan_in.get(format!("{p}.weight").as_str()).copied())
        };
        let Some(fan) = fan else { continue };
        let bound = 1.0 / (fan.max(1) as f64).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(crate::data::mix(seed, i as u64, 0x1817));
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        let t = Tensor::from_vec(values, var.shape(), &Device::Cpu)?
            .to_dtype(var.dtype())?
            .to_device(var.device())?;
        var.set(&t)?;
    }
    Ok(())
}
