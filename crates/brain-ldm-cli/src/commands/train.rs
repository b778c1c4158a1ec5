//! `brain-ldm train`: train the autoencoder (stage 1) or the latent diffusion UNet (stage 2).

use std::path::PathBuf;

use brain_ldm_train::{
    AutoencoderTrainConfig, AutoencoderTrainer, DiffusionTrainConfig, DiffusionTrainer, StepReport,
};
use candle_core::Device;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

/// Train a model from a BIDS folder (sub-*/anat/*_T1w.nii[.gz] + participants.tsv) or a
/// CSV/TSV manifest. Configuration keys and defaults: docs/training.md.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The stage.
    #[command(subcommand)]
    pub stage: Stage,
}

/// The two stages, and drawing a run's losses.
#[derive(Debug, Subcommand)]
pub enum Stage {
    /// Stage 1: the KL autoencoder (L1 + KL + patch adversarial loss). Writes
    /// OUT/autoencoder.json + autoencoder.safetensors, checkpoints and log.jsonl.
    Autoencoder(StageArgs),
    /// Stage 2: the diffusion UNet on the autoencoder's latents, conditioned on sex, age,
    /// ventricular and brain volume. OUT becomes a model folder for `brain-ldm sample --model`.
    Diffusion(DiffusionArgs),
    /// Draw RUN_DIR/log.jsonl as loss curves into RUN_DIR/loss.png (training redraws it at
    /// every checkpoint; this draws it for older runs, or elsewhere with --out).
    Plot(PlotArgs),
}

/// Arguments of `train plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The run folder (holds log.jsonl).
    pub run_dir: PathBuf,
    /// The PNG to write instead of RUN_DIR/loss.png.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Arguments of both stages.
#[derive(Debug, Args)]
pub struct StageArgs {
    /// The dataset: a BIDS folder or a CSV/TSV manifest.
    #[arg(long)]
    pub data: PathBuf,
    /// TOML configuration (every key optional; see docs/training.md).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The run folder (must not hold a run unless --resume).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in OUT from its newest checkpoint, exactly.
    #[arg(long)]
    pub resume: bool,
}

/// Arguments of stage 2.
#[derive(Debug, Args)]
pub struct DiffusionArgs {
    /// Common arguments.
    #[command(flatten)]
    pub common: StageArgs,
    /// The stage-1 run folder (autoencoder.json + autoencoder.safetensors).
    #[arg(long)]
    pub autoencoder: PathBuf,
}

/// A bar over `total` `unit`s (steps, subjects), `done` of them already done.
fn bar(total: u64, done: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:30}} {{pos}}/{{len}} {unit}  {{msg}}  [{{elapsed_precise}} < {{eta_precise}}]"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(done);
    bar
}

fn show(bar: &ProgressBar, r: &StepReport) {
    let mut msg: String = r
        .losses
        .iter()
        .map(|(k, v)| format!("{k} {v:.4} "))
        .collect();
    if let Some(v) = r.validation {
        msg.push_str(&format!("val {v:.4} "));
    }
    msg.push_str(&format!("lr {:.2e} epoch {}", r.lr, r.epoch));
    bar.set_message(msg);
    bar.set_position(r.step);
    if let Some(w) = &r.warning {
        bar.suspend(|| eprintln!("warning: {w}"));
    }
}

/// Runs `train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let device = Device::Cpu;
    match args.stage {
        Stage::Autoencoder(a) => {
            let config = match &a.config {
                Some(p) => AutoencoderTrainConfig::from_file(p)?,
                None => AutoencoderTrainConfig::default(),
            };
            eprintln!(
                "train autoencoder: seed {}, {} steps, into {}",
                config.common.seed,
                config.common.steps,
                a.out.display()
            );
            let total = config.common.steps;
            let mut t = AutoencoderTrainer::new(config, &a.data, &a.out, a.resume, &device)?;
            let pb = bar(total, t.step(), "steps");
            t.run(None, &mut |r| show(&pb, r))?;
            pb.finish();
        }
        Stage::Diffusion(d) => {
            let a = d.common;
            let config = match &a.config {
                Some(p) => DiffusionTrainConfig::from_file(p)?,
                None => DiffusionTrainConfig::default(),
            };
            eprintln!(
                "train diffusion: seed {}, {} steps, into {}",
                config.common.seed,
                config.common.steps,
                a.out.display()
            );
            let total = config.common.steps;
            // Shown only if the latents are encoded (not read from the run's cache).
            let mut encoding: Option<ProgressBar> = None;
            let mut t = DiffusionTrainer::new_with_progress(
                config,
                &a.data,
                &d.autoencoder,
                &a.out,
                a.resume,
                &device,
                &mut |done, n| {
                    let pb = encoding.get_or_insert_with(|| {
                        bar(n as u64, 0, "subjects").with_message("encoding latents")
                    });
                    pb.set_position(done as u64);
                },
            )?;
            if let Some(pb) = encoding {
                pb.finish();
            }
            if t.latents_cached() {
                eprintln!(
                    "latents read from {} (delete it to encode again)",
                    a.out.join(brain_ldm_train::LATENT_CACHE).display()
                );
            }
            eprintln!("latent scale factor {}", t.scale_factor());
            let pb = bar(total, t.step(), "steps");
            t.run(None, &mut |r| show(&pb, r))?;
            pb.finish();
        }
        Stage::Plot(p) => {
            let png = p.out.unwrap_or_else(|| p.run_dir.join("loss.png"));
            brain_ldm_train::plot_losses(&p.run_dir.join("log.jsonl"), &png)?;
            println!("{}", png.display());
            return Ok(());
        }
    }
    eprintln!("done: log in log.jsonl, loss curves in loss.png, checkpoints in checkpoints/");
    Ok(())
}
