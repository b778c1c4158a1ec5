//! Parity of DPM-Solver++ (1 and 2M) with diffusers' `DPMSolverMultistepScheduler`
//! (`algorithm_type="dpmsolver++"`, trailing spacing): full sampling loops.
//!
//! Fixture: `tests/fixtures/diffusers/dpm_solver.safetensors`, written by
//! `scripts/make_dpm_solver_fixtures.py` (diffusers 0.42.1, torch 2.15.0, CPU, f32; its
//! docstring says how it was run and what each key holds). Each case's settings are read from
//! the fixture's `config` metadata (diffusers' argument names) and deserialised into
//! [`DPMSolverConfig`]. Every step is fed diffusers' model output for that step; our own
//! trajectory is carried on, so errors would accumulate. Tolerance 1e-5 as in
//! `monai_parity.rs` (absolute up to magnitude 1, relative above); diffusers computes the
//! step coefficients in f32 (its sigmas are stored as f32), we in f64.

mod common;

use brain_ldm_schedulers::{DPMSolverConfig, DPMSolverMultistepScheduler, Scheduler};
use common::{assert_close, device, load_fixture, max2};
use serde_json::Value;

const TOL: f64 = 1e-5;

#[test]
fn dpm_solver_loops_match_diffusers() {
    let dev = device();
    let (t, config) = load_fixture("diffusers/dpm_solver.safetensors", &dev);
    let c: Value = serde_json::from_str(&config.expect("config metadata")).expect("config JSON");
    let cases = c["cases"].as_object().expect("config.cases");
    assert_eq!(cases.len(), 5);
    for (name, case) in cases {
        let mut json = c["schedule"].clone();
        let obj = json.as_object_mut().unwrap();
        for key in ["timestep_spacing", "lower_order_final"] {
            obj.insert(key.into(), c[key].clone());
        }
        for (k, v) in case.as_object().unwrap() {
            obj.insert(k.clone(), v.clone());
        }
        let config: DPMSolverConfig = serde_json::from_value(json).unwrap();
        let mut dpm = DPMSolverMultistepScheduler::new(config).unwrap();
        dpm.set_timesteps(case["num_inference_steps"].as_u64().unwrap() as usize)
            .unwrap();

        let want: Vec<i64> = t[&format!("out.{name}.timesteps")].to_vec1().unwrap();
        let got: Vec<i64> = dpm.timesteps().iter().map(|&v| v as i64).collect();
        assert_eq!(got, want, "{name}: timesteps");
        let sigmas = candle_core::Tensor::new(dpm.sigmas(), &dev).unwrap();
        assert_close(name, &sigmas, &t[&format!("out.{name}.sigmas")], 1e-6);

        let mut x = t["in.x_T"].clone();
        let mut worst = (0.0, 0.0);
        for (k, ts) in dpm.timesteps().to_vec().into_iter().enumerate() {
            let out = &t[&format!("in.{name}.model_output.{k}")];
            x = dpm.step(out, ts, &x, None).unwrap().prev_sample;
            let key = format!("out.{name}.sample.{k}");
            worst = max2(worst, assert_close(&key, &x, &t[&key], TOL));
        }
        println!(
            "DPM-Solver++ {name}: {} steps, max abs err {:.2e}, scaled {:.2e}",
            want.len(),
            worst.0,
            worst.1
        );
    }
}
