//! `brain-ldm sample` and `brain-ldm convert` on the shrunk public bundle
//! (tests/fixtures/bundle-small): the files, their contents, `--resume`, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_brain-ldm");

fn bundle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bundle-small")
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

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
