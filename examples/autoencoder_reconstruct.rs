//! Reconstructs the MNI152 T1 template (`data/mni152/`) through the brain-LDM autoencoder at
//! full resolution (160×224×160 → 3×20×28×20 latent → 160×224×160) and writes the
//! reconstruction and the latent mean as NIfTI.
//!
//! ```text
//! cargo run --release -p brain-ldm-autoencoder --example autoencoder_reconstruct -- \
//!     [--weights models/autoencoder.pt] [--config autoencoder.json] [--input T1.nii.gz] \
//!     [--as-is] [--output recon.nii.gz] [--seed 0] [--only encode|decode]
//! ```
//! `--config` takes an `AutoencoderKLConfig` as JSON (the `autoencoder.json` that `brain-ldm
//! train autoencoder` writes beside its `autoencoder.safetensors`; default: the bundle's).
//! `--as-is` feeds the input unchanged instead of through the brain-LDM preprocessing: for
//! images already in the model's space, such as a `brain-ldm synth` cohort's for the demo
//! autoencoder.
//! Without `--weights` the bundle's architecture gets seeded random weights (a timing and
//! memory run: the picture is meaningless). `--only encode` stops after the encoder; `--only
//! decode` decodes a seeded random latent `1×3×20×28×20` (the bundle's latent shape; uniform,
//! variance 1) instead of the encoded input: one operation per process, as
//! `scripts/bench_monai.py ae-encode` / `ae-decode` time MONAI. Run under `/usr/bin/time -v`
//! for the peak memory.

use brain_ldm_autoencoder::{AutoencoderKL, AutoencoderKLConfig};
use brain_ldm_nifti::{preprocess::PreprocessOptions, read, write, Volume};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// Freed full-size slab buffers are reused instead of faulted in again (brain-ldm-nn's
/// `LargeBlockCache`).
#[global_allocator]
static ALLOCATOR: brain_ldm_nn::LargeBlockCache = brain_ldm_nn::LargeBlockCache::new();

/// Seeded weights: convolution and linear weights uniform with variance 1/fan_in, norm gains
/// 1, biases 0; variables visited in name order so the result depends only on the seed.
fn random_model(cfg: &AutoencoderKLConfig, seed: u64) -> candle_core::Result<AutoencoderKL> {
    let vars = VarMap::new();
    let ae = AutoencoderKL::new(
        cfg,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )?;
    let data = vars
        .data()
        .lock()
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if dims.len() == 1 {
            let v = if name.ends_with("weight") { 1.0 } else { 0.0 };
            vec![v; n]
        } else {
            let bound = (3.0 / (n / dims[0]) as f32).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        var.set(&Tensor::from_vec(values, dims, &Device::Cpu)?)?;
    }
    Ok(ae)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut weights = None;
    let mut input = format!(
        "{}/../../data/mni152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut output = "autoencoder_reconstruction.nii.gz".to_string();
    let mut seed = 0u64;
    let mut only = None;
    let mut config = None;
    let mut as_is = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--weights" => weights = Some(value()?),
            "--input" => input = value()?,
            "--output" => output = value()?,
            "--seed" => seed = value()?.parse()?,
            "--only" => only = Some(value()?),
            "--config" => config = Some(value()?),
            "--as-is" => as_is = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let (encode, decode) = match only.as_deref() {
        None => (true, true),
        Some("encode") => (true, false),
        Some("decode") => (false, true),
        Some(other) => return Err(format!("--only takes encode or decode, not {other}").into()),
    };
    let cfg = match &config {
        Some(path) => AutoencoderKLConfig::from_json(&std::fs::read_to_string(path)?)?,
        None => AutoencoderKLConfig::brain_ldm(),
    };
    let ae = match &weights {
        Some(path) => AutoencoderKL::load(path, &cfg, &Device::Cpu)?,
        None => {
            println!("random weights, seed {seed}");
            random_model(&cfg, seed)?
        }
    };
    let volume = read(&input)?;
    let volume = if as_is {
        volume
    } else {
        PreprocessOptions::brain_ldm().apply(&volume)?
    };
    let mu = if !encode {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let latent: Vec<f32> = (0..3 * 20 * 28 * 20)
            .map(|_| rng.random_range(-3f32.sqrt()..3f32.sqrt()))
            .collect();
        println!("decoding a random latent (mean 0, variance 1), seed {seed}");
        Tensor::from_vec(latent, (1, 3, 20, 28, 20), &Device::Cpu)?
    } else {
        let x = volume.to_tensor(&Device::Cpu)?;
        println!("input {:?} from {input}", x.dims());
        let start = Instant::now();
        let (mu, _sigma) = ae.encode(&x)?;
        println!(
            "encode: {:.2} s → latent {:?}",
            start.elapsed().as_secs_f64(),
            mu.dims()
        );
        mu
    };
    if !decode {
        return Ok(());
    }
    let start = Instant::now();
    let recon = ae.decode(&mu)?;
    println!(
        "decode: {:.2} s → {:?}",
        start.elapsed().as_secs_f64(),
        recon.dims()
    );

    write(&Volume::from_tensor(&recon, volume.affine)?, &output)?;
    println!("wrote {output}");
    Ok(())
}
