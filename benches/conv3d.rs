//! conv3d speed on the CPU (f32): the autoencoder's and the UNet's typical layers, forward
//! (`conv3d/…`), and forward plus backward as in training (`conv3d_backward/…`: the gradients
//! with respect to the input and the weight).
//!
//! Run: `cargo bench -p brain-ldm-nn --bench conv3d`. Results: docs/benchmarks.md.
//! Throughput is reported in FLOP (2 × multiply-adds of the output voxels computed, once per
//! pass: three passes for `conv3d_backward`).

use brain_ldm_nn::{ops::conv3d, Conv3dConfig};
use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// One benchmarked convolution: name, (c_in, c_out), kernel, input size, stride-2 downsampling.
struct Case(&'static str, [usize; 2], usize, [usize; 3], bool);

const CASES: &[Case] = &[
    Case("64to64_k3_64cube", [64, 64], 3, [64, 64, 64], false),
    Case(
        "256to256_k3_latent20x28x20",
        [256, 256],
        3,
        [20, 28, 20],
        false,
    ),
    Case("512to512_k3_10x14x10", [512, 512], 3, [10, 14, 10], false),
    Case("64to64_k1_64cube", [64, 64], 1, [64, 64, 64], false),
    Case(
        "256to256_k1_latent20x28x20",
        [256, 256],
        1,
        [20, 28, 20],
        false,
    ),
    Case("64to64_k3_stride2_64cube", [64, 64], 3, [64, 64, 64], true),
];

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("conv3d");
    group.sample_size(10);
    for Case(name, [ci, co], k, [d, h, w], down) in CASES {
        let x = Tensor::randn(0f32, 1.0, (1, *ci, *d, *h, *w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 0.05, (*co, *ci, *k, *k, *k), &dev).unwrap();
        let cfg = if *down {
            Conv3dConfig::pad_after_stride2()
        } else {
            Conv3dConfig::new(k / 2, 1)
        };
        let voxels = conv3d(&x, &wt, &cfg).unwrap().elem_count() / co;
        let flops = 2 * ci * co * k * k * k * voxels;
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(*name, |b| {
            b.iter(|| conv3d(&x, &wt, &cfg).unwrap());
        });
    }
    group.finish();
}

/// A benchmarked training convolution: name, (c_in, c_out), kernel, volume, configuration.
type BackwardCase = (&'static str, [usize; 2], usize, [usize; 3], Conv3dConfig);

/// The training steps' convolutions.
fn backward_cases() -> Vec<BackwardCase> {
    let same = Conv3dConfig::new(1, 1);
    // The autoencoder's downsampling and the patch discriminator's layers.
    let (down, patch) = (Conv3dConfig::pad_after_stride2(), Conv3dConfig::new(1, 2));
    vec![
        ("64to64_latent20x28x20", [64, 64], 3, [20, 28, 20], same),
        ("128to64_latent20x28x20", [128, 64], 3, [20, 28, 20], same),
        ("128to128_10x14x10", [128, 128], 3, [10, 14, 10], same),
        ("32to32_40x56x40", [32, 32], 3, [40, 56, 40], same),
        ("1to32_40x56x40", [1, 32], 3, [40, 56, 40], same),
        ("32to1_40x56x40", [32, 1], 3, [40, 56, 40], same),
        ("32to32_stride2_40x56x40", [32, 32], 3, [40, 56, 40], down),
        ("1to32_k4_stride2_40x56x40", [1, 32], 4, [40, 56, 40], patch),
        (
            "32to64_k4_stride2_20x28x20",
            [32, 64],
            4,
            [20, 28, 20],
            patch,
        ),
        (
            "64to128_k4_stride2_10x14x10",
            [64, 128],
            4,
            [10, 14, 10],
            patch,
        ),
    ]
}

fn bench_backward(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("conv3d_backward");
    group.sample_size(10);
    for (name, [ci, co], k, [d, h, w], cfg) in backward_cases() {
        let x = Var::randn(0f32, 1.0, (1, ci, d, h, w), &dev).unwrap();
        let wt = Var::randn(0f32, 0.05, (co, ci, k, k, k), &dev).unwrap();
        let voxels = conv3d(&x, &wt, &cfg).unwrap().elem_count() / co;
        group.throughput(Throughput::Elements(
            (3 * 2 * ci * co * k * k * k * voxels) as u64,
        ));
        group.bench_function(name, |b| {
            b.iter(|| conv3d(&x, &wt, &cfg).unwrap().backward().unwrap());
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_backward);
criterion_main!(benches);
