//! `brain-ldm sample` and `brain-ldm convert` on the shrunk public bundle
//! (tests/fixtures/bundle-small): the files, their contents, `--resume`, and bad input.

mod common;

use common::{bundle, ok, run};
use std::path::{Path, PathBuf};
use std::process::Output;

fn failure(out: Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sample(out: &Path, extra: &[&str]) -> Output {
    let bundle = bundle();
    let mut args = vec![
        "sample",
        "--bundle",
        bundle.to_str().unwrap(),
        "--sex",
        "F",
        "--age",
        "70",
        "--ventricular-volume",
        "30000",
        "--brain-volume",
        "1.4e6",
        "--steps",
        "5",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn sample_writes_nifti_png_and_sidecar_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("samples");
    ok(sample(&out, &["-n", "2", "--seed", "3"]));

    let nifti = out.join("sample-0001.nii.gz");
    let volume = brain_ldm_nifti::read(&nifti).unwrap();
    // bundle-small decodes a (3, 8, 12, 8) latent to 32×48×32 voxels.
    assert_eq!(volume.shape(), [32, 48, 32]);
    // The documented grid, to the f32 precision of the header's sform.
    for (row, want) in volume.affine.iter().zip(brain_ldm::BUNDLE_IMAGE_AFFINE) {
        for (got, want) in row.iter().zip(want) {
            assert!((got - want).abs() < 1e-4, "{:?}", volume.affine);
        }
    }
    let png = image::open(out.join("sample-0001.png")).unwrap();
    // Sagittal (48 wide) + coronal (32) + axial (32), as tall as the tallest (48).
    assert_eq!((png.width(), png.height()), (48 + 32 + 32, 48));
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("sample-0001.json")).unwrap()).unwrap();
    assert_eq!(sidecar["index"], 1);
    assert_eq!(sidecar["seed"], 3);
    assert_eq!(sidecar["covariates"]["sex"], "Female");
    assert_eq!(sidecar["covariates"]["age_years"], 70.0);
    // (70 − 44) / 38, the documented age scaling.
    let age = sidecar["conditioning"][1].as_f64().unwrap();
    assert!((age - 26.0 / 38.0).abs() < 1e-6, "{age}");

    // --resume leaves complete samples alone and recreates a deleted one identically.
    let first = out.join("sample-0000.nii.gz");
    let written = std::fs::metadata(&first).unwrap().modified().unwrap();
    let before = std::fs::read(&nifti).unwrap();
    std::fs::remove_file(&nifti).unwrap();
    ok(sample(&out, &["-n", "2", "--seed", "3", "--resume"]));
    assert_eq!(
        std::fs::metadata(&first).unwrap().modified().unwrap(),
        written
    );
    assert_eq!(std::fs::read(&nifti).unwrap(), before);
    // Another seed gives another brain.
    let other = dir.path().join("other");
    ok(sample(&other, &["-n", "1", "--seed", "4"]));
    assert_ne!(
        std::fs::read(other.join("sample-0000.nii.gz")).unwrap(),
        std::fs::read(&first).unwrap()
    );
}

#[test]
fn convert_writes_a_folder_that_samples_like_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let bundle = bundle();
    ok(run(&[
        "convert",
        "--bundle",
        bundle.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
    ]));
    let raw = ["--raw", "1,0.7,0.7,0.5", "--steps", "3"];
    let from_bundle = dir.path().join("a");
    let from_model = dir.path().join("b");
    let mut args = vec!["sample", "--bundle", bundle.to_str().unwrap(), "--out"];
    args.push(from_bundle.to_str().unwrap());
    args.extend_from_slice(&raw);
    ok(run(&args));
    let mut args = vec!["sample", "--model", model.to_str().unwrap(), "--out"];
    args.push(from_model.to_str().unwrap());
    args.extend_from_slice(&raw);
    ok(run(&args));
    assert_eq!(
        std::fs::read(from_bundle.join("sample-0000.nii.gz")).unwrap(),
        std::fs::read(from_model.join("sample-0000.nii.gz")).unwrap()
    );
}

#[test]
fn bad_input_fails_before_any_sampling_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let err = failure(sample(&out, &["--scheduler", "euler"]));
    assert!(err.contains("euler"), "{err}");
    let err = failure(run(&[
        "sample",
        "--bundle",
        dir.path().to_str().unwrap(),
        "--raw",
        "1,0.5,0.5,0.5",
    ]));
    assert!(err.contains("configs/inference.json"), "{err}");
    let bundle = bundle();
    let err = failure(run(&[
        "sample",
        "--bundle",
        bundle.to_str().unwrap(),
        "--raw",
        "1,NaN,0.5,0.5",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(err.contains("age"), "{err}");
    let err = failure(run(&[
        "sample",
        "--bundle",
        bundle.to_str().unwrap(),
        "--age",
        "70",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(err.contains("--sex"), "{err}");
    // An output path below a regular file cannot be created.
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let err = failure(sample(&file.join("out"), &[]));
    assert!(err.contains("file/out"), "{err}");
}

/// The built-in demo model's folder in the source tree (the bytes compiled into the tool).
fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../brain-ldm/demo")
}

/// The `guidance_scale` of the demo model's model.json (1 when it has none).
fn demo_guidance() -> f64 {
    let text = std::fs::read_to_string(demo_dir().join("model.json")).unwrap();
    let config: brain_ldm::ModelFolderConfig = serde_json::from_str(&text).unwrap();
    config.guidance_scale.unwrap_or(1.0)
}

/// `brain-ldm sample` without a model folder: the built-in demo model.
fn sample_demo(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["sample", "--steps", "3", "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn without_a_model_the_demo_samples_with_open_covariates_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let stdout = ok(sample_demo(&out, &["--age", "70", "--sex", "F", "-n", "2"])).stdout;
    assert_eq!(
        String::from_utf8_lossy(&stdout).matches("wrote ").count(),
        2
    );
    let volume = brain_ldm_nifti::read(out.join("sample-0001.nii.gz")).unwrap();
    assert_eq!(volume.shape(), [40, 56, 40]);
    let png = image::open(out.join("sample-0001.png")).unwrap();
    assert_eq!((png.width(), png.height()), (56 + 40 + 40, 56));
    let sidecar = |dir: &Path, i: usize| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(format!("sample-{i:04}.json"))).unwrap())
            .unwrap()
    };
    let (first, second) = (sidecar(&out, 0), sidecar(&out, 1));
    assert_eq!(second["model"], brain_ldm::DEMO_MODEL_NAME);
    // Without --guidance-scale, the model's default.
    assert_eq!(second["guidance_scale"], demo_guidance());
    assert_eq!(second["covariates"]["sex"], "Female");
    assert_eq!(second["covariates"]["age_years"], 70.0);
    // The volumes left open were drawn (and recorded) per sample.
    for s in [&first, &second] {
        assert!(s["covariates"]["ventricular_volume_mm3"].as_f64().unwrap() > 0.0);
        assert!(s["covariates"]["brain_volume_mm3"].as_f64().unwrap() > 5e5);
    }

    // The same seed gives byte-identical files, whatever the batch size.
    let again = dir.path().join("again");
    ok(sample_demo(
        &again,
        &["--age", "70", "--sex", "F", "-n", "2", "--batch-size", "2"],
    ));
    for i in 0..2 {
        for ext in ["nii.gz", "png", "json"] {
            let name = format!("sample-{i:04}.{ext}");
            assert_eq!(
                std::fs::read(out.join(&name)).unwrap(),
                std::fs::read(again.join(&name)).unwrap(),
                "{name}"
            );
        }
    }

    // Guidance 1 (plain conditional) overrides the default: another brain unless the
    // default is 1.
    let plain = dir.path().join("plain");
    ok(sample_demo(
        &plain,
        &["--age", "70", "--sex", "F", "--guidance-scale", "1"],
    ));
    assert_eq!(sidecar(&plain, 0)["guidance_scale"], 1.0);
    assert_eq!(
        std::fs::read(plain.join("sample-0000.nii.gz")).unwrap()
            == std::fs::read(out.join("sample-0000.nii.gz")).unwrap(),
        demo_guidance() == 1.0
    );
    // Guidance 0 (unconditional) gives another brain than guidance 1, and says so.
    let unguided = dir.path().join("unguided");
    ok(sample_demo(
        &unguided,
        &[
            "--age",
            "70",
            "--sex",
            "F",
            "-n",
            "1",
            "--guidance-scale",
            "0",
        ],
    ));
    assert_eq!(sidecar(&unguided, 0)["guidance_scale"], 0.0);
    assert_ne!(
        std::fs::read(unguided.join("sample-0000.nii.gz")).unwrap(),
        std::fs::read(plain.join("sample-0000.nii.gz")).unwrap()
    );
    // --unconditional records the null condition the model saw.
    let unconditional = dir.path().join("unconditional");
    ok(sample_demo(&unconditional, &["--unconditional"]));
    let s = sidecar(&unconditional, 0);
    assert_eq!(s["covariates"], serde_json::Value::Null);
    assert_eq!(
        s["conditioning"],
        serde_json::json!([-1.0, -1.0, -1.0, -1.0])
    );
    assert_eq!(s["guidance_scale"], 0.0);
}

#[test]
fn guidance_on_a_model_without_null_condition_fails_before_sampling() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let err = failure(sample(&out, &["--guidance-scale", "2"]));
    assert!(
        err.contains("guidance scale 2") && err.contains("null_condition"),
        "{err}"
    );
    let bundle = bundle();
    let err = failure(run(&[
        "sample",
        "--bundle",
        bundle.to_str().unwrap(),
        "--unconditional",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(err.contains("unconditional sampling"), "{err}");
    // Nothing was written.
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
}

#[test]
fn a_wrong_number_of_raw_values_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let err = failure(sample_demo(&out, &["--raw", "1,0.5,0.5"]));
    assert!(err.contains("--raw takes exactly four values"), "{err}");
    assert!(err.contains("got 3"), "{err}");
    let err = failure(sample_demo(&out, &["--raw", "1,0.5", "--unconditional"]));
    assert!(err.contains("--unconditional"), "{err}");
}

#[test]
fn convert_dtype_f16_halves_the_weights_and_the_folder_samples() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = bundle();
    let (f32_dir, f16_dir) = (dir.path().join("f32"), dir.path().join("f16"));
    ok(run(&[
        "convert",
        "--bundle",
        bundle.to_str().unwrap(),
        "--out",
        f32_dir.to_str().unwrap(),
    ]));
    // A model folder converts too.
    ok(run(&[
        "convert",
        "--model",
        f32_dir.to_str().unwrap(),
        "--dtype",
        "f16",
        "--out",
        f16_dir.to_str().unwrap(),
    ]));
    let size = |d: &Path| std::fs::metadata(d.join("unet.safetensors")).unwrap().len();
    assert!(size(&f16_dir) * 10 < size(&f32_dir) * 6);
    let out = dir.path().join("s");
    ok(run(&[
        "sample",
        "--model",
        f16_dir.to_str().unwrap(),
        "--raw",
        "1,0.7,0.7,0.5",
        "--steps",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(out.join("sample-0000.nii.gz").is_file());
    let err = failure(run(&[
        "convert",
        "--model",
        f32_dir.to_str().unwrap(),
        "--dtype",
        "f8",
        "--out",
        f16_dir.to_str().unwrap(),
    ]));
    assert!(err.contains("f8"), "{err}");
}

#[test]
fn convert_records_a_default_guidance_scale_that_sampling_uses() {
    let dir = tempfile::tempdir().unwrap();
    let guided = dir.path().join("guided");
    ok(run(&[
        "convert",
        "--model",
        demo_dir().to_str().unwrap(),
        "--dtype",
        "f16",
        "--guidance-scale",
        "2",
        "--out",
        guided.to_str().unwrap(),
    ]));
    let text = std::fs::read_to_string(guided.join("model.json")).unwrap();
    let config: brain_ldm::ModelFolderConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(config.guidance_scale, Some(2.0));
    let out = dir.path().join("s");
    ok(run(&[
        "sample",
        "--model",
        guided.to_str().unwrap(),
        "--age",
        "70",
        "--steps",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]));
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("sample-0000.json")).unwrap()).unwrap();
    assert_eq!(sidecar["guidance_scale"], 2.0);

    // A model without a null condition (the bundle) cannot be given one: nothing is written.
    let bundle = bundle();
    let refused = dir.path().join("refused");
    let err = failure(run(&[
        "convert",
        "--bundle",
        bundle.to_str().unwrap(),
        "--guidance-scale",
        "2",
        "--out",
        refused.to_str().unwrap(),
    ]));
    assert!(
        err.contains("default guidance scale 2") && err.contains("null condition"),
        "{err}"
    );
    assert!(!refused.exists());
    // Nor does a model.json that claims one load.
    let plain = dir.path().join("plain");
    ok(run(&[
        "convert",
        "--bundle",
        bundle.to_str().unwrap(),
        "--out",
        plain.to_str().unwrap(),
    ]));
    let path = plain.join("model.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["guidance_scale"] = 2.0.into();
    std::fs::write(&path, json.to_string()).unwrap();
    let err = failure(run(&[
        "sample",
        "--model",
        plain.to_str().unwrap(),
        "--raw",
        "0,0.5,0.5,0.5",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(err.contains("default guidance scale 2"), "{err}");
}
