//! Parameter counts: the model asks for exactly MONAI's parameters.
//!
//! The model is built on a backend that records every requested tensor and hands out
//! zero-strided zeros, so even the 553 M-parameter bundle configuration costs no memory.

use brain_ldm_unet::{DiffusionModelUNet, DiffusionModelUNetConfig};
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// Records the shape of every tensor the model asks for.
#[derive(Default)]
struct ShapeRecorder(Mutex<BTreeMap<String, Vec<usize>>>);

impl SimpleBackend for &ShapeRecorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        self.0
            .lock()
            .unwrap()
            .insert(name.to_string(), s.dims().to_vec());
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("unexpected unchecked request for {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Every parameter the model of `cfg` has, by MONAI key.
fn parameters(cfg: &DiffusionModelUNetConfig) -> BTreeMap<String, Vec<usize>> {
    let recorder = ShapeRecorder::default();
    let vb = VarBuilder::from_backend(Box::new(&recorder), DType::F32, Device::Cpu);
    DiffusionModelUNet::new(cfg, vb).expect("build");
    recorder.0.into_inner().unwrap()
}

fn count(params: &BTreeMap<String, Vec<usize>>) -> usize {
    params.values().map(|s| s.iter().product::<usize>()).sum()
}

/// The small bundle-structured fixture holds MONAI's full state dict for its config: the
/// model asks for exactly those keys and shapes, so the counts agree.
#[test]
fn small_bundle_structure_has_monais_parameters() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/monai/unet_bundle_small.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let json = meta.metadata().as_ref().unwrap()["config"].clone();
    let monai: BTreeMap<String, Vec<usize>> = meta
        .tensors()
        .into_iter()
        .filter_map(|(k, info)| {
            k.strip_prefix("model.")
                .map(|k| (k.to_string(), info.shape.clone()))
        })
        .collect();
    let ours = parameters(&DiffusionModelUNetConfig::from_json(&json).unwrap());
    assert_eq!(ours, monai);
}

/// The public bundle's UNet: 553.2 M parameters (project notes, NOTES.md). The exact
/// count and tensor count are MONAI 1.6.1's (torch 2.15), computed with
/// `python -c "import torch; from monai.networks.nets import DiffusionModelUNet as U;
/// torch.set_default_device('meta'); u = U(spatial_dims=3, in_channels=7, out_channels=3, channels=(256, 512, 768),
/// num_res_blocks=2, attention_levels=(False, True, True), norm_num_groups=32, norm_eps=1e-6,
/// resblock_updown=True, num_head_channels=(0, 512, 768), with_conditioning=True,
/// transformer_num_layers=1, cross_attention_dim=4, upcast_attention=True);
/// print(sum(p.numel() for p in u.parameters()), len(u.state_dict()))"` → `553168899 528`.
#[test]
fn brain_ldm_bundle_has_553_2_million_parameters() {
    let params = parameters(&DiffusionModelUNetConfig::brain_ldm());
    let n = count(&params);
    eprintln!("brain-LDM UNet: {n} parameters in {} tensors", params.len());
    assert_eq!((n, params.len()), (553_168_899, 528));
    assert_eq!((n as f64 / 1e5).round() / 10.0, 553.2);
}
