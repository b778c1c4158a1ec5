//! `brain-ldm synth` and `brain-ldm volumes` on a tiny 4 mm cohort, and their errors on bad
//! input (non-zero exit, the typed message, nothing written).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use brain_ldm_synth::volumetry::measure_file;

const BIN: &str = env!("CARGO_BIN_EXE_brain-ldm");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn fails_with(out: &Output, message: &str) {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(message), "stderr: {err}");
}

fn t1(root: &Path, i: usize) -> String {
    root.join(format!("sub-{i:06}/anat/sub-{i:06}_T1w.nii.gz"))
        .to_string_lossy()
        .into_owned()
}

#[test]
fn synth_resume_then_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cohort");
    let out = root.to_str().unwrap();
    let args = ["synth", "--n", "2", "--voxel-size", "4", "--seed", "5"];
    let stdout = ok(&run(&[&args[..], &["--out", out]].concat()));
    assert!(stdout.contains("2 subjects generated, 0 already complete, seed 5"));
    let tsv = fs::read_to_string(root.join("participants.tsv")).unwrap();
    assert_eq!(tsv.lines().count(), 3);
    assert!(tsv.lines().nth(2).unwrap().starts_with("sub-000001\t"));
    let desc = fs::read_to_string(root.join("dataset_description.json")).unwrap();
    assert!(desc.contains("\"Seed\": 5"), "{desc}");

    // Without --resume a non-empty directory is refused; with it one subject is added.
    let more = [
        "synth",
        "--n",
        "3",
        "--voxel-size",
        "4",
        "--seed",
        "5",
        "--out",
        out,
    ];
    fails_with(&run(&more), "is not empty");
    let stdout = ok(&run(&[&more[..], &["--resume"]].concat()));
    assert!(stdout.contains("1 subjects generated, 2 already complete"));
    // Resuming with another seed is refused.
    fails_with(
        &run(&[
            "synth",
            "--n",
            "3",
            "--voxel-size",
            "4",
            "--out",
            out,
            "--resume",
        ]),
        "Seed",
    );

    // `volumes` prints the library's measurement of each file, in the order given.
    let files = [t1(&root, 2), t1(&root, 0)];
    let csv = ok(&run(&["volumes", &files[0], &files[1]]));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "file,ventricular_volume,brain_volume,icv");
    assert_eq!(lines.len(), 3);
    for (line, file) in lines[1..].iter().zip(&files) {
        let v = measure_file(Path::new(file)).unwrap();
        let want = format!(
            "{file},{:.1},{:.1},{:.1}",
            v.ventricular_volume, v.brain_volume, v.icv
        );
        assert_eq!(*line, want);
    }
}

#[test]
fn synth_rejects_bad_input_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let o = out.to_str().unwrap();
    fails_with(&run(&["synth", "--n", "0", "--out", o]), "at least 1");
    fails_with(
        &run(&["synth", "--n", "1", "--voxel-size", "3", "--out", o]),
        "unknown voxel size 3 mm",
    );
    assert!(!out.exists(), "nothing may be written");
    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    fails_with(
        &run(&["synth", "--n", "1", "--out", file.to_str().unwrap()]),
        "exists and is not a directory",
    );
    let below_file = file.join("ds");
    fails_with(
        &run(&["synth", "--n", "1", "--out", below_file.to_str().unwrap()]),
        "is not writable",
    );
}

#[test]
fn volumes_rejects_a_4d_or_missing_file_before_measuring() {
    let dir = tempfile::tempdir().unwrap();
    // A 4×4×4×2 float32 NIfTI-1: header from brain-ldm-nifti, then 128 ones.
    let four_d = dir.path().join("4d.nii");
    let mut header = brain_ldm_nifti::NiftiHeader::default();
    header.dim = [4, 4, 4, 4, 2, 1, 1, 1];
    let mut bytes = header.to_bytes();
    bytes.extend((0..128).flat_map(|_| 1f32.to_le_bytes()));
    fs::write(&four_d, bytes).unwrap();
    let out = run(&["volumes", four_d.to_str().unwrap()]);
    fails_with(&out, "expected a 3D image, got shape [4, 4, 4, 2]");
    assert!(out.stdout.is_empty(), "no CSV may be printed");
    let missing = dir.path().join("missing.nii.gz");
    let out = run(&["volumes", missing.to_str().unwrap()]);
    fails_with(&out, "missing.nii.gz");
    assert!(out.stdout.is_empty());
    fails_with(&run(&["volumes"]), "required");
}
