//! Runs `examples/custom_scheduler.rs` (Heun's method, a scheduler implemented outside this
//! crate through the public trait) and checks it and DDIM on the closed-form Gaussian toy
//! problem: data `x_0 ~ N(μ, s²)` with its exact noise predictor, so a correct sampler returns
//! samples with mean `μ` and variance `s²`. The thresholds allow the sampling error (20,000
//! samples: standard error 0.0035 on the mean, 0.0025 on the variance 0.25) and a small
//! discretisation error.

#[path = "../../../examples/custom_scheduler.rs"]
mod custom_scheduler;

use brain_ldm_schedulers::{
    DDIMConfig, DDIMScheduler, Error, NoiseScheduleConfig, PredictionType, Scheduler,
};
use candle_core::{DType, Device, Tensor};
use custom_scheduler::{sample_moments, GaussianToy, Heun};

const TOY: GaussianToy = GaussianToy {
    mean: -0.3,
    std: 0.5,
};

fn check(name: &str, (mean, var): (f64, f64)) {
    let want_var = TOY.std * TOY.std;
    println!(
        "{name}: mean {mean:.4} (want {}), variance {var:.4} (want {want_var})",
        TOY.mean
    );
    assert!((mean - TOY.mean).abs() < 0.015, "{name}: mean {mean}");
    assert!(
        (var - want_var).abs() < 0.05 * want_var,
        "{name}: variance {var}"
    );
}

#[test]
fn example_main_runs() {
    custom_scheduler::main().unwrap();
}

#[test]
fn heun_and_ddim_reach_the_gaussian() {
    let schedule = NoiseScheduleConfig::brain_ldm();
    let mut heun = Heun::new(schedule, PredictionType::Epsilon).unwrap();
    check(
        "Heun, 50 steps",
        sample_moments(&mut heun, TOY, 50, 20_000, 7).unwrap(),
    );
    let mut ddim = DDIMScheduler::new(DDIMConfig::brain_ldm()).unwrap();
    check(
        "DDIM, 1000 steps",
        sample_moments(&mut ddim, TOY, 1000, 20_000, 7).unwrap(),
    );
    let mut ddim = DDIMScheduler::new(DDIMConfig {
        eta: 1.0,
        ..DDIMConfig::brain_ldm()
    })
    .unwrap();
    check(
        "DDIM eta 1 (DDPM-like), 1000 steps",
        sample_moments(&mut ddim, TOY, 1000, 20_000, 7).unwrap(),
    );
}

/// DDIM with 50 steps is first order and under-dispersed on this problem; on a Gaussian
/// every quantity of its deterministic chain is an affine function of the initial noise, so
/// the chain's exact output moments follow in closed form (host f64, below). The sampled
/// moments must match them within 4 standard errors.
#[test]
fn ddim_50_steps_matches_its_closed_form_chain() {
    let ddim_cfg = DDIMConfig::brain_ldm();
    let schedule = ddim_cfg.noise_schedule.build().unwrap();
    let mut ddim = DDIMScheduler::new(ddim_cfg).unwrap();
    ddim.set_timesteps(50).unwrap();
    let (a, s2, mu) = (schedule.alphas_cumprod(), TOY.std * TOY.std, TOY.mean);
    // x = m + c·z
    let (mut m, mut c) = (0.0f64, 1.0f64);
    for &t in ddim.timesteps() {
        let at = a[t];
        let ap = if t >= 20 { a[t - 20] } else { 1.0 };
        let var = at * s2 + 1.0 - at;
        let (em, ec) = (
            (1.0 - at).sqrt() * (m - at.sqrt() * mu) / var,
            (1.0 - at).sqrt() * c / var,
        );
        let (x0m, x0c) = (
            (m - (1.0 - at).sqrt() * em) / at.sqrt(),
            (c - (1.0 - at).sqrt() * ec) / at.sqrt(),
        );
        m = ap.sqrt() * x0m + (1.0 - ap).sqrt() * em;
        c = ap.sqrt() * x0c + (1.0 - ap).sqrt() * ec;
    }
    let n = 20_000;
    let (mean, var) = sample_moments(&mut ddim, TOY, 50, n, 7).unwrap();
    println!(
        "DDIM 50 steps: mean {mean:.4} (chain {m:.4}), variance {var:.4} (chain {:.4})",
        c * c
    );
    assert!(
        (mean - m).abs() < 4.0 * c / (n as f64).sqrt(),
        "mean {mean} vs {m}"
    );
    assert!(
        (var - c * c).abs() < 4.0 * c * c * (2.0 / n as f64).sqrt(),
        "variance {var} vs {}",
        c * c
    );
    assert!(
        c * c < 0.9 * s2,
        "the 50-step chain should be under-dispersed"
    );
}

#[test]
fn heun_lists_each_evaluation_and_checks_its_inputs() {
    let schedule = NoiseScheduleConfig::brain_ldm();
    let mut heun = Heun::new(schedule, PredictionType::Epsilon).unwrap();
    let mut again = heun.clone();
    assert_eq!(
        sample_moments(&mut heun, TOY, 10, 100, 3).unwrap(),
        sample_moments(&mut again, TOY, 10, 100, 3).unwrap()
    );
    heun.set_timesteps(10).unwrap();
    assert_eq!(heun.timesteps().len(), 19);
    assert_eq!(&heun.timesteps()[..3], &[999, 888, 888]);
    let x = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        heun.step(&x, 998, &x, None),
        Err(Error::UnexpectedTimestep { .. })
    ));
    let short = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        heun.step(&short, 999, &x, None),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        heun.set_timesteps(1001),
        Err(Error::InvalidInferenceSteps { .. })
    ));
}
