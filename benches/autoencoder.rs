//! Full-resolution autoencoder inference with the public brain-LDM bundle's configuration
//! (channels 64/128/128/128, 2 residual blocks, 32 groups, no attention; random weights):
//! decoding a 1×3×20×28×20 latent to 1×1×160×224×160 and encoding it back.
//!
//! `cargo bench -p brain-ldm-autoencoder --bench autoencoder` (results in docs/benchmarks.md).

use brain_ldm_autoencoder::{AutoencoderKL, AutoencoderKLConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

/// Freed full-size slab buffers are reused instead of faulted in again (brain-ldm-nn's
/// `LargeBlockCache`).
#[global_allocator]
static ALLOCATOR: brain_ldm_nn::LargeBlockCache = brain_ldm_nn::LargeBlockCache::new();

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let vars = VarMap::new();
    let cfg = AutoencoderKLConfig::brain_ldm();
    let ae =
        AutoencoderKL::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &dev)).expect("model");
    let z = Tensor::randn(0f32, 1.0, (1, 3, 20, 28, 20), &dev).expect("latent");
    let x = Tensor::rand(0f32, 1.0, (1, 1, 160, 224, 160), &dev).expect("image");

    let mut group = c.benchmark_group("autoencoder");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(60));
    group.bench_function("decode_3x20x28x20_to_160x224x160", |b| {
        b.iter(|| ae.decode(&z).expect("decode"))
    });
    group.bench_function("encode_160x224x160", |b| {
        b.iter(|| ae.encode(&x).expect("encode"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
