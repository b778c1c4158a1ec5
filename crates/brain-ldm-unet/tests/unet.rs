//! Parity of DiffusionModelUNet with MONAI, checkpoint loading, and input validation.
//!
//! The fixtures are outputs of MONAI 1.6.1 (PyTorch CPU, float32) copied from the project's
//! reference set (`tests/fixtures/monai/`, `tests/fixtures/monai-generative-0.2/`): weights
//! as `model.<MONAI key>`, inputs `in.*`, reference outputs `out.*`, and the constructor
//! arguments as the JSON metadata `config`.

use brain_ldm_nn::checkpoint::Checkpoint;
use brain_ldm_nn::checkpoint::CheckpointError;
use brain_ldm_unet::{DiffusionModelUNet, DiffusionModelUNetConfig, UnetError};
use candle_core::DType;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// The device the tests run on: the first CUDA GPU when built with `--features cuda` and one
/// is present, else the CPU.
pub fn device() -> Device {
    Device::cuda_if_available(0).expect("CUDA device")
}

/// Path of a fixture under the repository's `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

/// The tensors and the `config` metadata of a fixture.
pub fn read(rel: &str) -> (HashMap<String, Tensor>, String) {
    let path = fixture(rel);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors header");
    let config = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("config").cloned())
        .expect("config metadata");
    let tensors = candle_core::safetensors::load_buffer(&bytes, &device()).expect("tensors");
    (tensors, config)
}

/// The model configuration embedded in a fixture.
pub fn config(json: &str) -> DiffusionModelUNetConfig {
    DiffusionModelUNetConfig::from_json(json).expect("fixture config")
}

/// The fixture's weights (`model.` prefix removed) as a checkpoint.
pub fn weights(tensors: &HashMap<String, Tensor>, rel: &str) -> Checkpoint {
    Checkpoint::from_tensors(tensors.clone(), rel).strip_prefix("model.")
}

/// Largest absolute difference and the tolerance `1e-4 · max(1, max|reference|)`.
pub fn error_and_tolerance(got: &Tensor, reference: &Tensor) -> (f32, f32) {
    assert_eq!(got.dims(), reference.dims());
    let err = (got - reference)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = reference
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    (err, 1e-4 * scale.max(1.0))
}

/// Asserts `got` matches `reference` within `1e-4 · max(1, max|reference|)`.
pub fn assert_close(name: &str, got: &Tensor, reference: &Tensor) {
    let (err, tol) = error_and_tolerance(got, reference);
    eprintln!("{name}: max abs error {err:e} (tolerance {tol:e})");
    assert!(err <= tol, "{name}: max abs error {err} > {tol}");
}

/// Builds the model of a MONAI fixture and checks `out.y`.
fn check_parity(rel: &str) {
    let (t, json) = read(rel);
    let cfg = config(&json);
    let unet = DiffusionModelUNet::from_checkpoint(weights(&t, rel), &cfg, DType::F32)
        .expect("fixture weights fit the fixture config");
    let y = unet
        .forward(&t["in.x"], &t["in.timesteps"], t.get("in.context"), None)
        .expect("forward");
    assert_close(rel, &y, &t["out.y"]);
}

#[test]
fn parity_bundle_structure_cross_attention_one_token() {
    check_parity("monai/unet_bundle_small.safetensors");
}

#[test]
fn parity_cross_attention_sequence_two_layers() {
    check_parity("monai/unet_crossattn_seq_small.safetensors");
}

#[test]
fn parity_self_attention_plain_updown() {
    check_parity("monai/unet_selfattn_small.safetensors");
}

/// The one-token shortcut is only taken without autograd: the same weights as variables
/// (full attention) give the same output.
#[test]
fn one_token_shortcut_matches_full_attention() {
    let rel = "monai/unet_bundle_small.safetensors";
    let (t, json) = read(rel);
    let cfg = config(&json);
    let mut vars = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vars, DType::F32, &device());
    let unet = DiffusionModelUNet::new(&cfg, vb).expect("build on a VarMap");
    for (k, v) in weights(&t, rel).tensors() {
        vars.set_one(k, v)
            .expect("every fixture key is a model variable");
    }
    assert_eq!(vars.all_vars().len(), weights(&t, rel).tensors().len());
    let y = unet
        .forward(&t["in.x"], &t["in.timesteps"], t.get("in.context"), None)
        .expect("forward");
    assert_close("tracked", &y, &t["out.y"]);
}

const OLD_PT: &str = "monai-generative-0.2/bundle_unet_oldkeys_small.pt";
const OLD_REF: &str = "monai-generative-0.2/bundle_unet_oldkeys_small.safetensors";

#[test]
fn loads_old_generative_models_pickle_as_is() {
    let (t, json) = read(OLD_REF);
    let cfg = config(&json);
    let unet = DiffusionModelUNet::load(fixture(OLD_PT), &cfg, DType::F32, &device())
        .expect("old-key .pt loads");
    let y = unet
        .forward(&t["in.x"], &t["in.timesteps"], t.get("in.context"), None)
        .expect("forward");
    assert_close("old keys", &y, &t["out.y"]);
}

#[test]
fn converts_old_pickle_to_core_safetensors_and_back() {
    let (t, json) = read(OLD_REF);
    let cfg = config(&json);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("unet.safetensors");
    brain_ldm_unet::convert_checkpoint(fixture(OLD_PT), &out, &cfg).expect("convert");
    // The export holds MONAI core names only.
    let saved = Checkpoint::load(&out, &device()).expect("read back");
    assert!(saved.tensors().keys().all(|k| !k.contains("to_out")));
    assert!(saved
        .tensors()
        .contains_key("middle_block.attention.transformer_blocks.0.attn2.out_proj.weight"));
    let unet = DiffusionModelUNet::load(&out, &cfg, DType::F32, &device()).expect("load");
    let y = unet
        .forward(&t["in.x"], &t["in.timesteps"], t.get("in.context"), None)
        .expect("forward");
    assert_close("round trip", &y, &t["out.y"]);
    // Nothing else was left in the directory (no temporary file).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn checkpoint_that_does_not_fit_is_one_clear_error() {
    let rel = "monai/unet_bundle_small.safetensors";
    let (t, json) = read(rel);
    // Another context width and one weight missing.
    let mut cfg = config(&json);
    cfg.cross_attention_dim = Some(5);
    let mut tensors = weights(&t, rel).tensors().clone();
    tensors.remove("conv_in.conv.bias");
    let err = DiffusionModelUNet::from_checkpoint(
        Checkpoint::from_tensors(tensors, rel),
        &cfg,
        DType::F32,
    )
    .expect_err("must not fit");
    let msg = err.to_string();
    eprintln!("{msg}");
    match &err {
        UnetError::Checkpoint(CheckpointError::Mismatch {
            missing,
            wrong_shape,
            unexpected,
            ..
        }) => {
            assert_eq!(missing, &["conv_in.conv.bias".to_string()]);
            // attn2.to_k and attn2.to_v of 4 down + 1 middle + 6 up transformers.
            assert_eq!(wrong_shape.len(), 2 * (4 + 1 + 6));
            assert!(wrong_shape
                .iter()
                .all(|w| w.expected[1] == 5 && w.found[1] == 4 && w.key.contains("attn2.to_")));
            assert!(unexpected.is_empty());
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    assert!(msg.contains(rel));

    // A checkpoint of another model entirely: unexpected keys are reported too.
    let mut cfg = config(&json);
    cfg.resblock_updown = false;
    let err = DiffusionModelUNet::from_checkpoint(weights(&t, rel), &cfg, DType::F32)
        .expect_err("must not fit");
    match err {
        UnetError::Checkpoint(CheckpointError::Mismatch {
            missing,
            unexpected,
            ..
        }) => {
            assert!(missing
                .iter()
                .any(|k| k.ends_with("downsampler.op.conv.weight")));
            assert!(missing
                .iter()
                .any(|k| k.ends_with("upsampler.postconv.conv.weight")));
            assert!(unexpected
                .iter()
                .any(|k| k.ends_with("downsampler.conv1.conv.weight")));
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

/// A small conditioned model on random weights for input checks.
fn small_model(classes: Option<usize>) -> DiffusionModelUNet {
    let json = r#"{"spatial_dims": 3, "in_channels": 3, "out_channels": 2, "channels": [8, 16],
        "attention_levels": [false, true], "num_head_channels": 8, "num_res_blocks": 1,
        "norm_num_groups": 4, "with_conditioning": true, "cross_attention_dim": 4}"#;
    let mut cfg = config(json);
    cfg.num_class_embeds = classes;
    let vars = candle_nn::VarMap::new();
    DiffusionModelUNet::new(
        &cfg,
        candle_nn::VarBuilder::from_varmap(&vars, DType::F32, &device()),
    )
    .expect("build")
}

#[test]
fn bad_inputs_are_typed_errors() {
    let dev = device();
    let unet = small_model(None);
    let x = Tensor::zeros((2, 3, 4, 6, 4), DType::F32, &dev).unwrap();
    let t = Tensor::new(&[1u32, 2], &dev).unwrap();
    let ctx = Tensor::zeros((2, 1, 4), DType::F32, &dev).unwrap();
    assert_eq!(
        unet.forward(&x, &t, Some(&ctx), None).unwrap().dims(),
        [2, 2, 4, 6, 4]
    );
    // One timestep shared by the batch (MONAI broadcasts it).
    let t1 = Tensor::new(&[7u32], &dev).unwrap();
    assert!(unet.forward(&x, &t1, Some(&ctx), None).is_ok());

    let input_of = |r: Result<Tensor, UnetError>| match r {
        Err(UnetError::InputShape { input, .. }) | Err(UnetError::Input { input, .. }) => input,
        other => panic!("expected an input error, got {other:?}"),
    };
    let x4 = Tensor::zeros((2, 4, 4, 6, 4), DType::F32, &dev).unwrap();
    assert_eq!(input_of(unet.forward(&x4, &t, Some(&ctx), None)), "x");
    let odd = Tensor::zeros((2, 3, 4, 5, 4), DType::F32, &dev).unwrap();
    assert_eq!(input_of(unet.forward(&odd, &t, Some(&ctx), None)), "x");
    let rank4 = Tensor::zeros((2, 3, 4, 4), DType::F32, &dev).unwrap();
    assert_eq!(input_of(unet.forward(&rank4, &t, Some(&ctx), None)), "x");
    let t3 = Tensor::new(&[1u32, 2, 3], &dev).unwrap();
    assert_eq!(
        input_of(unet.forward(&x, &t3, Some(&ctx), None)),
        "timesteps"
    );
    let t2d = Tensor::new(&[[1u32, 2]], &dev).unwrap();
    assert_eq!(
        input_of(unet.forward(&x, &t2d, Some(&ctx), None)),
        "timesteps"
    );
    let wide = Tensor::zeros((2, 1, 5), DType::F32, &dev).unwrap();
    assert_eq!(input_of(unet.forward(&x, &t, Some(&wide), None)), "context");
    let batch1 = Tensor::zeros((1, 1, 4), DType::F32, &dev).unwrap();
    assert_eq!(
        input_of(unet.forward(&x, &t, Some(&batch1), None)),
        "context"
    );
    // No context: the transformers would attend to 16-wide tokens with 4-wide projections.
    assert_eq!(input_of(unet.forward(&x, &t, None, None)), "context");
    // Class labels on a model without class embedding.
    assert_eq!(
        input_of(unet.forward(&x, &t, Some(&ctx), Some(&t))),
        "class_labels"
    );

    let classes = small_model(Some(3));
    assert_eq!(
        input_of(classes.forward(&x, &t, Some(&ctx), None)),
        "class_labels"
    );
    let labels = Tensor::new(&[0u32, 2], &dev).unwrap();
    assert!(classes.forward(&x, &t, Some(&ctx), Some(&labels)).is_ok());
    let out_of_range = Tensor::new(&[0u32, 3], &dev).unwrap();
    assert!(matches!(
        classes.forward(&x, &t, Some(&ctx), Some(&out_of_range)),
        Err(UnetError::ClassLabel {
            label: 3,
            num_class_embeds: 3
        })
    ));
    let float_labels = Tensor::new(&[0f32, 1.], &dev).unwrap();
    assert_eq!(
        input_of(classes.forward(&x, &t, Some(&ctx), Some(&float_labels))),
        "class_labels"
    );
}

#[test]
fn self_attention_model_rejects_context() {
    let rel = "monai/unet_selfattn_small.safetensors";
    let (t, json) = read(rel);
    let unet = DiffusionModelUNet::from_checkpoint(weights(&t, rel), &config(&json), DType::F32)
        .expect("build");
    let ctx = Tensor::zeros((1, 1, 4), DType::F32, &device()).unwrap();
    assert!(matches!(
        unet.forward(&t["in.x"], &t["in.timesteps"], Some(&ctx), None),
        Err(UnetError::Input {
            input: "context",
            ..
        })
    ));
}

/// `context_embedding` adds `W · mean(context tokens) + b` to the time embedding, exactly
/// where a class embedding goes: with `b` chosen so that the sum equals class 0's
/// embedding row, the two models (sharing every other weight) give the same output.
#[test]
fn context_embedding_adds_the_mean_token_to_the_time_embedding() {
    let dev = device();
    let json = r#"{"spatial_dims": 3, "in_channels": 3, "out_channels": 2, "channels": [8, 16],
        "attention_levels": [false, true], "num_head_channels": 8, "num_res_blocks": 1,
        "norm_num_groups": 4, "with_conditioning": true, "cross_attention_dim": 4}"#;
    let mut with_class = config(json);
    with_class.num_class_embeds = Some(1);
    let mut with_context = config(json);
    with_context.context_embedding = true;
    // One VarMap: the second model reuses every weight of the first by name and adds
    // `context_embedding.{weight,bias}`.
    let vars = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vars, DType::F32, &dev);
    let class_model = DiffusionModelUNet::new(&with_class, vb.clone()).expect("class model");
    let context_model = DiffusionModelUNet::new(&with_context, vb).expect("context model");

    let x = Tensor::randn(0f32, 1., (1, 3, 4, 6, 4), &dev).unwrap();
    let t = Tensor::new(&[321u32], &dev).unwrap();
    let context = Tensor::randn(0f32, 1., (1, 2, 4), &dev).unwrap();
    let data = vars.data().lock().unwrap();
    // Random everywhere (MONAI zero-initialises the output convolution, among others).
    for var in data.values() {
        var.set(&Tensor::randn(0f32, 0.3, var.shape(), &dev).unwrap())
            .unwrap();
    }
    let class_row = data["class_embedding.weight"].as_tensor().get(0).unwrap();
    let weight = Tensor::randn(0f32, 1., (with_context.time_embed_dim(), 4), &dev).unwrap();
    let projected = context
        .mean(1)
        .unwrap()
        .matmul(&weight.t().unwrap())
        .unwrap()
        .squeeze(0)
        .unwrap();
    data["context_embedding.weight"].set(&weight).unwrap();
    data["context_embedding.bias"]
        .set(&(class_row - projected).unwrap())
        .unwrap();
    drop(data);

    let label = Tensor::new(&[0u32], &dev).unwrap();
    let want = class_model
        .forward(&x, &t, Some(&context), Some(&label))
        .unwrap();
    let got = context_model.forward(&x, &t, Some(&context), None).unwrap();
    let energy = want
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        energy > 0.0,
        "the models output zeros: the test would prove nothing"
    );
    assert_close("context embedding against class embedding", &got, &want);

    // Training reaches the embedding.
    let grads = squared_output_sum(&context_model, &x, &t, &context)
        .backward()
        .unwrap();
    let data = vars.data().lock().unwrap();
    let grad = grads
        .get(data["context_embedding.weight"].as_tensor())
        .expect("gradient of context_embedding.weight");
    assert!(
        grad.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
    drop(data);

    // The embedding needs the context, and only conditioned models can have it.
    assert!(matches!(
        context_model.forward(&x, &t, None, None),
        Err(UnetError::Input {
            input: "context",
            ..
        })
    ));
    let mut unconditioned = DiffusionModelUNetConfig::new(3, 2);
    unconditioned.context_embedding = true;
    assert!(matches!(
        unconditioned.validate(),
        Err(UnetError::Config(m)) if m.contains("context_embedding")
    ));
}

/// A scalar loss of the model's output, for gradients.
fn squared_output_sum(
    model: &DiffusionModelUNet,
    x: &Tensor,
    t: &Tensor,
    context: &Tensor,
) -> Tensor {
    model
        .forward(x, t, Some(context), None)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
}

/// The non-MONAI `context_embedding` is written to JSON only when on, so a configuration
/// without it stays one MONAI's constructor accepts.
#[test]
fn context_embedding_is_in_the_json_only_when_on() {
    let mut cfg = DiffusionModelUNetConfig::brain_ldm();
    let off = serde_json::to_string(&cfg).unwrap();
    assert!(!off.contains("context_embedding"));
    cfg.context_embedding = true;
    let on = serde_json::to_string(&cfg).unwrap();
    assert_eq!(DiffusionModelUNetConfig::from_json(&on).unwrap(), cfg);
}
