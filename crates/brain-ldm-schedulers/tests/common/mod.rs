//! Test helpers: fixtures, the device, tolerant comparison.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

/// The device tests run on: the first CUDA GPU with `--features cuda` (when present), else
/// the CPU.
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    {
        if let Ok(d) = Device::cuda_if_available(0) {
            return d;
        }
    }
    Device::Cpu
}

/// A fixture under the repository's `tests/fixtures/`: its tensors (on `device`) and its
/// `config` metadata.
pub fn load_fixture(rel: &str, device: &Device) -> (HashMap<String, Tensor>, Option<String>) {
    let path = format!("{}/../../tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors header");
    let config = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("config").cloned());
    let tensors = candle_core::safetensors::load_buffer(&bytes, device).expect("tensors");
    (tensors, config)
}

/// Largest `|got − want|` and largest `|got − want| / max(1, |want|)`, in f64.
pub fn errors(got: &Tensor, want: &Tensor) -> (f64, f64) {
    assert_eq!(got.dims(), want.dims(), "shape");
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
    g.iter()
        .zip(&w)
        .fold((0.0f64, 0.0f64), |(abs, rel), (g, w)| {
            assert!(g.is_finite(), "non-finite output");
            let e = (g - w).abs();
            (abs.max(e), rel.max(e / w.abs().max(1.0)))
        })
}

/// Asserts `got ≈ want`: absolute error ≤ `tol` where `|want| ≤ 1`, relative error ≤ `tol`
/// above (f32 cannot hold an absolute 1e-5 on values in the hundreds). Returns both errors.
pub fn assert_close(name: &str, got: &Tensor, want: &Tensor, tol: f64) -> (f64, f64) {
    let (abs, scaled) = errors(got, want);
    assert!(
        scaled <= tol,
        "{name}: max abs err {abs:.3e}, max scaled err {scaled:.3e} > {tol:.0e}"
    );
    (abs, scaled)
}

/// Element-wise maximum of error pairs.
pub fn max2(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    (a.0.max(b.0), a.1.max(b.1))
}
