//! Speed of the evaluation metrics on full-size brain volumes (160×224×160).
//!
//! `cargo bench -p brain-ldm-metrics --bench metrics`; results and the MONAI comparison
//! are in docs/benchmarks.md ("## Metrics").

use brain_ldm_metrics::{diversity, ms_ssim, ssim, DiversityConfig, MsSsimConfig, SsimConfig};
use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::Array3;

/// A deterministic smooth-plus-noise volume in [0, 1] (content does not change the cost).
fn volume(seed: u64) -> Array3<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Array3::from_shape_fn((160, 224, 160), |(i, j, _)| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let noise = (s >> 40) as f32 / (1u64 << 24) as f32;
        let smooth = ((i as f32 * 0.05).sin() * (j as f32 * 0.03).cos() + 1.0) * 0.4;
        (smooth + 0.2 * noise).clamp(0.0, 1.0)
    })
}

fn bench(c: &mut Criterion) {
    let (a, b) = (volume(1), volume(2));
    let mut g = c.benchmark_group("metrics");
    g.sample_size(10);
    let ms = MsSsimConfig::default().with_kernel_size(4);
    g.bench_function("ms_ssim_k4_160x224x160", |bch| {
        bch.iter(|| ms_ssim(&a, &b, &ms).expect("ms-ssim"))
    });
    let ss = SsimConfig::default();
    g.bench_function("ssim_gaussian11_160x224x160", |bch| {
        bch.iter(|| ssim(&a, &b, &ss).expect("ssim"))
    });
    let set: Vec<Array3<f32>> = (10..15).map(volume).collect();
    let cfg = DiversityConfig {
        pairs: 10,
        ..DiversityConfig::default()
    };
    g.bench_function("diversity_10_pairs_of_5_in_memory", |bch| {
        bch.iter(|| diversity(&set, &cfg, "bench", &|_| {}).expect("diversity"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
