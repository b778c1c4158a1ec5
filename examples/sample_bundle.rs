//! Samples brains from a model folder with the library API: the public MONAI bundle
//! `brain_image_synthesis_latent_diffusion_model` as downloaded, or a `brain-ldm convert`
//! output.
//!
//! Run: `cargo run --release -p brain-ldm --example sample_bundle -- [MODEL_DIR] [OUT_DIR]`.
//! Without arguments it uses tests/fixtures/bundle-small, the bundle shrunk to a few
//! channels with random weights (so its "brains" are noise), and writes to
//! target/sample_bundle.

use brain_ldm::{
    Covariates, LatentDiffusionPipeline, SampleRecord, SampleWriter, SamplingSettings, Sex,
    VoxelFormat,
};
use candle_core::Device;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .map_or_else(|| root.join("tests/fixtures/bundle-small"), PathBuf::from);
    let out = args
        .next()
        .map_or_else(|| root.join("target/sample_bundle"), PathBuf::from);

    let device = Device::Cpu;
    let pipeline = LatentDiffusionPipeline::open(&model, &device)?;
    let writer = SampleWriter::new(&out, VoxelFormat::F32, pipeline.image_affine)?;
    let settings = SamplingSettings::default();
    let seed = 0;
    // Two 70-year-old women, one with small and one with large ventricles.
    for (index, ventricles) in [15_000.0, 90_000.0].into_iter().enumerate() {
        let covariates = Covariates {
            sex: Sex::Female,
            age_years: 70.0,
            ventricular_volume_mm3: ventricles,
            brain_volume_mm3: 1.4e6,
        };
        let conditioning = pipeline.covariate_scaling.normalise(&covariates)?;
        let mut scheduler = pipeline.scheduler(&settings)?;
        let image = pipeline.sample(
            scheduler.as_mut(),
            &conditioning,
            seed,
            index as u64,
            &device,
            &mut |done, total| eprint!("\rsample {index}: step {done}/{total}"),
        )?;
        eprintln!();
        let record = SampleRecord {
            index,
            seed,
            covariates: Some(covariates),
            conditioning,
            scheduler: settings.scheduler.to_string(),
            steps: settings.steps,
            eta: settings.eta,
            model: model.display().to_string(),
            guidance_scale: 1.0,
        };
        let paths = writer.write(&image, &record)?;
        println!("wrote {}", paths.nifti.display());
    }
    Ok(())
}
