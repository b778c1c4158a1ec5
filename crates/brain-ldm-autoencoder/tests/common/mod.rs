//! Test helpers: fixtures and the tolerance.

use std::collections::HashMap;

use brain_ldm_nn::checkpoint::Checkpoint;
use candle_core::{DType, Device, Tensor};

/// The device the parity tests run on: the first CUDA GPU when built with `--features cuda`
/// and one is present, else the CPU.
pub fn device() -> Device {
    Device::cuda_if_available(0).expect("CUDA device")
}

/// Path of a fixture under the repository's `tests/fixtures/`.
pub fn fixture_path(rel: &str) -> String {
    format!("{}/../../tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"))
}

/// A fixture's tensors (on [`device`]) and its `config` metadata JSON.
pub fn load_fixture(rel: &str) -> (HashMap<String, Tensor>, String) {
    let path = fixture_path(rel);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors header");
    let config = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("config").cloned())
        .expect("config metadata");
    let tensors = candle_core::safetensors::load_buffer(&bytes, &device()).expect("tensors");
    (tensors, config)
}

/// The `model.*` tensors of a fixture as a checkpoint under MONAI's own keys.
pub fn model_checkpoint(tensors: &HashMap<String, Tensor>, rel: &str) -> Checkpoint {
    Checkpoint::from_tensors(tensors.clone(), rel).strip_prefix("model.")
}

/// Asserts the tolerance: max |got − want| ≤ 1e-4 · max(1, max |want|). Returns the
/// max abs error.
pub fn assert_close(name: &str, got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.dims(), want.dims(), "{name}: shape");
    let g = got
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let w = want
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let scale = w.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let err = g.iter().zip(&w).fold(0.0f64, |m, (g, w)| {
        assert!(g.is_finite(), "{name}: non-finite output");
        m.max((g - w).abs())
    });
    println!("{name}: max abs err {err:.3e} (scale {scale:.3})");
    assert!(
        err <= 1e-4 * scale,
        "{name}: max abs err {err:.3e} > 1e-4 · {scale:.3}"
    );
    err
}
