//! What `brain-ldm sample` and `brain-ldm fidelity` share: the sampler's arguments, the
//! model they sample and the progress bar over denoising steps.

use super::device::DeviceChoice;
use anyhow::Context;
use brain_ldm::{
    LatentDiffusionPipeline, SamplingSettings, SchedulerKind, TimestepSpacing, DEMO_MODEL_NAME,
};
use candle_core::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;

/// How and where each sample is denoised (`--steps`, `--scheduler`, `--eta`, `--spacing`,
/// `--device`), flattened into the commands that sample.
#[derive(Debug, Args)]
pub struct SamplerArgs {
    /// Denoising steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Sampler.
    #[arg(long, default_value = "ddim")]
    pub scheduler: SchedulerKind,
    /// DDIM's eta (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Timestep spacing: leading (GenerativeModels 0.2, the bundle's), linspace (MONAI 1.6),
    /// trailing.
    #[arg(long, default_value = "leading")]
    pub spacing: TimestepSpacing,
    /// Where the models run: auto (the first CUDA GPU when built with `--features cuda` and
    /// one is present, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

impl SamplerArgs {
    /// The settings these arguments ask for (checked by the pipeline, not here).
    pub fn settings(&self) -> SamplingSettings {
        SamplingSettings {
            scheduler: self.scheduler,
            steps: self.steps,
            eta: self.eta,
            spacing: self.spacing,
        }
    }
}

/// A progress bar over `total` denoising steps: a message, the bar, steps done, time
/// elapsed and left.
///
/// # Errors
/// Only if the built-in template does not parse.
pub fn steps_bar(total: u64) -> anyhow::Result<ProgressBar> {
    Ok(ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} steps, {elapsed} elapsed, ETA {eta}",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    ))
}

/// Loads the model folder `dir`, or the built-in demo model without one, with its name for
/// records and reports (the folder as given, or [`DEMO_MODEL_NAME`]).
///
/// # Errors
/// The library's error for a folder that is not a usable model.
pub fn open_model(
    dir: Option<&Path>,
    device: &Device,
) -> anyhow::Result<(LatentDiffusionPipeline, String)> {
    Ok(match dir {
        Some(dir) => (
            LatentDiffusionPipeline::open(dir, device)?,
            dir.display().to_string(),
        ),
        None => (
            LatentDiffusionPipeline::demo(device)?,
            DEMO_MODEL_NAME.to_string(),
        ),
    })
}
