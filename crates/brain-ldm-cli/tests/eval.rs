//! `brain-ldm eval` on small synthetic NIfTI sets written to a tempdir: the report equals the
//! library's metrics on the same arrays, pairs are seeded, and bad input fails naming the
//! file (or directory) at fault.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use brain_ldm_metrics::{ms_ssim, psnr, ssim, MsSsimConfig, SsimConfig};
use brain_ldm_nifti::{affine::IDENTITY, DataType, Volume, WriteOptions};
use ndarray::Array3;

const BIN: &str = env!("CARGO_BIN_EXE_brain-ldm");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "stderr: {}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A deterministic volume in [0, 0.9]: a smooth pattern that depends on `seed` plus noise.
fn volume(seed: u64, n: usize) -> Array3<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let f = 0.1 + 0.05 * seed as f32;
    Array3::from_shape_fn((n, n, n), |(i, j, k)| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let noise = (s >> 40) as f32 / (1u64 << 24) as f32;
        let smooth = ((i as f32 * f).sin() * (j as f32 * 0.2).cos() + (k as f32 * f).cos()) / 4.0;
        (0.5 * (smooth + 0.5) + 0.4 * noise).clamp(0.0, 0.9)
    })
}

fn write(path: &Path, data: &Array3<f32>) {
    WriteOptions::new()
        .datatype(DataType::F32)
        .write(&Volume::new(data.clone(), IDENTITY), path)
        .unwrap();
}

/// `dir/<name>` for each volume, written as float32 NIfTI (exact round trip).
fn write_set(dir: &Path, names: &[&str], vols: &[Array3<f32>]) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    names
        .iter()
        .zip(vols)
        .map(|(name, v)| {
            let p = dir.join(name);
            write(&p, v);
            p
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn eval_json_equals_the_library_on_the_same_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let (real_dir, fake_dir) = (dir.path().join("real"), dir.path().join("fake"));
    let real: Vec<Array3<f32>> = (0..4).map(|i| volume(i, 32)).collect();
    // Reconstructions: real + 0.1 everywhere, so MSE = 0.01 and PSNR = 20 dB exactly (up to
    // f32 rounding of the stored values).
    let fake: Vec<Array3<f32>> = real.iter().map(|v| v.mapv(|x| x + 0.1)).collect();
    // Names out of order on purpose: the tool sorts by name; .nii and .nii.gz both count.
    write_set(
        &real_dir,
        &["b.nii.gz", "a.nii", "c.nii", "d.nii.gz"],
        &[
            real[1].clone(),
            real[0].clone(),
            real[2].clone(),
            real[3].clone(),
        ],
    );
    write_set(
        &fake_dir,
        &["a_rec.nii", "b_rec.nii", "c_rec.nii", "d_rec.nii"],
        &fake,
    );
    std::fs::write(real_dir.join("notes.txt"), "not a volume").unwrap();

    let o = run(&[
        "eval",
        "--real",
        s(&real_dir),
        "--fake",
        s(&fake_dir),
        "--paired",
        "--json",
        "--kernel-size",
        "2",
        "--seed",
        "7",
    ]);
    let j = json(&o);
    let err = stderr(&o);
    assert!(err.contains("seed 7"), "{err}");
    assert!(err.contains("diversity real: 6/6"), "{err}");
    assert!(err.contains("diversity fake: 6/6"), "{err}");
    assert!(err.contains("paired: 4/4"), "{err}");
    assert_eq!(j["format_version"], 1);
    assert_eq!(j["seed"], 7);
    assert_eq!(j["real_files"].as_array().unwrap().len(), 4);
    assert!(j["real_files"][0].as_str().unwrap().ends_with("a.nii"));

    // Diversity: 4 volumes have 6 distinct pairs; all are used, each scored as the library does.
    let ms = MsSsimConfig::default().with_kernel_size(2);
    for (key, set) in [("real_diversity", &real), ("fake_diversity", &fake)] {
        let d = &j[key];
        let pairs = d["pairs"].as_array().unwrap();
        assert_eq!(pairs.len(), 6, "{key}");
        let mut sum = 0.0;
        for p in pairs {
            let (a, b) = (
                p["a"].as_u64().unwrap() as usize,
                p["b"].as_u64().unwrap() as usize,
            );
            let want = ms_ssim(&set[a], &set[b], &ms).unwrap();
            let got = p["ms_ssim"].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-12,
                "{key} ({a},{b}): {got} vs {want}"
            );
            sum += want;
        }
        let mean = d["mean_ms_ssim"].as_f64().unwrap();
        assert!((mean - sum / 6.0).abs() < 1e-12);
        assert!(mean > 0.0 && mean < 1.0, "{key}: {mean}");
        assert_eq!(d["config"]["ms_ssim"]["kernel_size"], 2);
    }

    // Paired: file i of --real against file i of --fake, in name order.
    let paired = &j["paired"];
    let pairs = paired["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 4);
    for (i, p) in pairs.iter().enumerate() {
        assert!(p["real"]
            .as_str()
            .unwrap()
            .contains(["a.nii", "b.nii.gz", "c.nii", "d.nii.gz"][i]));
        let want_ssim = ssim(&fake[i], &real[i], &SsimConfig::default()).unwrap();
        assert!((p["ssim"].as_f64().unwrap() - want_ssim).abs() < 1e-12);
        let want_psnr = psnr(&fake[i], &real[i], 1.0).unwrap();
        assert!((p["psnr"].as_f64().unwrap() - want_psnr).abs() < 1e-9);
        assert!((p["psnr"].as_f64().unwrap() - 20.0).abs() < 1e-3, "{p}");
        assert!((p["mse"].as_f64().unwrap() - 0.01).abs() < 1e-6, "{p}");
        assert!((p["mae"].as_f64().unwrap() - 0.1).abs() < 1e-6, "{p}");
    }
    assert!((paired["mean_psnr"].as_f64().unwrap() - 20.0).abs() < 1e-3);

    // The text form runs and names the numbers.
    let o = run(&[
        "eval",
        "--real",
        s(&real_dir),
        "--fake",
        s(&fake_dir),
        "--paired",
        "--kernel-size",
        "2",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "--quiet: {}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("diversity real: MS-SSIM"), "{text}");
    assert!(text.contains("PSNR 20.00 dB"), "{text}");
}

#[test]
fn eval_pairs_are_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let set_dir = dir.path().join("set");
    let vols: Vec<Array3<f32>> = (0..8).map(|i| volume(i, 32)).collect();
    let names: Vec<String> = (0..8).map(|i| format!("s{i}.nii")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    write_set(&set_dir, &names, &vols);
    let pairs_of = |seed: &str| {
        let j = json(&run(&[
            "eval",
            "--real",
            s(&set_dir),
            "--fake",
            s(&set_dir),
            "--json",
            "--quiet",
            "--kernel-size",
            "2",
            "--pairs",
            "5",
            "--seed",
            seed,
        ]));
        // The same set on both sides with the same seed: the same pairs and scores.
        assert_eq!(j["real_diversity"]["pairs"], j["fake_diversity"]["pairs"]);
        let pairs: Vec<(u64, u64)> = j["real_diversity"]["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["a"].as_u64().unwrap(), p["b"].as_u64().unwrap()))
            .collect();
        assert_eq!(pairs.len(), 5);
        pairs
    };
    let (a, b, c) = (pairs_of("1"), pairs_of("1"), pairs_of("2"));
    assert_eq!(a, b, "same seed, same pairs");
    // The library's draw for 8 volumes, 5 pairs: the CLI passes the seed through.
    assert_eq!(
        a,
        brain_ldm_metrics::sample_pairs(8, 5, 1)
            .unwrap()
            .into_iter()
            .map(|(x, y)| (x as u64, y as u64))
            .collect::<Vec<_>>()
    );
    assert_ne!(a, c, "seeds 1 and 2 drew the same 5 of 28 pairs");
    // More pairs than the set has: a clear error.
    let o = run(&[
        "eval",
        "--real",
        s(&set_dir),
        "--fake",
        s(&set_dir),
        "--kernel-size",
        "2",
        "--pairs",
        "29",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("has only 28"), "{}", stderr(&o));
}

/// Runs `eval` expecting failure; returns stderr.
fn fails(args: &[&str]) -> String {
    let o = run(args);
    assert!(!o.status.success(), "{args:?} succeeded");
    stderr(&o)
}

#[test]
fn eval_bad_input_fails_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let good = root.join("good");
    write_set(&good, &["a.nii", "b.nii"], &[volume(0, 32), volume(1, 32)]);

    // Missing and empty directories.
    let missing = root.join("missing");
    let e = fails(&["eval", "--real", s(&missing), "--fake", s(&good)]);
    assert!(e.contains(s(&missing)) && e.contains("--real"), "{e}");
    let empty = root.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = fails(&["eval", "--real", s(&good), "--fake", s(&empty)]);
    assert!(e.contains(s(&empty)) && e.contains("no NIfTI files"), "{e}");

    // Volumes too small for the MS-SSIM window at the coarsest scale: the size needed.
    let e = fails(&["eval", "--real", s(&good), "--fake", s(&good)]);
    assert!(
        e.contains("needs at least 64") && e.contains("32 voxels"),
        "{e}"
    );

    // Different shapes within a set: both files named.
    let mixed = root.join("mixed");
    let paths = write_set(&mixed, &["a.nii", "b.nii"], &[volume(0, 32), volume(1, 33)]);
    let e = fails(&[
        "eval",
        "--real",
        s(&mixed),
        "--fake",
        s(&good),
        "--kernel-size",
        "2",
    ]);
    assert!(e.contains(s(&paths[0])) && e.contains(s(&paths[1])), "{e}");
    assert!(e.contains("shape mismatch"), "{e}");

    // A corrupt file: its path and the reader's reason.
    let corrupt = root.join("corrupt");
    write_set(&corrupt, &["a.nii"], &[volume(0, 32)]);
    let bad = corrupt.join("b.nii");
    std::fs::write(&bad, vec![b'x'; 400]).unwrap();
    let e = fails(&[
        "eval",
        "--real",
        s(&corrupt),
        "--fake",
        s(&good),
        "--kernel-size",
        "2",
    ]);
    assert!(e.contains(s(&bad)) && e.contains("not a NIfTI file"), "{e}");

    // A NaN voxel.
    let nan = root.join("nan");
    let mut v = volume(1, 32);
    v[[3, 4, 5]] = f32::NAN;
    let paths = write_set(&nan, &["a.nii", "b.nii"], &[volume(0, 32), v]);
    let e = fails(&[
        "eval",
        "--real",
        s(&good),
        "--fake",
        s(&nan),
        "--kernel-size",
        "2",
    ]);
    assert!(e.contains(s(&paths[1])), "{e}");

    // One volume: no pairs.
    let one = root.join("one");
    write_set(&one, &["a.nii"], &[volume(0, 32)]);
    let e = fails(&[
        "eval",
        "--real",
        s(&one),
        "--fake",
        s(&good),
        "--kernel-size",
        "2",
    ]);
    assert!(
        e.contains("at least 2 volumes") && e.contains("--real"),
        "{e}"
    );

    // --paired with different counts.
    let three = root.join("three");
    write_set(
        &three,
        &["a.nii", "b.nii", "c.nii"],
        &[volume(0, 32), volume(1, 32), volume(2, 32)],
    );
    let e = fails(&[
        "eval",
        "--real",
        s(&good),
        "--fake",
        s(&three),
        "--paired",
        "--no-diversity",
    ]);
    assert!(e.contains("has 2") && e.contains("has 3"), "{e}");

    // --paired with shapes that differ between the sets: both files named.
    let big = root.join("big");
    let paths = write_set(&big, &["a.nii", "b.nii"], &[volume(0, 33), volume(1, 33)]);
    let e = fails(&[
        "eval",
        "--real",
        s(&good),
        "--fake",
        s(&big),
        "--paired",
        "--no-diversity",
    ]);
    assert!(
        e.contains(s(&paths[0])) && e.contains(s(&good.join("a.nii"))),
        "{e}"
    );
}

#[test]
fn eval_warns_once_per_file_outside_the_data_range() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("uint8_range");
    let vols: Vec<Array3<f32>> = (0..3).map(|i| volume(i, 32).mapv(|v| v * 255.0)).collect();
    let paths = write_set(&set, &["a.nii", "b.nii", "c.nii"], &vols);
    let args = [
        "eval",
        "--real",
        s(&set),
        "--fake",
        s(&set),
        "--kernel-size",
        "2",
    ];
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    for p in &paths {
        let line = format!("warning: {}: intensities span", s(p));
        assert_eq!(err.matches(&line).count(), 1, "{err}");
    }
    // With the range stated, no warning.
    let o = run(&[&args[..], &["--data-range", "255"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}
