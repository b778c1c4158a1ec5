//! One forward pass of the public brain-LDM bundle's diffusion UNet (553 M parameters,
//! random weights as a `VarMap` initialises them) on x 1×7×20×28×20, one timestep,
//! context 1×1×4: the cost of one denoising step.
//!
//! Run: `cargo bench -p brain-ldm-unet --bench unet`. Results: docs/benchmarks.md.

use brain_ldm_unet::{DiffusionModelUNet, DiffusionModelUNetConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::HashMap;
use std::time::Duration;

/// The bundle's UNet with random weights, detached from autograd (inference).
fn bundle_unet(dev: &Device) -> DiffusionModelUNet {
    let cfg = DiffusionModelUNetConfig::brain_ldm();
    let vars = VarMap::new();
    DiffusionModelUNet::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, dev)).unwrap();
    let weights: HashMap<String, Tensor> = vars
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    DiffusionModelUNet::new(&cfg, VarBuilder::from_tensors(weights, DType::F32, dev)).unwrap()
}

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let unet = bundle_unet(&dev);
    let x = Tensor::randn(0f32, 1.0, (1, 7, 20, 28, 20), &dev).unwrap();
    let t = Tensor::new(&[500u32], &dev).unwrap();
    let context = Tensor::rand(0f32, 1.0, (1, 1, 4), &dev).unwrap();
    let mut group = c.benchmark_group("unet");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(60));
    group.bench_function("bundle_forward_1x7x20x28x20", |b| {
        b.iter(|| unet.forward(&x, &t, Some(&context), None).unwrap());
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
