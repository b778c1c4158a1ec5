//! `brain-ldm sample`: synthetic brains from covariates, one NIfTI + PNG + JSON sidecar each.

use anyhow::{bail, Context};
use brain_ldm::{
    Conditioning, Covariates, LatentDiffusionPipeline, SampleRecord, SampleWriter,
    SamplingSettings, SchedulerKind, Sex, TimestepSpacing, VoxelFormat,
};
use candle_core::Device;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// Sample brains conditioned on sex, age, ventricular and brain volume.
///
/// Give the covariates in physical units (all four) or as the model's normalised values
/// with --raw. Files: OUT/sample-NNNN.nii.gz, .png (three mid-slices), .json (covariates and
/// settings). The same --seed and index always give the same brain.
#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Model folder: the public MONAI bundle as downloaded, or a `brain-ldm convert` output.
    #[arg(long, visible_alias = "model", value_name = "DIR")]
    bundle: PathBuf,
    /// Biological sex: F or M.
    #[arg(long, conflicts_with = "raw")]
    sex: Option<Sex>,
    /// Age in years.
    #[arg(long, conflicts_with = "raw")]
    age: Option<f64>,
    /// Ventricular volume in mm³.
    #[arg(long, conflicts_with = "raw")]
    ventricular_volume: Option<f64>,
    /// Brain volume in mm³.
    #[arg(long, conflicts_with = "raw")]
    brain_volume: Option<f64>,
    /// The normalised conditioning "sex,age,ventricular,brain" (values outside [0, 1]
    /// extrapolate).
    #[arg(
        long,
        value_name = "S,A,V,B",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    raw: Option<Vec<f32>>,
    /// Number of samples.
    #[arg(short = 'n', long, default_value_t = 1)]
    num_samples: usize,
    /// Seed of the run; sample i starts from noise stream i of this seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Denoising steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Sampler.
    #[arg(long, default_value = "ddim")]
    scheduler: SchedulerKind,
    /// DDIM's eta (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// Timestep spacing: leading (GenerativeModels 0.2, the bundle's), linspace (MONAI 1.6),
    /// trailing.
    #[arg(long, default_value = "leading")]
    spacing: TimestepSpacing,
    /// Voxel type of the NIfTI files.
    #[arg(long, value_enum, default_value_t = Format::F32)]
    format: Format,
    /// Output folder.
    #[arg(long, default_value = "samples")]
    out: PathBuf,
    /// Skip samples already written with the same settings.
    #[arg(long)]
    resume: bool,
}

/// NIfTI voxel type.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// float32, the decoder's output as is.
    F32,
    /// uint8 0–255 from [0, 1], as the bundle's saver writes.
    U8,
}

/// The covariates asked for: the model's normalised values, or physical units (normalised
/// once the model, which holds the scaling, is loaded).
enum Requested {
    Raw(Conditioning),
    Physical(Covariates),
}

/// Reads and checks the covariate arguments (before any weights are loaded).
fn requested(args: &SampleArgs) -> anyhow::Result<Requested> {
    if let Some(raw) = &args.raw {
        let values: [f32; 4] = raw
            .as_slice()
            .try_into()
            .context("--raw takes exactly four values")?;
        return Ok(Requested::Raw(Conditioning(values).validated()?));
    }
    let (Some(sex), Some(age), Some(ventricular), Some(brain)) = (
        args.sex,
        args.age,
        args.ventricular_volume,
        args.brain_volume,
    ) else {
        bail!(
            "give all of --sex, --age, --ventricular-volume and --brain-volume, or --raw S,A,V,B"
        );
    };
    Ok(Requested::Physical(Covariates {
        sex,
        age_years: age,
        ventricular_volume_mm3: ventricular,
        brain_volume_mm3: brain,
    }))
}

/// Runs `brain-ldm sample`.
pub fn run(args: SampleArgs) -> anyhow::Result<()> {
    if args.num_samples == 0 || args.steps == 0 {
        bail!("-n and --steps must be at least 1");
    }
    let device = Device::Cpu;
    // Cheap checks first: covariates, before loading weights.
    let requested = requested(&args)?;
    let format = match args.format {
        Format::F32 => VoxelFormat::F32,
        Format::U8 => VoxelFormat::U8,
    };
    let pipeline = LatentDiffusionPipeline::open(&args.bundle, &device)?;
    let (conditioning, covariates) = match requested {
        Requested::Raw(conditioning) => (conditioning, None),
        Requested::Physical(covariates) => (
            pipeline.covariate_scaling.normalise(&covariates)?,
            Some(covariates),
        ),
    };
    let writer = SampleWriter::new(&args.out, format, pipeline.image_affine)?;
    let settings = SamplingSettings {
        scheduler: args.scheduler,
        steps: args.steps,
        eta: args.eta,
        spacing: args.spacing,
    };
    // Validates the settings before the first sample.
    let steps = pipeline.scheduler(&settings)?.timesteps().len();
    let bar = ProgressBar::new((args.num_samples * steps) as u64).with_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} steps, {elapsed} elapsed, ETA {eta}",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    );
    for index in 0..args.num_samples {
        let record = SampleRecord {
            index,
            seed: args.seed,
            covariates,
            conditioning,
            scheduler: settings.scheduler.to_string(),
            steps: settings.steps,
            eta: settings.eta,
            model: args.bundle.display().to_string(),
        };
        bar.set_message(format!("sample {}/{}", index + 1, args.num_samples));
        if args.resume && writer.is_complete(&record) {
            bar.inc(steps as u64);
            let nifti = writer.paths(index).nifti;
            bar.suspend(|| println!("kept {} (complete)", nifti.display()));
            continue;
        }
        let mut scheduler = pipeline.scheduler(&settings)?;
        let image = pipeline.sample(
            scheduler.as_mut(),
            &conditioning,
            args.seed,
            index as u64,
            &device,
            &mut |_, _| bar.inc(1),
        )?;
        let paths = writer.write(&image, &record)?;
        // Printed whether or not the progress bar is drawn (it is hidden off a terminal).
        bar.suspend(|| println!("wrote {}", paths.nifti.display()));
    }
    bar.finish_and_clear();
    Ok(())
}
