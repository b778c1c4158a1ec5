//! Checkpoint loading, fit checking and safetensors export.

use brain_ldm_nn::checkpoint::{Checkpoint, CheckpointError};
use brain_ldm_nn::{conv3d_layer, Conv3dConfig};
use candle_core::{DType, Device, Module, Tensor};
use std::collections::HashMap;

fn conv_tensors(prefix: &str, c_in: usize, c_out: usize) -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let n = c_out * c_in * 27;
    HashMap::from([
        (
            format!("{prefix}conv.weight"),
            Tensor::arange(0f32, n as f32, &dev)
                .unwrap()
                .affine(1e-3, 0.0)
                .unwrap()
                .reshape((c_out, c_in, 3, 3, 3))
                .unwrap(),
        ),
        (
            format!("{prefix}conv.bias"),
            Tensor::ones(c_out, DType::F32, &dev).unwrap(),
        ),
    ])
}

#[test]
fn safetensors_round_trip_builds_the_same_layer() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("brain-ldm-nn-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("conv.safetensors");
    let original = Checkpoint::from_tensors(conv_tensors("", 2, 3), "memory");
    original.save_safetensors(&path)?;
    // Readable as any file made there (not the 0600 of safetensors' temporary file), and no
    // temporary file left behind.
    let ordinary = dir.join("ordinary");
    std::fs::File::create(&ordinary)?;
    assert_eq!(
        std::fs::metadata(&path)?.permissions(),
        std::fs::metadata(&ordinary)?.permissions()
    );
    std::fs::remove_file(&ordinary)?;
    assert_eq!(std::fs::read_dir(&dir)?.count(), 1);
    let loaded = Checkpoint::load(&path, &Device::Cpu)?;
    assert_eq!(loaded.file(), path.display().to_string());
    let build = |ckpt: &Checkpoint| {
        ckpt.build(DType::F32, |vb| {
            conv3d_layer(2, 3, 3, Conv3dConfig::new(1, 1), vb.pp("conv"))
        })
    };
    let x = Tensor::arange(0f32, 2. * 64., &Device::Cpu)?.reshape((1, 2, 4, 4, 4))?;
    let a = build(&original)?.forward(&x)?;
    let b = build(&loaded)?.forward(&x)?;
    let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert_eq!(diff, 0.0);
    // No temporary file is left next to the output.
    assert_eq!(std::fs::read_dir(&dir)?.count(), 1);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn mismatch_lists_every_missing_unexpected_and_misshaped_key() {
    let mut tensors = conv_tensors("a.", 2, 3);
    tensors.extend(conv_tensors("stale.", 1, 1));
    let ckpt = Checkpoint::from_tensors(tensors, "fixture.pt");
    let err = ckpt
        .build(DType::F32, |vb| {
            let a = conv3d_layer(4, 3, 3, Conv3dConfig::new(1, 1), vb.pp("a").pp("conv"))?;
            let b = conv3d_layer(2, 2, 3, Conv3dConfig::new(1, 1), vb.pp("b").pp("conv"))?;
            Ok((a, b))
        })
        .unwrap_err();
    match &err {
        CheckpointError::Mismatch {
            file,
            missing,
            wrong_shape,
            unexpected,
        } => {
            assert_eq!(file, "fixture.pt");
            assert_eq!(missing, &["b.conv.bias", "b.conv.weight"]);
            assert_eq!(wrong_shape.len(), 1);
            assert_eq!(wrong_shape[0].key, "a.conv.weight");
            assert_eq!(wrong_shape[0].expected, [3, 4, 3, 3, 3]);
            assert_eq!(wrong_shape[0].found, [3, 2, 3, 3, 3]);
            assert_eq!(unexpected, &["stale.conv.bias", "stale.conv.weight"]);
        }
        other => panic!("expected a mismatch, got {other}"),
    }
    let message = err.to_string();
    assert!(message.contains("fixture.pt"), "{message}");
    assert!(
        message.contains("missing: b.conv.bias, b.conv.weight"),
        "{message}"
    );
}

#[test]
fn rename_and_strip_prefix_rewrite_keys() -> Result<(), Box<dyn std::error::Error>> {
    let ckpt = Checkpoint::from_tensors(conv_tensors("model.up.conv.", 1, 1), "memory")
        .strip_prefix("model.")
        .rename(|k| {
            k.strip_prefix("up.conv.")
                .map(|rest| format!("up.postconv.{rest}"))
        });
    let mut keys: Vec<_> = ckpt.tensors().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["up.postconv.conv.bias", "up.postconv.conv.weight"]);
    Ok(())
}

#[test]
fn unreadable_files_are_named_in_the_error() {
    let err = Checkpoint::load("/nonexistent/dir/w.safetensors", &Device::Cpu).unwrap_err();
    assert!(matches!(err, CheckpointError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/dir/w.safetensors"));
    let err = Checkpoint::load("weights.onnx", &Device::Cpu).unwrap_err();
    assert!(matches!(err, CheckpointError::UnknownFormat { .. }));
    assert!(err.to_string().contains("weights.onnx"));
    let bad_dir = std::env::temp_dir().join(format!("brain-ldm-nn-bad-{}", std::process::id()));
    std::fs::create_dir_all(&bad_dir).unwrap();
    let bad = bad_dir.join("garbage.pt");
    std::fs::write(&bad, b"not a zip archive").unwrap();
    let err = Checkpoint::load(&bad, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("garbage.pt"), "{err}");
    std::fs::remove_dir_all(&bad_dir).unwrap();
}
