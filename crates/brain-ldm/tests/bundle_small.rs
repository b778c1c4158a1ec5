//! End-to-end parity with the public bundle's own sampler (scripts/sampler.py) on the shrunk
//! bundle in tests/fixtures/bundle-small: the same noise and conditioning must give the same
//! latents and image.

use brain_ldm::{
    convert_bundle, Conditioning, LatentDiffusionPipeline, NoiseGenerator, SamplingSettings,
};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// The device the tests run on: the first CUDA GPU when built with `--features cuda` and one
/// is present, else the CPU.
fn device() -> Device {
    Device::cuda_if_available(0).expect("CUDA device")
}

fn bundle_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bundle-small")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(bundle_dir().join("reference.safetensors"), &device()).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn reference_conditioning(reference: &HashMap<String, Tensor>) -> Conditioning {
    let values = reference["in.conditioning"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    Conditioning(values.try_into().unwrap())
}

/// Runs the bundle's DDIM (10 steps, leading spacing) from the reference noise.
fn sample_from_reference_noise(pipeline: &LatentDiffusionPipeline) -> (Tensor, Tensor, Tensor) {
    let reference = reference();
    let settings = SamplingSettings {
        steps: 10,
        ..SamplingSettings::default()
    };
    let mut scheduler = pipeline.scheduler(&settings).unwrap();
    let timesteps = reference["out.timesteps"]
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let ours: Vec<f64> = scheduler.timesteps().iter().map(|&t| t as f64).collect();
    assert_eq!(ours, timesteps);

    let conditioning = reference_conditioning(&reference);
    let run = |scheduler: &mut dyn brain_ldm::Scheduler| {
        pipeline
            .denoise(
                scheduler,
                &conditioning,
                reference["in.noise"].clone(),
                &mut NoiseGenerator::new(0),
                &mut |_, _| {},
            )
            .unwrap()
    };
    let latent = run(scheduler.as_mut());
    // The first step alone, for a finer check of the loop's first iteration.
    let mut fresh = pipeline.scheduler(&settings).unwrap();
    let first = fresh.timesteps()[0];
    let after_first = run(&mut OnlyTimesteps {
        inner: fresh.as_mut(),
        timesteps: vec![first],
    });
    let image = pipeline.decode(&latent).unwrap();
    (after_first, latent, image)
}

/// A scheduler that runs only the given timesteps of another.
struct OnlyTimesteps<'a> {
    inner: &'a mut (dyn brain_ldm::Scheduler + Send + Sync),
    timesteps: Vec<usize>,
}

impl brain_ldm::Scheduler for OnlyTimesteps<'_> {
    fn schedule(&self) -> &brain_ldm::schedulers::NoiseSchedule {
        self.inner.schedule()
    }
    fn prediction_type(&self) -> brain_ldm::schedulers::PredictionType {
        self.inner.prediction_type()
    }
    fn set_timesteps(&mut self, n: usize) -> brain_ldm::schedulers::Result<()> {
        self.inner.set_timesteps(n)
    }
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> brain_ldm::schedulers::Result<brain_ldm::schedulers::StepOutput> {
        self.inner.step(model_output, timestep, sample, noise)
    }
}

fn check_against_reference(pipeline: &LatentDiffusionPipeline) {
    let reference = reference();
    let (after_first, latent, image) = sample_from_reference_noise(pipeline);
    let first = max_abs_diff(&after_first, &reference["out.latent_after_first_step"]);
    let last = max_abs_diff(&latent, &reference["out.latent"]);
    let pixels = max_abs_diff(&image, &reference["out.image"]);
    eprintln!(
        "max abs error: first-step latent {first:.2e}, final latent {last:.2e}, image {pixels:.2e}"
    );
    assert!(
        first < 1e-4,
        "latent after the first step differs by {first}"
    );
    assert!(last < 1e-3, "final latent differs by {last}");
    // The bound: the decoded image within 1e-3 absolute.
    assert!(pixels < 1e-3, "image differs by {pixels}");
}

#[test]
fn the_bundle_folder_loads_as_distributed_and_matches_its_sampler() {
    let pipeline = LatentDiffusionPipeline::open(bundle_dir(), &device()).unwrap();
    check_against_reference(&pipeline);
}

#[test]
fn the_converted_folder_gives_the_same_samples() {
    let out = tempfile::tempdir().unwrap();
    convert_bundle(bundle_dir(), out.path()).unwrap();
    for file in ["model.json", "autoencoder.safetensors", "unet.safetensors"] {
        assert!(out.path().join(file).is_file(), "{file} missing");
    }
    let pipeline = LatentDiffusionPipeline::open(out.path(), &device()).unwrap();
    check_against_reference(&pipeline);
}

#[test]
fn missing_bundle_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = LatentDiffusionPipeline::open(dir.path(), &device())
        .err()
        .unwrap();
    assert!(err.to_string().contains("configs/inference.json"), "{err}");
    std::fs::create_dir_all(dir.path().join("configs")).unwrap();
    std::fs::copy(
        bundle_dir().join("configs/networks.json"),
        dir.path().join("configs/networks.json"),
    )
    .unwrap();
    let err = LatentDiffusionPipeline::open(dir.path(), &device())
        .err()
        .unwrap();
    assert!(err.to_string().contains("models/autoencoder.pt"), "{err}");
}

#[test]
fn a_config_that_does_not_match_the_weights_is_reported_with_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("configs")).unwrap();
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    for f in ["models/autoencoder.pt", "models/model.pt"] {
        std::fs::copy(bundle_dir().join(f), dir.path().join(f)).unwrap();
    }
    let text = std::fs::read_to_string(bundle_dir().join("configs/networks.json")).unwrap();
    // A second transformer layer per attention block: its weights are not in the file.
    let text = text.replace(
        "\"transformer_num_layers\": 1",
        "\"transformer_num_layers\": 2",
    );
    std::fs::write(dir.path().join("configs/networks.json"), text).unwrap();
    let err = LatentDiffusionPipeline::open(dir.path(), &device())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model.pt"), "{err}");
    assert!(
        err.contains("missing: ") && err.contains("transformer_blocks.1."),
        "{err}"
    );
}
