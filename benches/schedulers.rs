//! Scheduler overhead per step on the brain-LDM latent (1, 3, 20, 28, 20), f32, CPU:
//! DDIM (the bundle's sampler), DPM-Solver++ 2M, and a training batch's `add_noise`.
//!
//! `cargo bench -p brain-ldm-schedulers --bench schedulers`

use brain_ldm_schedulers::{
    DDIMConfig, DDIMScheduler, DPMSolverConfig, DPMSolverMultistepScheduler, NoiseScheduleConfig,
    Scheduler,
};
use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let shape = (1, 3, 20, 28, 20);
    let x = Tensor::randn(0f32, 1.0, shape, &dev).expect("randn");
    let eps = Tensor::randn(0f32, 1.0, shape, &dev).expect("randn");

    let mut ddim = DDIMScheduler::new(DDIMConfig::brain_ldm()).expect("ddim");
    ddim.set_timesteps(50).expect("set_timesteps");
    c.bench_function("ddim_step_latent", |b| {
        b.iter(|| ddim.step(&eps, 500, &x, None).expect("step"))
    });

    let mut dpm = DPMSolverMultistepScheduler::new(DPMSolverConfig {
        noise_schedule: NoiseScheduleConfig::brain_ldm(),
        ..Default::default()
    })
    .expect("dpm");
    c.bench_function("dpm_solver_2m_full_loop_25_steps", |b| {
        b.iter(|| {
            dpm.set_timesteps(25).expect("set_timesteps");
            let mut s = x.clone();
            for t in dpm.timesteps().to_vec() {
                s = dpm.step(&eps, t, &s, None).expect("step").prev_sample;
            }
            s
        })
    });

    let batch = Tensor::randn(0f32, 1.0, (4, 3, 20, 28, 20), &dev).expect("randn");
    let noise = batch.randn_like(0.0, 1.0).expect("randn");
    let t = Tensor::new(&[3u32, 250, 600, 999], &dev).expect("timesteps");
    c.bench_function("add_noise_batch4", |b| {
        b.iter(|| ddim.add_noise(&batch, &noise, &t).expect("add_noise"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
