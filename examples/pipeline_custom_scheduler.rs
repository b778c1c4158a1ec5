//! A scheduler written outside the workspace's crates, plugged into the sampling pipeline:
//! deterministic DDIM on the quadratic timestep grid of Song et al. 2021 (DDIM, §D.2:
//! `t_i ∝ i²`, denser near t = 0), which none of the built-in spacings gives. It uses only
//! the public `Scheduler` trait and the noise schedule the model was trained with.
//!
//! Run: `cargo run --release -p brain-ldm --example pipeline_custom_scheduler -- [MODEL_DIR]`
//! (default: the shrunk bundle in tests/fixtures/bundle-small).

use brain_ldm::schedulers::{
    NoiseSchedule, NoiseScheduleConfig, PredictionType, Result, StepOutput,
};
use brain_ldm::{Conditioning, LatentDiffusionPipeline, Scheduler};
use candle_core::{Device, Tensor};
use std::path::PathBuf;

/// Deterministic DDIM (eta 0) for an epsilon-predicting model on a quadratic grid.
struct QuadraticDdim {
    schedule: NoiseSchedule,
    timesteps: Vec<usize>,
}

impl QuadraticDdim {
    fn new(config: NoiseScheduleConfig) -> Result<Self> {
        Ok(Self {
            schedule: config.build()?,
            timesteps: Vec::new(),
        })
    }

    /// ᾱ at `t`, 1 before the first training step.
    fn alpha_bar(&self, t: Option<usize>) -> f64 {
        t.map_or(1.0, |t| self.schedule.alphas_cumprod()[t])
    }
}

impl Scheduler for QuadraticDdim {
    fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        PredictionType::Epsilon
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let last = (self.schedule.num_train_timesteps() - 1) as f64;
        let mut grid: Vec<usize> = (0..n)
            .map(|i| (last * (i as f64 / (n - 1).max(1) as f64).powi(2)).round() as usize)
            .collect();
        grid.dedup();
        grid.reverse();
        self.timesteps = grid;
        Ok(())
    }

    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn step(
        &mut self,
        eps: &Tensor,
        t: usize,
        x_t: &Tensor,
        _noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let position = self.timesteps.iter().position(|&s| s == t);
        let prev = position.and_then(|i| self.timesteps.get(i + 1).copied());
        let (a_t, a_prev) = (self.alpha_bar(Some(t)), self.alpha_bar(prev));
        // x0 = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t;  x_prev = √ᾱ_prev·x0 + √(1−ᾱ_prev)·ε.
        let x0 = ((x_t - (eps * (1.0 - a_t).sqrt())?)? / a_t.sqrt())?;
        let prev_sample = ((&x0 * a_prev.sqrt())? + (eps * (1.0 - a_prev).sqrt())?)?;
        Ok(StepOutput {
            prev_sample,
            pred_original_sample: x0,
        })
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let model = std::env::args().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bundle-small"),
        PathBuf::from,
    );
    let device = Device::Cpu;
    let pipeline = LatentDiffusionPipeline::open(&model, &device)?;
    let trained: brain_ldm::schedulers::DDIMConfig =
        serde_json::from_value(pipeline.scheduler_config.clone())?;
    let mut scheduler = QuadraticDdim::new(trained.noise_schedule)?;
    scheduler.set_timesteps(20)?;
    println!("timesteps: {:?}", scheduler.timesteps());
    let conditioning = Conditioning([1.0, 0.7, 0.7, 0.5]);
    let image = pipeline.sample(&mut scheduler, &conditioning, 0, 0, &device, &mut |_, _| {})?;
    let values = image.flatten_all()?.to_vec1::<f32>()?;
    let mean = values.iter().sum::<f32>() / values.len() as f32;
    println!("decoded {:?}, mean intensity {mean:.4}", image.dims());
    Ok(())
}
