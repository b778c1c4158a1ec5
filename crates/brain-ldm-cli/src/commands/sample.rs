//! `brain-ldm sample`: synthetic brains from covariates, one NIfTI + PNG + JSON sidecar each.

use super::sampler_args::{open_model, steps_bar, SamplerArgs};
use anyhow::{bail, Context};
use brain_ldm::{
    Conditioning, PartialCovariates, SampleRecord, SampleRequest, SampleWriter, Sex, VoxelFormat,
};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// Sample brains conditioned on sex, age, ventricular and brain volume.
///
/// Without --model, the built-in demo model (40×56×40 at 4 mm) is used. Give the covariates
/// in physical units (those left out are drawn, per sample, from the model's training
/// subjects), as the model's normalised values with --raw, or none with --unconditional.
/// Files: OUT/sample-NNNN.nii.gz, .png (three mid-slices), .json (covariates, guidance scale
/// and settings). The same --seed and index always give the same brain.
#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Model folder: the public MONAI bundle as downloaded, or a `brain-ldm convert` or
    /// `brain-ldm train diffusion` output. Default: the built-in demo model.
    #[arg(long, visible_alias = "model", value_name = "DIR")]
    bundle: Option<PathBuf>,
    /// Biological sex: F or M.
    #[arg(long, conflicts_with_all = ["raw", "unconditional"])]
    sex: Option<Sex>,
    /// Age in years.
    #[arg(long, conflicts_with_all = ["raw", "unconditional"])]
    age: Option<f64>,
    /// Ventricular volume in mm³.
    #[arg(long, conflicts_with_all = ["raw", "unconditional"])]
    ventricular_volume: Option<f64>,
    /// Brain volume in mm³.
    #[arg(long, conflicts_with_all = ["raw", "unconditional"])]
    brain_volume: Option<f64>,
    /// The normalised conditioning "sex,age,ventricular,brain" (values outside [0, 1]
    /// extrapolate).
    #[arg(
        long,
        value_name = "S,A,V,B",
        value_delimiter = ',',
        allow_hyphen_values = true,
        conflicts_with = "unconditional"
    )]
    raw: Option<Vec<f32>>,
    /// Sample without covariates (the model's null condition; needs a model trained with
    /// conditioning dropout).
    #[arg(long)]
    unconditional: bool,
    /// Classifier-free guidance scale: 1 plain conditional sampling, 0 unconditional, above 1
    /// closer to the covariates (needs a model trained with conditioning dropout unless 1).
    /// Default: the model's own (`guidance_scale` in its model.json; 3 for the built-in demo
    /// model), else 1.
    #[arg(long, value_name = "S", allow_hyphen_values = true)]
    guidance_scale: Option<f64>,
    /// Samples denoised together (one UNet forward per step for the whole batch).
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Number of samples.
    #[arg(short = 'n', long, default_value_t = 1)]
    num_samples: usize,
    /// Seed of the run; sample i starts from noise stream i of this seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The sampler: --steps, --scheduler, --eta, --spacing, --device.
    #[command(flatten)]
    sampler: SamplerArgs,
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

/// The covariates asked for: the model's normalised values, physical units (normalised, and
/// completed from the training distribution, once the model is loaded), or none.
enum Requested {
    Raw(Conditioning),
    Physical(PartialCovariates),
    Unconditional,
}

/// Reads and checks the covariate arguments (before any weights are loaded).
fn requested(args: &SampleArgs) -> anyhow::Result<Requested> {
    if args.unconditional {
        return Ok(Requested::Unconditional);
    }
    if let Some(raw) = &args.raw {
        let values: [f32; 4] = raw.as_slice().try_into().map_err(|_| {
            anyhow::anyhow!(
                "--raw takes exactly four values (sex,age,ventricular,brain), got {}",
                raw.len()
            )
        })?;
        return Ok(Requested::Raw(Conditioning(values).validated()?));
    }
    for (value, flag) in [
        (args.age, "--age"),
        (args.ventricular_volume, "--ventricular-volume"),
        (args.brain_volume, "--brain-volume"),
    ] {
        if let Some(v) = value.filter(|v| !v.is_finite()) {
            bail!("{flag} {v} is not a finite number");
        }
    }
    Ok(Requested::Physical(PartialCovariates {
        sex: args.sex,
        age_years: args.age,
        ventricular_volume_mm3: args.ventricular_volume,
        brain_volume_mm3: args.brain_volume,
    }))
}

/// Runs `brain-ldm sample`.
pub fn run(args: SampleArgs) -> anyhow::Result<()> {
    if args.num_samples == 0 || args.sampler.steps == 0 || args.batch_size == 0 {
        bail!("-n, --steps and --batch-size must be at least 1");
    }
    let device = args.sampler.device.open()?;
    // Cheap checks first: covariates, before loading weights.
    let requested = requested(&args)?;
    let format = match args.format {
        Format::F32 => VoxelFormat::F32,
        Format::U8 => VoxelFormat::U8,
    };
    let (pipeline, model) = open_model(args.bundle.as_deref(), &device)?;
    let unconditional = matches!(requested, Requested::Unconditional);
    let guidance_scale = args.guidance_scale.unwrap_or(pipeline.guidance_scale);
    pipeline.check_guidance(guidance_scale, unconditional)?;
    if let Requested::Physical(partial) = &requested {
        let missing = partial.missing();
        if !missing.is_empty() && pipeline.training_covariates.is_none() {
            bail!(
                "{model} stores no training covariates to draw --{} from: give all of --sex, --age, --ventricular-volume and --brain-volume, or --raw S,A,V,B",
                missing.join(", --")
            );
        }
    }
    let writer = SampleWriter::new(&args.out, format, pipeline.image_affine)?;
    let settings = args.sampler.settings();
    // Validates the settings before the first sample.
    let steps = pipeline.scheduler(&settings)?.timesteps().len();
    // Every sample's covariates and record (open covariates drawn per sample) up front.
    let mut planned = Vec::with_capacity(args.num_samples);
    for index in 0..args.num_samples {
        let (covariates, conditioning) = match &requested {
            Requested::Raw(conditioning) => (None, Some(*conditioning)),
            Requested::Physical(partial) => {
                let covariates = pipeline.complete_covariates(partial, args.seed, index as u64)?;
                let conditioning = pipeline.covariate_scaling.normalise(&covariates)?;
                (Some(covariates), Some(conditioning))
            }
            Requested::Unconditional => (None, None),
        };
        let record = SampleRecord {
            index,
            seed: args.seed,
            covariates,
            // What the model saw: the null condition when unconditional (checked above).
            conditioning: conditioning
                .or(pipeline.null_condition.map(Conditioning))
                .context("unconditional sampling needs a null condition")?,
            scheduler: settings.scheduler.to_string(),
            steps: settings.steps,
            eta: settings.eta,
            model: model.clone(),
            // Unconditional whatever the scale.
            guidance_scale: if unconditional { 0.0 } else { guidance_scale },
        };
        planned.push((record, conditioning));
    }
    let bar = steps_bar((args.num_samples * steps) as u64)?;
    let mut pending = Vec::new();
    for (record, conditioning) in planned {
        if args.resume && writer.is_complete(&record) {
            bar.inc(steps as u64);
            let nifti = writer.paths(record.index).nifti;
            bar.suspend(|| println!("kept {} (complete)", nifti.display()));
        } else {
            pending.push((record, conditioning));
        }
    }
    for batch in pending.chunks(args.batch_size) {
        let (first, last) = (batch[0].0.index, batch[batch.len() - 1].0.index);
        bar.set_message(if first == last {
            format!("sample {}/{}", first + 1, args.num_samples)
        } else {
            format!("samples {}–{}/{}", first + 1, last + 1, args.num_samples)
        });
        let requests: Vec<SampleRequest> = batch
            .iter()
            .map(|(record, conditioning)| SampleRequest {
                conditioning: *conditioning,
                seed: record.seed,
                index: record.index as u64,
            })
            .collect();
        let mut scheduler = pipeline.scheduler(&settings)?;
        let images = pipeline.sample_batch(
            scheduler.as_mut(),
            guidance_scale,
            &requests,
            &device,
            &mut |_, _| bar.inc(batch.len() as u64),
        )?;
        for (k, (record, _)) in batch.iter().enumerate() {
            let paths = writer.write(&images.narrow(0, k, 1)?, record)?;
            // Printed whether or not the progress bar is drawn (it is hidden off a terminal).
            bar.suspend(|| println!("wrote {}", paths.nifti.display()));
        }
    }
    bar.finish_and_clear();
    Ok(())
}
