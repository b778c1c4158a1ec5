//! Gradients: the UNet built on a `VarMap` backpropagates as MONAI does.
//!
//! Fixture `tests/fixtures/monai/training_unet.safetensors` (MONAI 1.6.1, PyTorch CPU, f32;
//! its `config` metadata documents the computation): the bundle-structured UNet on a noised
//! latent, `input = cat(out.noisy, in.cond broadcast over space)`, `context = in.cond` as
//! `(B, 1, 4)`, `loss_epsilon = mse(pred, in.noise)`, `grad.<key>` = d(loss_epsilon)/d(weight).

use brain_ldm_unet::{DiffusionModelUNet, DiffusionModelUNetConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::path::PathBuf;

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn gradients_match_monai() {
    // The first CUDA GPU when built with `--features cuda` and one is present, else the CPU.
    let device = Device::cuda_if_available(0).unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/monai/training_unet.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["config"]).unwrap();
    let cfg: DiffusionModelUNetConfig = serde_json::from_value(meta["model"].clone()).unwrap();
    let t = candle_core::safetensors::load_buffer(&bytes, &device).unwrap();

    let mut vars = VarMap::new();
    let unet =
        DiffusionModelUNet::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &device)).unwrap();
    let mut n = 0;
    for (k, v) in &t {
        if let Some(key) = k.strip_prefix("model.") {
            vars.set_one(key, v).unwrap();
            n += 1;
        }
    }
    assert_eq!(n, vars.all_vars().len());

    let noisy = &t["out.noisy"];
    let cond = &t["in.cond"];
    let (b, _, d, h, w) = noisy.dims5().unwrap();
    let cond_map = cond
        .reshape((b, 4, 1, 1, 1))
        .unwrap()
        .broadcast_as((b, 4, d, h, w))
        .unwrap();
    let input = Tensor::cat(&[noisy, &cond_map], 1).unwrap();
    let context = cond.unsqueeze(1).unwrap();
    let pred = unet
        .forward(&input, &t["in.timesteps"], Some(&context), None)
        .unwrap();
    let pred_err = max_abs(&(&pred - &t["out.pred"]).unwrap());
    assert!(
        pred_err <= 1e-4 * max_abs(&t["out.pred"]).max(1.0),
        "pred error {pred_err}"
    );
    let loss = (&pred - &t["in.noise"])
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    let loss_ref = t["out.loss_epsilon"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0];
    let loss_val = loss.to_scalar::<f32>().unwrap();
    assert!((loss_val - loss_ref).abs() <= 1e-5 * loss_ref.abs().max(1.0));

    let grads = loss.backward().unwrap();
    let data = vars.data().lock().unwrap();
    let mut worst = (0f32, String::new());
    for (key, var) in data.iter() {
        let reference = &t[&format!("grad.{key}")];
        let scale = max_abs(reference);
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {key}"));
        let err = max_abs(&(grad - reference).unwrap());
        if scale == 0.0 {
            // The q/k projections of one-token cross-attention (and their LayerNorm).
            assert_eq!(err, 0.0, "{key}: MONAI's gradient is exactly zero");
            continue;
        }
        let rel = err / scale;
        if rel > worst.0 {
            worst = (rel, key.clone());
        }
        // Each gradient within 1e-3 of its own scale (plus 1e-7 for tiny tensors).
        assert!(
            err <= 1e-3 * scale + 1e-7,
            "{key}: gradient error {err} (scale {scale})"
        );
    }
    eprintln!(
        "largest gradient error relative to its scale: {:e} ({})",
        worst.0, worst.1
    );
}
