//! Full-size parity with MONAI on the public bundle's configuration (553 M parameters),
//! loading a 2.2 GB pickled checkpoint under the old GenerativeModels key names.
//!
//! Ignored by default (slow, needs files outside the repository). Generate them with
//! `python scripts/make_unet_full_reference.py DIR` (torch + MONAI), then run
//! `BRAIN_LDM_UNET_FULL=DIR cargo test --release -p brain-ldm-unet --test full_size -- --ignored`.

use brain_ldm_nn::checkpoint::Checkpoint;
use brain_ldm_unet::{DiffusionModelUNet, DiffusionModelUNetConfig};
use candle_core::{DType, Device};
use std::path::PathBuf;
use std::time::Instant;

#[test]
#[ignore = "needs BRAIN_LDM_UNET_FULL (see the file's header); ~1 min and 5 GB"]
fn bundle_config_matches_monai_at_full_size() {
    let dir = PathBuf::from(std::env::var("BRAIN_LDM_UNET_FULL").expect("BRAIN_LDM_UNET_FULL"));
    let dev = Device::Cpu;
    let start = Instant::now();
    let unet = DiffusionModelUNet::load(
        dir.join("unet_bundle_oldkeys.pt"),
        &DiffusionModelUNetConfig::brain_ldm(),
        DType::F32,
        &dev,
    )
    .expect("the bundle-format checkpoint loads");
    eprintln!("load .pt: {:.2} s", start.elapsed().as_secs_f64());
    let reference = Checkpoint::load(dir.join("unet_bundle_reference.safetensors"), &dev)
        .unwrap_or_else(|e| panic!("{e}"));
    let t = reference.tensors();
    let start = Instant::now();
    let y = unet
        .forward(&t["in.x"], &t["in.timesteps"], Some(&t["in.context"]), None)
        .unwrap();
    eprintln!("forward: {:.2} s", start.elapsed().as_secs_f64());
    let reference = &t["out.y"];
    let err = (&y - reference)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = reference
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    eprintln!("max |y_ref| {scale}, max abs error {err:e}");
    assert!(err <= 1e-4 * scale.max(1.0), "error {err} (scale {scale})");
}
