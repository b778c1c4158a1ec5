//! One full-size sample with the public bundle's architecture and random weights: 50 DDIM
//! steps of the 553 M-parameter UNet on the 3×20×28×20 latent, then the decoder to
//! 160×224×160. Prints the time of each phase; peak memory comes from `/usr/bin/time -v`.
//!
//! Run: `/usr/bin/time -v cargo run --release -p brain-ldm --example sample_full_size -- [STEPS]`
//! (results in docs/benchmarks.md). Built with `--features cuda` it runs on the first CUDA GPU
//! when one is present (docs/cuda.md), else on the CPU.

use brain_ldm::{
    AutoencoderKL, AutoencoderKLConfig, Conditioning, ConditioningMode, CovariateScaling,
    DiffusionModelUNet, DiffusionModelUNetConfig, LatentDiffusionPipeline, SamplingSettings,
    BUNDLE_IMAGE_AFFINE,
};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;
use std::time::Instant;

/// Freed full-size slab buffers are reused instead of faulted in again (`LargeBlockCache`).
#[global_allocator]
static ALLOCATOR: brain_ldm::nn::LargeBlockCache = brain_ldm::nn::LargeBlockCache::new();

/// Builds a model with randomly initialised weights that carry no autograd graph.
fn random<T>(device: &Device, build: impl Fn(VarBuilder) -> Result<T>) -> Result<T> {
    let varmap = VarMap::new();
    build(VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    let tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .expect("the VarMap lock is not poisoned")
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
        .collect();
    build(VarBuilder::from_tensors(tensors, DType::F32, device))
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let steps = std::env::args()
        .nth(1)
        .map_or(Ok(50), |s| s.parse::<usize>())?;
    let device = Device::cuda_if_available(0)?;
    let start = Instant::now();
    let ae_config = AutoencoderKLConfig::brain_ldm();
    let unet_config = DiffusionModelUNetConfig::brain_ldm();
    let pipeline = LatentDiffusionPipeline {
        autoencoder: random(&device, |vb| AutoencoderKL::new(&ae_config, vb))?,
        unet: random(&device, |vb| DiffusionModelUNet::new(&unet_config, vb))?,
        conditioning: ConditioningMode::Both,
        latent_shape: [3, 20, 28, 20],
        scale_factor: 1.0,
        scheduler_config: serde_json::json!({
            "num_train_timesteps": 1000, "schedule": "scaled_linear_beta",
            "beta_start": 0.0015, "beta_end": 0.0205, "clip_sample": false
        }),
        covariate_scaling: CovariateScaling::paper(),
        image_affine: BUNDLE_IMAGE_AFFINE,
        null_condition: None,
        training_covariates: None,
        guidance_scale: 1.0,
    };
    pipeline.validate()?;
    println!("random weights: {:.1} s", start.elapsed().as_secs_f64());

    let settings = SamplingSettings {
        steps,
        ..SamplingSettings::default()
    };
    let mut scheduler = pipeline.scheduler(&settings)?;
    let conditioning = Conditioning([1.0, 0.7, 0.7, 0.5]);
    let noise = brain_ldm::NoiseGenerator::new(0).randn((1, 3, 20, 28, 20), DType::F32, &device)?;
    // The GPU runs asynchronously: nothing queued before may count in the timings.
    device.synchronize()?;
    let start = Instant::now();
    let latent = pipeline.denoise(
        scheduler.as_mut(),
        &conditioning,
        noise,
        &mut brain_ldm::NoiseGenerator::new(1),
        &mut |done, total| eprint!("\rstep {done}/{total}"),
    )?;
    device.synchronize()?;
    let denoise = start.elapsed().as_secs_f64();
    eprintln!();
    let start = Instant::now();
    let image = pipeline.decode(&latent)?;
    device.synchronize()?;
    let decode = start.elapsed().as_secs_f64();
    println!(
        "{steps} DDIM steps: {denoise:.1} s ({:.2} s/step); decode to {:?}: {decode:.1} s; total {:.1} s",
        denoise / steps as f64,
        image.dims(),
        denoise + decode
    );
    Ok(())
}
