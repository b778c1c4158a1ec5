//! The `brain-ldm` binary: `info --json` against nibabel, `preprocess` on the template, and
//! non-zero exits with the typed error message on bad files.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_brain-ldm");
const TEMPLATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../data/mni152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
);

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// nibabel 5.4.2's view of the template, from
/// `/work/pyenv/bin/python -c "import nibabel as nib; img = nib.load('data/mni152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz'); d = img.get_fdata(); print(img.shape, img.header.get_zooms(), img.affine.tolist(), img.get_data_dtype(), nib.aff2axcodes(img.affine), repr(d.min()), repr(d.max()), repr(d.mean()))"`:
/// (197, 233, 189), (1.0, 1.0, 1.0), [[1, 0, 0, -98], [0, 1, 0, -134], [0, 0, 1, -72], [0, 0, 0, 1]],
/// uint8, ('R', 'A', 'S'), 0.0, 255.0, 38.438930276559084.
#[test]
fn info_json_equals_nibabel_on_the_template() {
    let j = json(&run(&["info", "--json", TEMPLATE]));
    assert_eq!(j["format_version"], 1);
    assert_eq!(j["shape"], serde_json::json!([197, 233, 189]));
    assert_eq!(j["voxel_sizes"], serde_json::json!([1.0, 1.0, 1.0]));
    assert_eq!(j["datatype"], "uint8");
    assert_eq!(j["orientation"], "RAS");
    assert_eq!(j["nifti_version"], 1);
    assert_eq!(j["affine_source"], "sform");
    let want = [
        [1.0, 0.0, 0.0, -98.0],
        [0.0, 1.0, 0.0, -134.0],
        [0.0, 0.0, 1.0, -72.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    for r in 0..4 {
        for c in 0..4 {
            assert!((j["affine"][r][c].as_f64().unwrap() - want[r][c]).abs() < 1e-6);
        }
    }
    for (key, want) in [("min", 0.0), ("max", 255.0), ("mean", 38.438930276559084)] {
        assert!(
            (j[key].as_f64().unwrap() - want).abs() < 1e-4,
            "{key}: {}",
            j[key]
        );
    }
    // The text form runs too.
    let text = run(&["info", TEMPLATE]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("RAS"));
}

#[test]
fn preprocess_writes_the_model_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("input.nii.gz");
    let o = run(&["preprocess", TEMPLATE, out.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let j = json(&run(&["info", "--json", out.to_str().unwrap()]));
    assert_eq!(j["shape"], serde_json::json!([160, 224, 160]));
    assert_eq!(j["orientation"], "RAS");
    assert_eq!(j["datatype"], "float32");
    assert_eq!(
        (j["min"].as_f64().unwrap(), j["max"].as_f64().unwrap()),
        (0.0, 1.0)
    );
    // Centred crop of 197×233×189 starts at voxel (18, 4, 14): the origin moves by that.
    assert_eq!(j["affine"][0][3], -80.0);
    assert_eq!(j["affine"][1][3], -130.0);
    assert_eq!(j["affine"][2][3], -58.0);

    // Other options: LPS at 2 mm, percentile scaling, int16.
    let out2 = dir.path().join("lps.nii");
    let o = run(&[
        "preprocess",
        TEMPLATE,
        out2.to_str().unwrap(),
        "--orientation",
        "LPS",
        "--spacing",
        "2",
        "--shape",
        "80,112,80",
        "--scale",
        "percentile",
        "--datatype",
        "int16",
    ]);
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let j = json(&run(&["info", "--json", out2.to_str().unwrap()]));
    assert_eq!(j["shape"], serde_json::json!([80, 112, 80]));
    assert_eq!(j["orientation"], "LPS");
    assert_eq!(j["voxel_sizes"], serde_json::json!([2.0, 2.0, 2.0]));
    assert_eq!(j["datatype"], "int16");
    assert!(j["max"].as_f64().unwrap() <= 1.0 + 1e-4);
}

#[test]
fn info_on_bad_files_exits_non_zero_with_the_typed_message() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "truncated.nii",
            vec![0x5c, 0x01, 0, 0, 1, 2, 3],
            "truncated header",
        ),
        ("not_nifti.nii", vec![b'x'; 400], "not a NIfTI file"),
        ("empty.nii.gz", vec![], "truncated header"),
    ];
    for (name, bytes, message) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let o = run(&["info", path.to_str().unwrap()]);
        assert!(!o.status.success(), "{name}");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains(message), "{name}: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{name}: {stderr}"
        );
    }
    // A NIfTI-1 header (little-endian) with datatype 3 (no such NIfTI type).
    let mut h = vec![0u8; 352];
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    for (n, d) in [3i16, 2, 2, 2, 1, 1, 1, 1].iter().enumerate() {
        h[40 + 2 * n..42 + 2 * n].copy_from_slice(&d.to_le_bytes());
    }
    h[70..72].copy_from_slice(&3i16.to_le_bytes());
    h[108..112].copy_from_slice(&352f32.to_le_bytes());
    h[344..348].copy_from_slice(b"n+1\0");
    h.extend_from_slice(&[0u8; 8]);
    let path = dir.path().join("dtype.nii");
    std::fs::write(&path, &h).unwrap();
    let o = run(&["info", "--json", path.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown datatype code 3"));
    // A missing file.
    let o = run(&["info", Path::new("/nonexistent/x.nii").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/x.nii"));
}
