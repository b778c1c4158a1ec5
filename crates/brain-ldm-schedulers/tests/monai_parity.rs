//! Parity with MONAI 1.6.1 (PyTorch, CPU, f32): `tests/fixtures/monai/schedulers.safetensors`
//! (copied from the project's reference fixtures; see their README) and the GenerativeModels
//! 0.2 spacing of `tests/fixtures/bundle-small/reference.safetensors`.
//!
//! What the fixture's keys mean (its `config.notes` gives the shared settings: T = 1000,
//! betas 0.0015..0.0205 unless cosine, DDIM `set_timesteps(50)`; the remaining settings were
//! established by re-running MONAI 1.6.1 on the stored inputs, which reproduces every output
//! bit for bit):
//! - `out.<schedule>.alphas_cumprod`: `linear_beta`, `scaled_linear_beta` (0.0015..0.0205),
//!   `cosine` (default `s`);
//! - `out.<schedule>.add_noise_t0_t999` / `velocity_t0_t999`: `add_noise(in.x0, in.noise, t)`
//!   and `get_velocity(in.x0, in.noise, t)` with per-sample `t = [0, 999]`;
//! - `out.ddpm.<pred>.clip<c>.t<t>.{prev,pred_original}`: `DDPMScheduler(1000,
//!   "scaled_linear_beta", 0.0015, 0.0205, clip_sample=c, prediction_type=pred)` (fixed_small,
//!   no `set_timesteps`) `.step(in.model_output, t, in.xt)` with the noise
//!   `in.<key>.variance_noise`;
//! - `out.ddim.timesteps.n<n>.offset<o>`: `DDIMScheduler(steps_offset=o).set_timesteps(n)`;
//! - `out.ddim.<pred>.eta<e>.t<t>.{prev,pred_original}`: `DDIMScheduler(scaled_linear
//!   0.0015..0.0205, clip_sample=False, prediction_type=pred)`, `set_timesteps(50)`,
//!   `.step(in.model_output, t, in.xt, eta=e)` with noise `in.<key>.variance_noise`;
//! - `out.ddim_reversed.<pred>.t795.next`: the same scheduler's `reversed_step(in.model_output,
//!   795, in.xt)`.
//!
//! Tolerance: 1e-5, absolute where the reference is at most 1 in magnitude and relative above
//! (some `pred_original` values reach ~670, where one f32 ulp is 6e-5). Our host maths is
//! f64, MONAI's f32; the worst errors are printed (`cargo test -- --nocapture`). The largest
//! absolute error on O(1) values, 9e-6 in cosine `add_noise`, is MONAI's: its f32
//! `sqrt(1 − ᾱ_0)` of the cosine schedule is 4.6e-4 (relative) below the f64 value
//! (0.0064223 vs 0.0064253), times noise values near 2. Likewise the DDPM steps at t = 0, 1
//! (7e-6 to 8e-6 relative): MONAI's f32 `1 − ᾱ_0` is 0.00150001 where β_0 is 0.0015, so its
//! x̂_0 coefficient at t = 0 is 1 − 7e-6 instead of exactly 1.

mod common;

use brain_ldm_schedulers::{
    BetaSchedule, ClipSample, DDIMConfig, DDIMScheduler, DDPMConfig, DDPMScheduler,
    NoiseScheduleConfig, PredictionType, Scheduler, TimestepSpacing,
};
use candle_core::{DType, Tensor};
use common::{assert_close, device, load_fixture, max2};

const TOL: f64 = 1e-5;
const FIXTURE: &str = "monai/schedulers.safetensors";

/// The settings the fixture's `config.notes` states, checked so a regenerated fixture with
/// other settings fails here rather than in a comparison.
fn check_notes(config: &Option<String>) {
    let config = config.as_deref().expect("config metadata");
    let v: serde_json::Value = serde_json::from_str(config).expect("config JSON");
    let notes = v["notes"].as_str().expect("config.notes");
    for fact in [
        "num_train_timesteps=1000",
        "0.0015..0.0205",
        "set_timesteps(50)",
    ] {
        assert!(
            notes.contains(fact),
            "fixture notes no longer say {fact:?}: {notes}"
        );
    }
}

/// The schedule of the DDPM/DDIM parts (bundle betas, scaled linear).
fn fixture_schedule() -> NoiseScheduleConfig {
    NoiseScheduleConfig {
        num_train_timesteps: 1000,
        schedule: BetaSchedule::ScaledLinearBeta {
            beta_start: 0.0015,
            beta_end: 0.0205,
        },
    }
}

#[test]
fn schedules_add_noise_velocity() {
    let dev = device();
    let (t, config) = load_fixture(FIXTURE, &dev);
    check_notes(&config);
    let schedules = [
        BetaSchedule::LinearBeta {
            beta_start: 0.0015,
            beta_end: 0.0205,
        },
        BetaSchedule::ScaledLinearBeta {
            beta_start: 0.0015,
            beta_end: 0.0205,
        },
        "cosine".parse().unwrap(),
    ];
    let ts = Tensor::new(&[0i64, 999], &dev).unwrap();
    for schedule in schedules {
        let name = schedule.name();
        let sched = NoiseScheduleConfig {
            num_train_timesteps: 1000,
            schedule,
        }
        .build()
        .unwrap();
        let ac = Tensor::new(sched.alphas_cumprod(), &dev).unwrap();
        let e = assert_close(name, &ac, &t[&format!("out.{name}.alphas_cumprod")], TOL);
        println!(
            "{name} alphas_cumprod: max abs err {:.2e}, scaled {:.2e}",
            e.0, e.1
        );
        let noisy = sched.add_noise(&t["in.x0"], &t["in.noise"], &ts).unwrap();
        let e = assert_close(
            name,
            &noisy,
            &t[&format!("out.{name}.add_noise_t0_t999")],
            TOL,
        );
        println!(
            "{name} add_noise: max abs err {:.2e}, scaled {:.2e}",
            e.0, e.1
        );
        let v = sched
            .get_velocity(&t["in.x0"], &t["in.noise"], &ts)
            .unwrap();
        let e = assert_close(name, &v, &t[&format!("out.{name}.velocity_t0_t999")], TOL);
        println!(
            "{name} velocity: max abs err {:.2e}, scaled {:.2e}",
            e.0, e.1
        );
    }
}

/// Splits `out.<sched>.<pred>.<flag>.t<t>.<what>` into its parts.
fn parse_step_key(key: &str, sched: &str) -> Option<(PredictionType, String, usize)> {
    let rest = key
        .strip_prefix(&format!("out.{sched}."))?
        .strip_suffix(".prev")?;
    let mut parts = rest.split('.');
    let pred = parts.next()?.parse().ok()?;
    let flag = parts.next()?.to_string();
    let t = parts.next()?.strip_prefix('t')?.parse().ok()?;
    Some((pred, flag, t))
}

#[test]
fn ddpm_steps() {
    let dev = device();
    let (t, _) = load_fixture(FIXTURE, &dev);
    let mut keys: Vec<&String> = t
        .keys()
        .filter(|k| parse_step_key(k, "ddpm").is_some())
        .collect();
    keys.sort();
    let mut worst = (0f64, 0f64);
    for key in &keys {
        let (pred, flag, ts) = parse_step_key(key, "ddpm").unwrap();
        let clip = match flag.as_str() {
            "clip0" => ClipSample::None,
            "clip1" => ClipSample::MONAI_DEFAULT,
            other => panic!("unexpected flag {other}"),
        };
        let mut ddpm = DDPMScheduler::new(DDPMConfig {
            noise_schedule: fixture_schedule(),
            clip_sample: clip,
            prediction_type: pred,
            ..Default::default()
        })
        .unwrap();
        let base = key.trim_start_matches("out.").trim_end_matches(".prev");
        let noise = &t[&format!("in.{base}.variance_noise")];
        let out = ddpm
            .step(&t["in.model_output"], ts, &t["in.xt"], Some(noise))
            .unwrap();
        worst = max2(worst, assert_close(key, &out.prev_sample, &t[*key], TOL));
        let po = &t[&format!("out.{base}.pred_original")];
        worst = max2(
            worst,
            assert_close(base, &out.pred_original_sample, po, TOL),
        );
    }
    // 3 prediction types × 2 clip settings × 4 timesteps.
    assert_eq!(keys.len(), 24);
    println!(
        "DDPM: {} steps, max abs err {:.2e}, scaled {:.2e}",
        keys.len(),
        worst.0,
        worst.1
    );
}

#[test]
fn ddim_timesteps_monai_spacing() {
    let dev = device();
    let (t, _) = load_fixture(FIXTURE, &dev);
    let mut n_checked = 0;
    for (key, want) in &t {
        let Some(rest) = key.strip_prefix("out.ddim.timesteps.n") else {
            continue;
        };
        let (n, offset) = rest.split_once(".offset").unwrap();
        let (n, offset): (usize, usize) = (n.parse().unwrap(), offset.parse().unwrap());
        let mut ddim = DDIMScheduler::new(DDIMConfig {
            steps_offset: offset,
            ..Default::default()
        })
        .unwrap();
        ddim.set_timesteps(n).unwrap();
        let want: Vec<i64> = want.to_vec1().unwrap();
        let got: Vec<i64> = ddim.timesteps().iter().map(|&v| v as i64).collect();
        assert_eq!(got, want, "{key}");
        n_checked += 1;
    }
    assert_eq!(n_checked, 5);
}

fn fixture_ddim(pred: PredictionType, eta: f64) -> DDIMScheduler {
    let mut ddim = DDIMScheduler::new(DDIMConfig {
        noise_schedule: fixture_schedule(),
        clip_sample: ClipSample::None,
        prediction_type: pred,
        eta,
        ..Default::default()
    })
    .unwrap();
    ddim.set_timesteps(50).unwrap();
    ddim
}

#[test]
fn ddim_steps_eta0_eta1() {
    let dev = device();
    let (t, _) = load_fixture(FIXTURE, &dev);
    let mut keys: Vec<&String> = t
        .keys()
        .filter(|k| parse_step_key(k, "ddim").is_some())
        .collect();
    keys.sort();
    let mut worst = (0f64, 0f64);
    for key in &keys {
        let (pred, flag, ts) = parse_step_key(key, "ddim").unwrap();
        let eta: f64 = flag.strip_prefix("eta").unwrap().parse().unwrap();
        let mut ddim = fixture_ddim(pred, eta);
        assert_eq!(ddim.is_stochastic(), eta > 0.0);
        let base = key.trim_start_matches("out.").trim_end_matches(".prev");
        let noise = &t[&format!("in.{base}.variance_noise")];
        let out = ddim
            .step(&t["in.model_output"], ts, &t["in.xt"], Some(noise))
            .unwrap();
        worst = max2(worst, assert_close(key, &out.prev_sample, &t[*key], TOL));
        let po = &t[&format!("out.{base}.pred_original")];
        worst = max2(
            worst,
            assert_close(base, &out.pred_original_sample, po, TOL),
        );
    }
    // 3 prediction types × eta {0, 1} × 3 timesteps.
    assert_eq!(keys.len(), 18);
    println!(
        "DDIM: {} steps, max abs err {:.2e}, scaled {:.2e}",
        keys.len(),
        worst.0,
        worst.1
    );
}

#[test]
fn ddim_reversed_steps() {
    let dev = device();
    let (t, _) = load_fixture(FIXTURE, &dev);
    let mut n = 0;
    for pred in [
        PredictionType::Epsilon,
        PredictionType::Sample,
        PredictionType::VPrediction,
    ] {
        let ddim = fixture_ddim(pred, 0.0);
        let out = ddim
            .reversed_step(&t["in.model_output"], 795, &t["in.xt"])
            .unwrap();
        let key = format!("out.ddim_reversed.{pred}.t795.next");
        let e = assert_close(&key, &out.prev_sample, &t[&key], TOL);
        println!("{key}: max abs err {:.2e}, scaled {:.2e}", e.0, e.1);
        n += 1;
    }
    assert_eq!(
        n,
        t.keys()
            .filter(|k| k.starts_with("out.ddim_reversed."))
            .count()
    );
}

/// `out.timesteps` of the bundle's own sampling loop (scripts/sampler.py on the shrunk bundle,
/// DDIM with 10 steps; the fixture README gives the settings): GenerativeModels 0.2 spacing,
/// 900, 800, …, 0, which `DDIMConfig::brain_ldm()` reproduces.
#[test]
fn generative_0_2_spacing_matches_bundle_reference() {
    let dev = device();
    let (t, _) = load_fixture("bundle-small/reference.safetensors", &dev);
    let want: Vec<i64> = t["out.timesteps"].to_vec1().unwrap();
    let mut ddim = DDIMScheduler::new(DDIMConfig::brain_ldm()).unwrap();
    ddim.set_timesteps(want.len()).unwrap();
    let got: Vec<i64> = ddim.timesteps().iter().map(|&v| v as i64).collect();
    assert_eq!(got, want);
    // MONAI 1.6's spacing differs (999, 888, …), as the fixture README warns.
    let monai = TimestepSpacing::Linspace
        .timesteps(1000, want.len(), 0)
        .unwrap();
    assert_eq!(monai[..2], [999, 888]);
}

/// f16/bf16 inputs are computed in f32 and returned in their dtype: the result equals the f32
/// step on the same (rounded) inputs, rounded once.
#[test]
fn half_precision_inputs_compute_in_f32() {
    let dev = device();
    let (t, _) = load_fixture(FIXTURE, &dev);
    for dtype in [DType::F16, DType::BF16] {
        let mo = t["in.model_output"].to_dtype(dtype).unwrap();
        let xt = t["in.xt"].to_dtype(dtype).unwrap();
        let mut ddim = fixture_ddim(PredictionType::Epsilon, 0.0);
        let half = ddim.step(&mo, 489, &xt, None).unwrap().prev_sample;
        assert_eq!(half.dtype(), dtype);
        let full = ddim
            .step(
                &mo.to_dtype(DType::F32).unwrap(),
                489,
                &xt.to_dtype(DType::F32).unwrap(),
                None,
            )
            .unwrap()
            .prev_sample;
        let rounded = full.to_dtype(dtype).unwrap();
        let (abs, _) = common::errors(&half, &rounded);
        assert_eq!(
            abs, 0.0,
            "{dtype:?}: not a single rounding of the f32 result"
        );
    }
}
