//! Forward passes of the public brain-LDM bundle's diffusion UNet (553 M parameters) on a
//! 1×7×20×28×20 latent with a 1×1×4 context, for timing and peak memory:
//!
//! ```text
//! cargo build --release -p brain-ldm-unet --example unet_forward
//! /usr/bin/time -v target/release/examples/unet_forward [REPETITIONS [CHECKPOINT [CONVERTED]]]
//! ```
//!
//! Without `CHECKPOINT` the weights are random (as a `VarMap` initialises them; MONAI's
//! zero-initialised layers, among them the output convolution, start at zero, so the output
//! is zero: the timing does not depend on the values). With `CHECKPOINT` (`.pt` with old or
//! new MONAI key names, or `.safetensors`) the weights are loaded from it and the loading
//! time is printed; with `CONVERTED` as well, the checkpoint is first converted to that
//! `.safetensors` file (timed) and the model is loaded from the converted file.
//!
//! Built with `--features cuda` it runs on the first CUDA GPU when one is present
//! (docs/cuda.md), else on the CPU.

use brain_ldm_unet::{convert_checkpoint, DiffusionModelUNet, DiffusionModelUNetConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;
use std::time::Instant;

/// The model with random weights, detached from autograd (inference).
fn random_unet(
    cfg: &DiffusionModelUNetConfig,
    dev: &Device,
) -> Result<DiffusionModelUNet, Box<dyn std::error::Error>> {
    let vars = VarMap::new();
    DiffusionModelUNet::new(cfg, VarBuilder::from_varmap(&vars, DType::F32, dev))?;
    let weights: HashMap<String, Tensor> = vars
        .data()
        .lock()
        .map_err(|_| "VarMap lock poisoned")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    Ok(DiffusionModelUNet::new(
        cfg,
        VarBuilder::from_tensors(weights, DType::F32, dev),
    )?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let repetitions: usize = match args.first() {
        Some(n) => n.parse()?,
        None => 1,
    };
    let dev = Device::cuda_if_available(0)?;
    let cfg = DiffusionModelUNetConfig::brain_ldm();

    let unet = match (args.get(1), args.get(2)) {
        (None, _) => {
            let start = Instant::now();
            let unet = random_unet(&cfg, &dev)?;
            println!("random weights: {:.2} s", start.elapsed().as_secs_f64());
            unet
        }
        (Some(checkpoint), converted) => {
            let path = match converted {
                Some(dst) => {
                    let start = Instant::now();
                    convert_checkpoint(checkpoint, dst, &cfg)?;
                    println!(
                        "convert {checkpoint} -> {dst}: {:.2} s",
                        start.elapsed().as_secs_f64()
                    );
                    dst
                }
                None => checkpoint,
            };
            let start = Instant::now();
            let unet = DiffusionModelUNet::load(path, &cfg, DType::F32, &dev)?;
            println!("load {path}: {:.2} s", start.elapsed().as_secs_f64());
            unet
        }
    };

    // A smooth deterministic latent, the bundle-small fixture's covariates, t = 500.
    let n = 7 * 20 * 28 * 20;
    let x = (Tensor::arange(0u32, n as u32, &dev)?.to_dtype(DType::F32)? * 0.01)?
        .sin()?
        .reshape((1, 7, 20, 28, 20))?;
    let t = Tensor::new(&[500u32], &dev)?;
    let context = Tensor::new(&[[[1.0f32, 0.7, 0.7, 0.5]]], &dev)?;
    dev.synchronize()?;
    for _ in 0..repetitions {
        let start = Instant::now();
        let y = unet.forward(&x, &t, Some(&context), None)?;
        dev.synchronize()?;
        let elapsed = start.elapsed().as_secs_f64();
        let max = y.abs()?.max_all()?.to_scalar::<f32>()?;
        println!(
            "forward {:?} -> {:?}: {elapsed:.3} s (max |y| {max:.4})",
            x.dims(),
            y.dims(),
        );
    }
    Ok(())
}
