//! Parity with MONAI 1.6.1 beyond the shared fixture: sigmoid_beta and the default schedule,
//! DDPM's other variance types, DDIM's other options, and PNDM loops.
//!
//! Fixture: `tests/fixtures/monai/schedulers_extra.safetensors`, written by
//! `scripts/make_scheduler_fixtures.py` (its docstring says what each key holds); every
//! setting is read from the fixture's `config` metadata. Tolerance as in `monai_parity.rs`:
//! 1e-5, absolute for reference values up to 1 in magnitude, relative above.

mod common;

use brain_ldm_schedulers::{
    BetaSchedule, ClipSample, DDIMConfig, DDIMScheduler, DDPMConfig, DDPMScheduler,
    NoiseScheduleConfig, PNDMConfig, PNDMScheduler, PredictionType, Scheduler, VarianceType,
};
use candle_core::Tensor;
use common::{assert_close, device, load_fixture, max2};
use serde_json::Value;

const TOL: f64 = 1e-5;
const FIXTURE: &str = "monai/schedulers_extra.safetensors";

fn fixture() -> (std::collections::HashMap<String, Tensor>, Value) {
    let (t, config) = load_fixture(FIXTURE, &device());
    let config = serde_json::from_str(&config.expect("config metadata")).expect("config JSON");
    (t, config)
}

/// The shared schedule of the fixture's config.
fn noise_schedule(c: &Value) -> NoiseScheduleConfig {
    let json = serde_json::json!({
        "num_train_timesteps": c["num_train_timesteps"],
        "schedule": c["schedule"],
        "beta_start": c["beta_start"],
        "beta_end": c["beta_end"],
    });
    let ddim: DDIMConfig = serde_json::from_value(json).unwrap();
    ddim.noise_schedule
}

fn timesteps_of(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn sigmoid_and_default_schedules() {
    let (t, c) = fixture();
    let s = &c["sigmoid_beta"];
    let sigmoid = NoiseScheduleConfig {
        num_train_timesteps: 1000,
        schedule: BetaSchedule::SigmoidBeta {
            beta_start: s["beta_start"].as_f64().unwrap(),
            beta_end: s["beta_end"].as_f64().unwrap(),
            sig_range: s["sig_range"].as_f64().unwrap(),
        },
    };
    for (name, cfg) in [
        ("sigmoid_beta", sigmoid),
        ("default", NoiseScheduleConfig::default()),
    ] {
        let sched = cfg.build().unwrap();
        let got = Tensor::new(sched.alphas_cumprod(), &device()).unwrap();
        let e = assert_close(name, &got, &t[&format!("out.{name}.alphas_cumprod")], TOL);
        println!("{name} alphas_cumprod: max abs err {:.2e}", e.0);
    }
}

#[test]
fn ddpm_variance_types() {
    let (t, c) = fixture();
    let d = &c["ddpm"];
    assert_eq!(d["clip_sample"], Value::Bool(false));
    let mut worst = (0.0, 0.0);
    let mut n = 0;
    for vt in d["variance_types"].as_array().unwrap() {
        let vt = vt.as_str().unwrap();
        let mut ddpm = DDPMScheduler::new(DDPMConfig {
            noise_schedule: noise_schedule(&c),
            variance_type: vt.parse::<VarianceType>().unwrap(),
            clip_sample: ClipSample::None,
            ..Default::default()
        })
        .unwrap();
        let out = &t[&format!("in.ddpm.{vt}.model_output")];
        for ts in timesteps_of(&d["timesteps"]) {
            let noise = &t[&format!("in.ddpm.{vt}.t{ts}.variance_noise")];
            let step = ddpm.step(out, ts, &t["in.xt"], Some(noise)).unwrap();
            let key = format!("out.ddpm.{vt}.t{ts}");
            worst = max2(
                worst,
                assert_close(&key, &step.prev_sample, &t[&format!("{key}.prev")], TOL),
            );
            let po = &t[&format!("{key}.pred_original")];
            worst = max2(
                worst,
                assert_close(&key, &step.pred_original_sample, po, TOL),
            );
            n += 1;
        }
    }
    assert_eq!(n, 9);
    println!(
        "DDPM variance types: {n} steps, max abs err {:.2e}, scaled {:.2e}",
        worst.0, worst.1
    );
}

#[test]
fn ddim_clip_offset_final_alpha_eta_half() {
    let (t, c) = fixture();
    let o = &c["ddim_opts"];
    let mut worst = (0.0, 0.0);
    for pred in ["epsilon", "sample", "v_prediction"] {
        let json = serde_json::json!({
            "num_train_timesteps": c["num_train_timesteps"],
            "schedule": c["schedule"],
            "beta_start": c["beta_start"],
            "beta_end": c["beta_end"],
            "clip_sample": o["clip_sample"],
            "set_alpha_to_one": o["set_alpha_to_one"],
            "steps_offset": o["steps_offset"],
            "eta": o["eta"],
            "prediction_type": pred,
        });
        let config: DDIMConfig = serde_json::from_value(json).unwrap();
        assert_eq!(config.clip_sample, ClipSample::MONAI_DEFAULT);
        let mut ddim = DDIMScheduler::new(config).unwrap();
        ddim.set_timesteps(o["num_inference_steps"].as_u64().unwrap() as usize)
            .unwrap();
        for ts in timesteps_of(&o["timesteps"]) {
            let key = format!("ddim_opts.{pred}.t{ts}");
            let noise = &t[&format!("in.{key}.variance_noise")];
            let step = ddim
                .step(&t["in.model_output"], ts, &t["in.xt"], Some(noise))
                .unwrap();
            worst = max2(
                worst,
                assert_close(&key, &step.prev_sample, &t[&format!("out.{key}.prev")], TOL),
            );
            let po = &t[&format!("out.{key}.pred_original")];
            worst = max2(
                worst,
                assert_close(&key, &step.pred_original_sample, po, TOL),
            );
        }
    }
    println!(
        "DDIM options: max abs err {:.2e}, scaled {:.2e}",
        worst.0, worst.1
    );
}

/// Full PNDM loops, each step fed MONAI's model output for that evaluation and compared with
/// MONAI's sample after it (our own trajectory is carried on, so errors would accumulate).
#[test]
fn pndm_loops() {
    let (t, c) = fixture();
    let p = &c["pndm"];
    assert_eq!(p["num_inference_steps_overwrite_undone"], Value::Bool(true));
    let n = p["num_inference_steps"].as_u64().unwrap() as usize;
    for skip in [0, 1] {
        for pred in [PredictionType::Epsilon, PredictionType::VPrediction] {
            let mut pndm = PNDMScheduler::new(PNDMConfig {
                noise_schedule: noise_schedule(&c),
                skip_prk_steps: skip == 1,
                set_alpha_to_one: p["set_alpha_to_one"].as_bool().unwrap(),
                prediction_type: pred,
                steps_offset: 0,
            })
            .unwrap();
            pndm.set_timesteps(n).unwrap();
            let want: Vec<i64> = t[&format!("out.pndm.skip{skip}.timesteps")]
                .to_vec1()
                .unwrap();
            let got: Vec<i64> = pndm.timesteps().iter().map(|&v| v as i64).collect();
            assert_eq!(got, want, "skip_prk_steps={skip} timesteps");
            let mut x = t["in.pndm.x_T"].clone();
            let mut worst = (0.0, 0.0);
            for (k, ts) in pndm.timesteps().to_vec().into_iter().enumerate() {
                let out = &t[&format!("in.pndm.skip{skip}.{pred}.model_output.{k}")];
                x = pndm.step(out, ts, &x, None).unwrap().prev_sample;
                let key = format!("out.pndm.skip{skip}.{pred}.sample.{k}");
                worst = max2(worst, assert_close(&key, &x, &t[&key], TOL));
            }
            println!(
                "PNDM skip_prk_steps={skip} {pred}: {} evaluations, max abs err {:.2e}, scaled {:.2e}",
                want.len(),
                worst.0,
                worst.1
            );
        }
    }
}
