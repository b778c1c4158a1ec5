//! The UNet's non-convolution layers on the CPU (f32), each beside the candle expression it
//! replaces: the transformer feed-forward's gated GELU and the skip connections' channel
//! concatenation, at the bundle UNet's sizes.
//!
//! Run: `cargo bench -p brain-ldm-nn --bench layers`. Results: docs/benchmarks.md.

use brain_ldm_nn::ops::{concat_channels, geglu};
use candle_core::{Device, Tensor, D};
use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("layers");
    group.sample_size(20);
    // The feed-forward's projection at level 2: 1400 tokens, 2 × 2048 channels.
    let x = Tensor::randn(0f32, 1.0, (1, 1400, 4096), &dev).unwrap();
    group.bench_function("geglu_1400x4096", |b| b.iter(|| geglu(&x).unwrap()));
    group.bench_function("geglu_1400x4096_candle", |b| {
        b.iter(|| {
            let a = x.narrow(D::Minus1, 0, 2048).unwrap();
            let g = x.narrow(D::Minus1, 2048, 2048).unwrap();
            (a * g.gelu_erf().unwrap()).unwrap()
        })
    });
    // A skip connection at level 1: 512 + 512 channels on 20×28×20.
    let h = Tensor::randn(0f32, 1.0, (1, 512, 20, 28, 20), &dev).unwrap();
    group.bench_function("concat_2x512x20x28x20", |b| {
        b.iter(|| concat_channels(&h, &h).unwrap())
    });
    group.bench_function("concat_2x512x20x28x20_candle", |b| {
        b.iter(|| Tensor::cat(&[&h, &h], 1).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
