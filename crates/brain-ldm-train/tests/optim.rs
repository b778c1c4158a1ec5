//! The crate's AdamW computes what candle-nn's `AdamW` computes (which keeps its moments
//! private, so it cannot be checkpointed), step by step, with and without weight decay.

use brain_ldm_train::optim::{AdamW, AdamWConfig, Gradients, Parameters};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, Optimizer, VarMap};

#[test]
fn matches_candle_nn_adamw_over_several_steps() {
    for weight_decay in [0.0, 0.01] {
        let vars = VarMap::new();
        let w = vars
            .get((3, 4), "w", Init::Const(0.5), DType::F32, &Device::Cpu)
            .unwrap();
        let theirs = candle_core::Var::from_tensor(&w).unwrap();
        let params = Parameters::from_varmap(&vars);
        let cfg = AdamWConfig {
            lr: 1e-2,
            betas: (0.9, 0.99),
            eps: 1e-8,
            weight_decay,
        };
        let mut ours = AdamW::new(params.clone(), cfg).unwrap();
        let mut reference = candle_nn::AdamW::new(
            vec![theirs.clone()],
            candle_nn::ParamsAdamW {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.99,
                eps: 1e-8,
                weight_decay,
            },
        )
        .unwrap();
        for step in 0..5 {
            // loss = sum((w − target)²) with a target that changes every step.
            let target = Tensor::arange(0f32, 12.0, &Device::Cpu)
                .unwrap()
                .reshape((3, 4))
                .unwrap();
            let target = (target * (0.1 * (step + 1) as f64)).unwrap();
            let loss = (params.vars()[0].as_tensor() - &target)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            ours.step(&params.gradients(&loss.backward().unwrap()))
                .unwrap();
            let loss = (theirs.as_tensor() - &target)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            reference.backward_step(&loss).unwrap();
        }
        let diff = (params.vars()[0].as_tensor() - theirs.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff <= 1e-6, "weight decay {weight_decay}: {diff}");
    }
}

#[test]
fn clipping_accumulation_and_state_round_trip() {
    let t = |v: &[f32]| Some(Tensor::new(v, &Device::Cpu).unwrap());
    let mut g = Gradients(vec![t(&[3.0]), None, t(&[4.0])]);
    g.accumulate(Gradients(vec![t(&[3.0]), t(&[1.0]), t(&[4.0])]))
        .unwrap();
    g.scale(0.5).unwrap();
    // [3, 0.5, 4]: norm sqrt(9 + 0.25 + 16).
    let norm = g.clip_global_norm(1.0).unwrap();
    assert!((norm - 25.25f64.sqrt()).abs() < 1e-6);
    assert!((g.global_norm().unwrap() - 1.0).abs() < 1e-5);

    let vars = VarMap::new();
    vars.get(2, "a", Init::Const(1.0), DType::F32, &Device::Cpu)
        .unwrap();
    let params = Parameters::from_varmap(&vars);
    let mut opt = AdamW::new(params.clone(), AdamWConfig::default()).unwrap();
    opt.step(&Gradients(vec![t(&[1.0, -1.0])])).unwrap();
    let (tensors, steps) = opt.state();
    let mut restored = AdamW::new(params.clone(), AdamWConfig::default()).unwrap();
    restored.load_state(&tensors, &steps).unwrap();
    assert_eq!(steps["a"], 1);
    assert_eq!(
        restored.state().0["m.a"].to_vec1::<f32>().unwrap(),
        tensors["m.a"].to_vec1::<f32>().unwrap()
    );
}
