//! Properties derived in closed form (no reference implementation needed): DPM-Solver++'s
//! exactness and convergence order, DDIM inversion, and typed errors for bad arguments.
//!
//! Closed forms used (σ_t = sqrt((1 − ᾱ_t)/ᾱ_t), α_t = sqrt(ᾱ_t), s_t = sqrt(1 − ᾱ_t)):
//! - Data concentrated at a point `c`: the exact x̂_0 predictor is `c` everywhere, and the
//!   probability-flow ODE trajectory through `x_T = α_T·c + s_T·z` is `α_t·c + s_t·z`.
//!   DPM-Solver++ integrates the linear part exactly, so with this predictor every step lands
//!   on the trajectory (to rounding) and the last returns `c`.
//! - Data `N(μ, s²)` per element: the trajectory through `x_T` is
//!   `α_t·μ + sqrt(α_t²·s² + s_t²)·(x_T − α_T·μ)/sqrt(α_T²·s² + s_T²)`; a solver of order p
//!   has global error O(h^p), so doubling the steps divides it by about 2^p.

use brain_ldm_schedulers::{
    DDIMConfig, DDIMScheduler, DPMSolverConfig, DPMSolverMultistepScheduler, Error, FinalSigma,
    NoiseScheduleConfig, PredictionType, Scheduler, SchedulerKind, SolverType, TimestepSpacing,
};
use candle_core::{DType, Device, Tensor};

fn dpm(
    order: usize,
    solver_type: SolverType,
    final_sigma: FinalSigma,
) -> DPMSolverMultistepScheduler {
    DPMSolverMultistepScheduler::new(DPMSolverConfig {
        noise_schedule: NoiseScheduleConfig::brain_ldm(),
        solver_order: order,
        solver_type,
        final_sigma,
        ..Default::default()
    })
    .unwrap()
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn dpm_solver_is_exact_for_a_point_mass() {
    let dev = Device::Cpu;
    let c = Tensor::new(&[-1.5f64, 0.0, 0.3, 2.0], &dev).unwrap();
    let z = Tensor::new(&[0.7f64, -1.2, 0.1, 0.4], &dev).unwrap();
    for (order, st) in [
        (1, SolverType::Midpoint),
        (2, SolverType::Midpoint),
        (2, SolverType::Heun),
    ] {
        let mut s = dpm(order, st, FinalSigma::Zero);
        s.set_timesteps(12).unwrap();
        let a = s.schedule().alphas_cumprod().to_vec();
        let ts = s.timesteps().to_vec();
        let mut x =
            ((&c * a[ts[0]].sqrt()).unwrap() + (&z * (1.0 - a[ts[0]]).sqrt()).unwrap()).unwrap();
        for (i, &t) in ts.iter().enumerate() {
            // The sample-predicting model of point-mass data: x̂_0 = c.
            let model = PredictionType::Sample;
            assert_eq!(s.prediction_type(), PredictionType::Epsilon);
            let eps = model.pred_epsilon(&c, &x, a[t]).unwrap();
            x = s.step(&eps, t, &x, None).unwrap().prev_sample;
            let want: Vec<f64> = if i + 1 < ts.len() {
                let an = a[ts[i + 1]];
                to_vec(&((&c * an.sqrt()).unwrap() + (&z * (1.0 - an).sqrt()).unwrap()).unwrap())
            } else {
                to_vec(&c)
            };
            for (g, w) in to_vec(&x).iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-9,
                    "order {order} {st}: step {i}: {g} vs {w}"
                );
            }
        }
    }
}

/// Error of a loop on the Gaussian problem when it reaches timestep 200, against the exact
/// ODE solution from the grid's first timestep. Leading grids with `T/n` whole (25, 50, 100
/// steps) all contain t = 200 and refine uniformly there (near t = 0 they do not: λ grows like
/// −½·ln t, so the last interval in λ barely shrinks as n doubles).
fn gaussian_error(order: usize, st: SolverType, steps: usize) -> f64 {
    const T_END: usize = 200;
    let (mu, s2) = (0.4f64, 0.25f64);
    let mut s = DPMSolverMultistepScheduler::new(DPMSolverConfig {
        timestep_spacing: TimestepSpacing::Leading,
        ..*dpm(order, st, FinalSigma::Zero).config()
    })
    .unwrap();
    s.set_timesteps(steps).unwrap();
    let a = s.schedule().alphas_cumprod().to_vec();
    let ts = s.timesteps().to_vec();
    let x_start = Tensor::new(&[-2.0f64, -0.5, 0.0, 1.0, 2.5], &Device::Cpu).unwrap();
    let mut x = x_start.clone();
    for (i, &t) in ts.iter().enumerate() {
        let ab = a[t];
        let scale = (1.0 - ab).sqrt() / (ab * s2 + 1.0 - ab);
        let eps = x.affine(scale, -scale * ab.sqrt() * mu).unwrap();
        x = s.step(&eps, t, &x, None).unwrap().prev_sample;
        if ts[i + 1] == T_END {
            break;
        }
    }
    let spread = |ab: f64| (ab * s2 + 1.0 - ab).sqrt();
    let (a_start, a_end) = (a[ts[0]], a[T_END]);
    let k = spread(a_end) / spread(a_start);
    let want = x_start
        .affine(k, a_end.sqrt() * mu - a_start.sqrt() * mu * k)
        .unwrap();
    to_vec(&x)
        .iter()
        .zip(to_vec(&want))
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max)
}

#[test]
fn dpm_solver_converges_at_its_order_on_a_gaussian() {
    for (order, st, min_ratio, max_ratio) in [
        (1, SolverType::Midpoint, 1.6, 2.6),
        (2, SolverType::Midpoint, 3.0, 5.5),
        (2, SolverType::Heun, 3.0, 5.5),
    ] {
        let e: Vec<f64> = [25, 50, 100]
            .iter()
            .map(|&n| gaussian_error(order, st, n))
            .collect();
        let ratios = [e[0] / e[1], e[1] / e[2]];
        println!("order {order} {st}: errors {e:.3?} at 25/50/100 steps, ratios {ratios:.2?}");
        for r in ratios {
            assert!(
                (min_ratio..max_ratio).contains(&r),
                "order {order} {st}: ratio {r}"
            );
        }
    }
}

/// Inverts `x_0` with `reversed_step` and samples back with `step` (Gaussian data, exact
/// noise predictor); returns the largest round-trip error.
fn ddim_round_trip(steps: usize) -> f64 {
    let (mu, s2) = (0.2f64, 0.5f64);
    let mut ddim = DDIMScheduler::new(DDIMConfig::brain_ldm()).unwrap();
    ddim.set_timesteps(steps).unwrap();
    let ratio = 1000 / steps;
    let a = ddim.schedule().alphas_cumprod().to_vec();
    let eps_at = |x: &Tensor, t: usize| {
        let scale = (1.0 - a[t]).sqrt() / (a[t] * s2 + 1.0 - a[t]);
        x.affine(scale, -scale * a[t].sqrt() * mu).unwrap()
    };
    let x0 = Tensor::new(&[-0.8f64, 0.1, 0.2, 0.9, 1.4], &Device::Cpu).unwrap();
    let grid = ddim.timesteps().to_vec();
    // The first inversion step evaluates at the clean sample (t = 0, the last grid point).
    let mut x = x0.clone();
    for &t in grid.iter().rev().filter(|&&t| t + ratio < 1000) {
        x = ddim
            .reversed_step(&eps_at(&x, t), t, &x)
            .unwrap()
            .prev_sample;
    }
    for &t in &grid {
        x = ddim.step(&eps_at(&x, t), t, &x, None).unwrap().prev_sample;
    }
    to_vec(&x)
        .iter()
        .zip(to_vec(&x0))
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max)
}

#[test]
fn ddim_inversion_round_trip() {
    // Deterministic DDIM retraces the inverted path up to its (first-order) discretisation
    // error: the round trip error falls as the steps grow.
    let e: Vec<f64> = [50, 100, 200].iter().map(|&n| ddim_round_trip(n)).collect();
    println!("DDIM inversion round trip, 50/100/200 steps: max abs err {e:.2?}");
    assert!(
        e[0] < 0.15 && e[1] < 0.75 * e[0] && e[2] < 0.75 * e[1],
        "{e:?}"
    );
    // reversed_step past the last training timestep is a typed error.
    let mut ddim = DDIMScheduler::new(DDIMConfig::brain_ldm()).unwrap();
    ddim.set_timesteps(100).unwrap();
    let x = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let err = ddim.reversed_step(&x, 990, &x);
    assert!(matches!(
        err,
        Err(Error::TimestepOutOfRange { timestep: 1000, .. })
    ));
}

#[test]
fn bad_arguments_are_typed_errors() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 2, 3), DType::F32, &dev).unwrap();
    for kind in ["ddpm", "ddim", "pndm", "dpm++"] {
        let kind: SchedulerKind = kind.parse().unwrap();
        let mut s = kind
            .build(
                NoiseScheduleConfig::brain_ldm(),
                PredictionType::Epsilon,
                TimestepSpacing::Leading,
            )
            .unwrap();
        assert!(
            matches!(
                s.set_timesteps(1001),
                Err(Error::InvalidInferenceSteps {
                    requested: 1001,
                    max: 1000,
                    ..
                })
            ),
            "{kind}"
        );
        assert!(
            matches!(s.set_timesteps(0), Err(Error::InvalidInferenceSteps { .. })),
            "{kind}"
        );
        s.set_timesteps(10).unwrap();
        let t = s.timesteps()[0];
        let noise = x.clone();
        let wrong = Tensor::zeros((1, 2, 4), DType::F32, &dev).unwrap();
        assert!(
            matches!(
                s.step(&wrong, t, &x, Some(&noise)),
                Err(Error::ShapeMismatch { .. })
            ),
            "{kind}"
        );
        let ints = Tensor::zeros((1, 2, 3), DType::U32, &dev).unwrap();
        assert!(
            matches!(
                s.step(&ints, t, &ints, Some(&ints)),
                Err(Error::UnsupportedDType { .. })
            ),
            "{kind}"
        );
        let out = s.step(&x, 1000, &x, Some(&noise));
        assert!(
            matches!(
                out,
                Err(Error::TimestepOutOfRange { .. } | Error::UnexpectedTimestep { .. })
            ),
            "{kind}: {out:?}"
        );
        let ts = Tensor::new(&[1000u32], &dev).unwrap();
        assert!(matches!(
            s.add_noise(&x, &x, &ts),
            Err(Error::TimestepOutOfRange { .. })
        ));
        let ts = Tensor::new(&[1.5f32], &dev).unwrap();
        assert!(matches!(
            s.add_noise(&x, &x, &ts),
            Err(Error::NonIntegerTimestep { .. })
        ));
    }
    // DDPM needs noise at t > 0.
    let mut ddpm = SchedulerKind::Ddpm
        .build(
            NoiseScheduleConfig::brain_ldm(),
            PredictionType::Epsilon,
            TimestepSpacing::Leading,
        )
        .unwrap();
    assert!(matches!(
        ddpm.step(&x, 500, &x, None),
        Err(Error::NoiseRequired { timestep: 500 })
    ));
    // Multistep schedulers refuse out-of-order steps and steps past the end.
    let mut s = dpm(2, SolverType::Midpoint, FinalSigma::Zero);
    s.set_timesteps(2).unwrap();
    let ts = s.timesteps().to_vec();
    assert!(matches!(
        s.step(&x, ts[1], &x, None),
        Err(Error::UnexpectedTimestep { index: 0, .. })
    ));
    for &t in &ts {
        s.step(&x, t, &x, None).unwrap();
    }
    assert!(matches!(
        s.step(&x, ts[1], &x, None),
        Err(Error::ScheduleFinished { num_steps: 2 })
    ));
    // Unknown names.
    for (res, kind) in [
        ("euler".parse::<SchedulerKind>().err(), "scheduler"),
        ("eps".parse::<PredictionType>().err(), "prediction type"),
        (
            "cosine_beta"
                .parse::<brain_ldm_schedulers::BetaSchedule>()
                .err(),
            "noise schedule",
        ),
        (
            "uniform".parse::<TimestepSpacing>().err(),
            "timestep spacing",
        ),
    ] {
        assert!(
            matches!(res, Some(Error::UnknownName { kind: k, .. }) if k == kind),
            "{kind}"
        );
    }
    let bad: Result<DDIMConfig, _> =
        serde_json::from_str(r#"{"schedule": "scaled_linear_beta", "s": 0.1}"#);
    assert!(bad.unwrap_err().to_string().contains("not a parameter"));
    assert!(matches!(
        DDIMScheduler::new(DDIMConfig {
            eta: 1.5,
            ..DDIMConfig::brain_ldm()
        }),
        Err(Error::InvalidConfig { field: "eta", .. })
    ));
}

#[test]
fn every_scheduler_returns_half_inputs_in_their_dtype() {
    let dev = Device::Cpu;
    for dtype in [DType::F16, DType::BF16] {
        for kind in ["ddpm", "ddim", "pndm", "dpm++"] {
            let kind: SchedulerKind = kind.parse().unwrap();
            let mut s = kind
                .build(
                    NoiseScheduleConfig::brain_ldm(),
                    PredictionType::VPrediction,
                    TimestepSpacing::Leading,
                )
                .unwrap();
            s.set_timesteps(5).unwrap();
            let x = Tensor::new(&[0.5f32, -1.0, 2.0], &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let t = s.timesteps()[0];
            let out = s.step(&x, t, &x, Some(&x)).unwrap();
            assert_eq!(out.prev_sample.dtype(), dtype, "{kind}");
            assert_eq!(out.pred_original_sample.dtype(), dtype, "{kind}");
            assert!(to_vec(&out.prev_sample).iter().all(|v| v.is_finite()));
        }
    }
}
