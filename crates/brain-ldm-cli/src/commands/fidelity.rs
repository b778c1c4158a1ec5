//! `brain-ldm fidelity`: the paper's conditioning experiment (Pinaya et al. 2022, Figures
//! 2–4) on any model: covariate sweeps measured by volumetry, extrapolation, samples
//! conditioned on training subjects' covariates (the paper's r = 0.972) and diversity.

use super::sampler_args::{open_model, steps_bar, SamplerArgs};
use anyhow::Context;
use brain_ldm::fidelity::{Fidelity, FidelityConfig, FidelityProgress, Provenance};
use brain_ldm::Sex;
use clap::Args;
use std::path::{Path, PathBuf};

/// Measure how well a model follows its covariates (the paper's Figures 2–4).
///
/// Sweeps ventricular volume, brain volume and age over the model's training range (the
/// others fixed at the training means), generates --seeds brains per value, measures each
/// with brain-ldm's volumetry and reports Pearson's r and the slope of measured on requested
/// volume; extrapolates the normalised ventricular volume over −0.5 … 1.9 (Figure 4);
/// generates --subjects brains conditioned on the covariates of random training subjects and
/// reports r and slope of measured on requested volume over them (the paper's measurement:
/// r = 0.972 for the ventricles); and scores diversity as the mean MS-SSIM of random sample
/// pairs, next to the same for a real cohort (--cohort; paper: 0.6555 vs 0.6536); and passes
/// cohort images through the model's autoencoder, measuring them before and after.
/// Writes OUT/fidelity.md (tables for the docs), fidelity.json (every number),
/// measurements.csv (one row per brain), reconstructions.csv (one row per reconstructed
/// image) and one PNG grid per sweep (rows: requested values, columns: seeds).
#[derive(Debug, Args)]
pub struct FidelityArgs {
    /// Model folder (a `brain-ldm train` or `convert` output, or the MONAI bundle). Default:
    /// the built-in demo model.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "fidelity")]
    out: PathBuf,
    /// Real images to compare diversity with, and to pass through the model's autoencoder
    /// (--reconstructions): a BIDS folder as `brain-ldm synth` writes
    /// (sub-*/anat/*_T1w.nii.gz) or a folder of NIfTI files.
    #[arg(long, value_name = "DIR")]
    cohort: Option<PathBuf>,
    /// Samples per requested value (the grids' columns).
    #[arg(long, default_value_t = 4)]
    seeds: usize,
    /// Requested values per sweep and in the extrapolation (the grids' rows; ≥ 2).
    #[arg(long, default_value_t = 7)]
    points: usize,
    /// Random distinct pairs per set for diversity.
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Generated samples for diversity. Default: the fewest with twice --pairs distinct pairs.
    #[arg(long)]
    diversity_samples: Option<usize>,
    /// Samples conditioned on the covariates of random training subjects (uniform over the
    /// scaling range when the model stores none); 0 leaves this part out.
    #[arg(long, default_value_t = 28)]
    subjects: usize,
    /// Random cohort images to encode and decode with the model's autoencoder, measuring
    /// the volumes before and after (what the autoencoder loses is hard for any sample to
    /// show); 0 leaves this part out. Default: up to 28 when the cohort's images have the
    /// model's shape, else none.
    #[arg(long, value_name = "N")]
    reconstructions: Option<usize>,
    /// Sex of the swept samples: F or M.
    #[arg(long, default_value = "F")]
    sex: Sex,
    /// The sampler: --steps, --scheduler, --eta, --spacing, --device.
    #[command(flatten)]
    sampler: SamplerArgs,
    /// Classifier-free guidance scale (1: plain conditional; needs a model trained with
    /// conditioning dropout otherwise). Default: the model's own (`guidance_scale` in its
    /// model.json; 3 for the built-in demo model), else 1.
    #[arg(long, value_name = "S", allow_hyphen_values = true)]
    guidance_scale: Option<f64>,
    /// Samples denoised together.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Seed of the starting noise (column c of every grid uses noise stream c) and of the
    /// random draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// The command line as typed, for the report (arguments with spaces quoted).
fn command_line() -> String {
    std::env::args()
        .enumerate()
        .map(|(i, a)| {
            let a = if i == 0 {
                Path::new(&a)
                    .file_name()
                    .map_or(a.clone(), |n| n.to_string_lossy().into_owned())
            } else {
                a
            };
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Creates `dir` and checks that it can be written to, before any long computation.
fn prepare_output(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("--out {}", dir.display()))?;
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .with_context(|| format!("--out {}: not writable", dir.display()))
}

/// Runs `brain-ldm fidelity`.
pub fn run(args: FidelityArgs) -> anyhow::Result<()> {
    let device = args.sampler.device.open()?;
    let (pipeline, model) = open_model(args.model.as_deref(), &device)?;
    let config = FidelityConfig {
        points: args.points,
        seeds: args.seeds,
        pairs: args.pairs,
        diversity_samples: args.diversity_samples,
        subjects: args.subjects,
        reconstructions: args.reconstructions,
        sex: args.sex,
        sampling: args.sampler.settings(),
        guidance_scale: args.guidance_scale.unwrap_or(pipeline.guidance_scale),
        batch_size: args.batch_size,
        seed: args.seed,
        ..FidelityConfig::default()
    };
    let fidelity = Fidelity::new(&pipeline, config, args.cohort.as_deref())?;
    prepare_output(&args.out)?;
    let ms = fidelity.ms_ssim();
    let subjects = if args.subjects > 0 {
        format!("{} ({})", args.subjects, fidelity.subjects_conditioning())
    } else {
        "none".to_string()
    };
    eprintln!(
        "fidelity: {model}; {} samples of {} steps, seed {}; fixed covariates: {}; \
         training subjects: {subjects}; reconstructions: {}; diversity: {}; MS-SSIM window {} \
         (σ {}), {} scales",
        fidelity.samples(),
        fidelity.steps_per_sample(),
        args.seed,
        fidelity.fixed().source,
        fidelity.reconstructions(),
        fidelity.diversity_conditioning(),
        ms.kernel_size,
        ms.kernel_sigma,
        ms.weights.len(),
    );
    let bar = steps_bar((fidelity.samples() * fidelity.steps_per_sample()) as u64)?;
    let outcome = fidelity.run(&device, &mut |p: FidelityProgress| {
        bar.set_message(format!(
            "{} ({}/{} samples)",
            p.stage, p.samples_done, p.samples_total
        ));
        bar.set_position(p.steps_done as u64);
    })?;
    bar.finish_and_clear();
    let provenance = Provenance {
        model,
        command: command_line(),
    };
    let written = outcome.write(&args.out, &provenance)?;
    let r = &outcome.report;
    let num = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    println!(
        "ventricular volume sweep: r = {}, slope {}",
        num(r.ventricular_volume.ventricular_fit.pearson_r),
        num(r.ventricular_volume.ventricular_fit.slope)
    );
    println!(
        "brain volume sweep: r = {}, slope {}",
        num(r.brain_volume.brain_fit.pearson_r),
        num(r.brain_volume.brain_fit.slope)
    );
    if let Some(t) = &r.training_subjects {
        println!(
            "{} samples conditioned on {}: ventricular volume r = {}, slope {} (paper: r = 0.972); \
             brain volume r = {}, slope {}",
            t.samples,
            t.conditioning,
            num(t.ventricular_fit.pearson_r),
            num(t.ventricular_fit.slope),
            num(t.brain_fit.pearson_r),
            num(t.brain_fit.slope)
        );
    }
    if let Some(a) = &r.reconstruction {
        println!(
            "{} cohort images through the autoencoder: ventricular volume of reconstructions vs \
             images r = {}, slope {}; brain volume r = {}, slope {}",
            a.images,
            num(a.ventricular_fit.pearson_r),
            num(a.ventricular_fit.slope),
            num(a.brain_fit.pearson_r),
            num(a.brain_fit.slope)
        );
    }
    println!(
        "age sweep: ventricles {} mm³/year, brain {} mm³/year",
        num(r.age.ventricular_fit.slope),
        num(r.age.brain_fit.slope)
    );
    print!(
        "diversity MS-SSIM: generated {:.4}",
        r.diversity.generated.mean_ms_ssim
    );
    match &r.diversity.cohort {
        Some(c) => println!(
            ", cohort {:.4} (paper: 0.6555 vs 0.6536)",
            c.report.mean_ms_ssim
        ),
        None => println!(" (paper: 0.6555)"),
    }
    if r.measurement_failures > 0 {
        println!(
            "{} generated brains could not be measured (see measurements.csv)",
            r.measurement_failures
        );
    }
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
