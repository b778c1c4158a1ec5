//! `brain-ldm fidelity` on the shrunk public bundle (tests/fixtures/bundle-small: random
//! weights, 32×48×32 images) with a 4-subject `brain-ldm synth` cohort: every output file
//! is written and parses, and bad input fails before any sampling; and on the bundle
//! converted to a model folder with training covariates: the training-subject samples ask
//! for their covariates and leave the other parts as they are.

mod common;

use common::{bundle, ok, run};
use std::path::Path;

/// Runs `fidelity` on the small bundle with `extra` arguments; expects a failure whose
/// message contains `message`, and no output folder.
fn fails_early(dir: &Path, extra: &[&str], message: &str) {
    let out_dir = dir.join("never");
    let bundle = bundle();
    let mut args = vec![
        "fidelity",
        "--model",
        bundle.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--steps",
        "2",
    ];
    args.extend_from_slice(extra);
    let out = run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a failure for {extra:?}");
    assert!(stderr.contains(message), "{extra:?}: {stderr}");
    assert!(!out_dir.exists(), "{extra:?} wrote {}", out_dir.display());
}

#[test]
fn fidelity_writes_report_tables_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    let cohort = dir.path().join("cohort");
    ok(run(&[
        "synth",
        "--n",
        "4",
        "--voxel-size",
        "4",
        "--out",
        cohort.to_str().unwrap(),
    ]));
    let out = dir.path().join("fidelity");
    let bundle = bundle();
    let stdout = ok(run(&[
        "fidelity",
        "--model",
        bundle.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--cohort",
        cohort.to_str().unwrap(),
        "--points",
        "2",
        "--seeds",
        "2",
        "--pairs",
        "3",
        "--steps",
        "2",
        "--batch-size",
        "3",
        "--seed",
        "5",
        "--subjects",
        "3",
    ]))
    .stdout;
    let stdout = String::from_utf8_lossy(&stdout);
    assert!(stdout.contains("ventricular volume sweep: r ="), "{stdout}");
    assert!(
        stdout.contains("3 samples conditioned on covariates uniform over the scaling range"),
        "{stdout}"
    );
    assert!(stdout.contains("wrote"), "{stdout}");

    // fidelity.json: every part, with the numbers' structure.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("fidelity.json")).unwrap()).unwrap();
    assert_eq!(json["format_version"], 1);
    assert_eq!(json["model"], bundle.to_str().unwrap());
    assert!(json["command"]
        .as_str()
        .unwrap()
        .starts_with("brain-ldm fidelity"));
    // 4 grids × 2 points × 2 seeds, 3 training subjects, plus the fewest samples with
    // 2 × 3 pairs: 4.
    assert_eq!(json["settings"]["samples"], 23);
    assert_eq!(json["settings"]["diversity_samples"], 4);
    assert_eq!(json["settings"]["subjects"], 3);
    assert_eq!(json["settings"]["seed"], 5);
    assert!(json["settings"]["fixed"]["source"]
        .as_str()
        .unwrap()
        .contains("midpoints"));
    for sweep in ["ventricular_volume", "brain_volume", "age", "extrapolation"] {
        let rows = json[sweep]["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{sweep}");
        assert!(json[sweep]["ventricular_fit"]["n"].as_u64().unwrap() <= 4);
    }
    let extrapolation = &json["extrapolation"]["rows"];
    assert_eq!(extrapolation[0]["requested_normalised"], -0.5);
    assert_eq!(extrapolation[1]["requested_normalised"], 1.9);
    // The bundle's training range is the paper's: 6995.68 … 171375 mm³.
    let top = extrapolation[1]["requested"].as_f64().unwrap();
    assert!(
        (top - (6995.68 + 1.9 * (171375.0 - 6995.68))).abs() < 1.0,
        "{top}"
    );
    // The bundle stores no training covariates: uniform over the scaling range.
    let subjects = &json["training_subjects"];
    assert_eq!(subjects["conditioning"], "scaling_range");
    assert_eq!(subjects["samples"], 3);
    let measured = subjects["ventricular_fit"]["n"].as_u64().unwrap();
    assert_eq!(measured + subjects["failures"].as_u64().unwrap(), 3);
    assert_eq!(subjects["brain_fit"]["n"].as_u64().unwrap(), measured);
    assert_eq!(subjects["requested_age"]["n"].as_u64().unwrap(), measured);
    let diversity = &json["diversity"];
    assert_eq!(diversity["conditioning"], "scaling_range");
    assert_eq!(diversity["generated"]["pairs"].as_array().unwrap().len(), 3);
    assert_eq!(diversity["cohort"]["images"], 4);
    assert_eq!(
        diversity["cohort"]["report"]["pairs"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let cohort_ms_ssim = diversity["cohort"]["report"]["mean_ms_ssim"]
        .as_f64()
        .unwrap();
    assert!(
        cohort_ms_ssim > 0.0 && cohort_ms_ssim < 1.0,
        "{cohort_ms_ssim}"
    );
    // Both sets with the same settings: 32 voxels (the bundle's smallest axis) fit 3 scales.
    assert_eq!(diversity["ms_ssim"]["weights"].as_array().unwrap().len(), 3);
    assert_eq!(diversity["ms_ssim"]["kernel_size"], 4);

    // measurements.csv: a header and one row per generated brain, 17 fields each; noise
    // streams 0, 1 for the grid columns, 2 … 5 for diversity, 6 … 8 for the subjects.
    let csv = std::fs::read_to_string(out.join("measurements.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 24);
    assert!(lines[0].starts_with("experiment,row,column,seed,index"));
    assert!(lines[1].starts_with("ventricular_volume,0,0,5,0,F,"));
    for (i, line) in lines[17..20].iter().enumerate() {
        let start = format!("training_subjects,0,{i},5,{},", 6 + i);
        assert!(line.starts_with(&start), "{line}");
        let fields: Vec<&str> = line.split(',').collect();
        assert!(fields[5] == "F" || fields[5] == "M", "{line}");
        for normalised in &fields[10..13] {
            let x: f64 = normalised.parse().unwrap();
            assert!((0.0..1.0).contains(&x), "{line}");
        }
    }
    assert!(lines[23].starts_with("diversity,0,3,5,5,"));
    for line in &lines[1..] {
        if !line.ends_with('"') {
            assert_eq!(line.split(',').count(), 17, "{line}");
        }
    }

    // fidelity.md: the tables and the figures they link to.
    let md = std::fs::read_to_string(out.join("fidelity.md")).unwrap();
    for part in [
        "## Ventricular volume",
        "## Brain volume",
        "## Age",
        "## Extrapolation",
        "## Covariates uniform over the scaling range",
        "## Diversity",
        "| requested ventricular volume (normalised) |",
        "| ventricular volume sweep: r (measured vs requested) |",
        "| ventricular volume, covariates uniform over the scaling range: r |",
        "| brain volume, covariates uniform over the scaling range: r |",
        "0.972",
        "0.6536",
        "--points 2",
    ] {
        assert!(md.contains(part), "fidelity.md lacks {part:?}:\n{md}");
    }
    assert!(md.contains("3 scales"), "{md}");
    // One PNG per grid: 2 rows × 2 seeds of three mid-slices (48 + 32 + 32 wide, 48 tall,
    // enlarged 3× to reach 112 rows), 2-pixel lines between cells.
    for name in ["ventricular_volume", "brain_volume", "age", "extrapolation"] {
        assert!(md.contains(&format!("({name}.png)")), "{name}");
        let png = image::open(out.join(format!("{name}.png"))).unwrap();
        assert_eq!(
            (png.width(), png.height()),
            (2 * 3 * 112 + 2, 2 * 3 * 48 + 2),
            "{name}"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn fidelity_rejects_bad_input_before_sampling() {
    let dir = tempfile::tempdir().unwrap();
    fails_early(dir.path(), &["--points", "1"], "points = 1");
    fails_early(dir.path(), &["--seeds", "0"], "seeds = 0");
    fails_early(dir.path(), &["--pairs", "0"], "pairs = 0");
    fails_early(dir.path(), &["--batch-size", "0"], "batch_size = 0");
    fails_early(dir.path(), &["--subjects", "1"], "subjects = 1");
    fails_early(
        dir.path(),
        &["--diversity-samples", "3", "--pairs", "4"],
        "only 3 distinct pairs",
    );
    // The bundle was trained without conditioning dropout: no guidance.
    fails_early(
        dir.path(),
        &["--guidance-scale", "3"],
        "conditioning dropout",
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails_early(
        dir.path(),
        &["--cohort", empty.to_str().unwrap()],
        "no images",
    );
    // Three images have three distinct pairs.
    let cohort = dir.path().join("three");
    for i in 0..3 {
        let anat = cohort.join(format!("sub-{i:06}/anat"));
        std::fs::create_dir_all(&anat).unwrap();
        let volume = brain_ldm_nifti::Volume::new(
            ndarray::Array3::zeros((16, 16, 16)),
            brain_ldm_nifti::affine::IDENTITY,
        );
        brain_ldm_nifti::write(&volume, anat.join(format!("sub-{i:06}_T1w.nii.gz"))).unwrap();
    }
    fails_early(
        dir.path(),
        &["--cohort", cohort.to_str().unwrap(), "--pairs", "4"],
        "has 3 images, only 3 distinct pairs",
    );

    // A model folder with missing files.
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    let out_dir = dir.path().join("never");
    let out = run(&[
        "fidelity",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(model.to_str().unwrap()), "{stderr}");
    assert!(!out_dir.exists());
}

/// The rows of `measurements.csv` in `dir` whose experiment is `experiment`, split into fields.
fn csv_rows(dir: &Path, experiment: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join("measurements.csv"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(&format!("{experiment},")))
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn training_subjects_ask_for_training_covariates_and_can_be_left_out() {
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
    // Five training subjects (normalised sex, age, ventricular and brain volume).
    let training: Vec<[f32; 4]> = (0..5)
        .map(|i| {
            let x = i as f32 / 8.0;
            [(i % 2) as f32, 0.2 + x, 0.1 + x, 0.7 - x]
        })
        .collect();
    let config = model.join("model.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["training_covariates"] = serde_json::to_value(&training).unwrap();
    std::fs::write(&config, serde_json::to_string(&json).unwrap()).unwrap();

    let fidelity = |name: &str, subjects: &str| {
        let out = dir.path().join(name);
        ok(run(&[
            "fidelity",
            "--model",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--points",
            "2",
            "--seeds",
            "1",
            "--pairs",
            "1",
            "--diversity-samples",
            "2",
            "--steps",
            "2",
            "--subjects",
            subjects,
        ]));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("fidelity.json")).unwrap())
                .unwrap();
        let md = std::fs::read_to_string(out.join("fidelity.md")).unwrap();
        (out, report, md)
    };

    // Four of five subjects: drawn without replacement, so four different training rows.
    let (with, report, md) = fidelity("with", "4");
    assert_eq!(report["settings"]["samples"], 8 + 4 + 2);
    let subjects = &report["training_subjects"];
    assert_eq!(subjects["samples"], 4);
    assert_eq!(
        subjects["conditioning"]["training_covariates"]["subjects"],
        5
    );
    let rows = csv_rows(&with, "training_subjects");
    assert_eq!(rows.len(), 4);
    let mut requested = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        // Noise streams after the grid column (0) and the two diversity samples (1, 2).
        assert_eq!(
            (row[2].as_str(), row[4].as_str()),
            (&*i.to_string(), &*(3 + i).to_string())
        );
        let normalised: Vec<f32> = row[9..13].iter().map(|x| x.parse().unwrap()).collect();
        let subject = training
            .iter()
            .position(|t| t.as_slice() == normalised.as_slice())
            .unwrap_or_else(|| panic!("{row:?} is no training subject"));
        assert_eq!(row[5], if subject % 2 == 1 { "M" } else { "F" });
        requested.push(subject);
    }
    requested.sort_unstable();
    requested.dedup();
    assert_eq!(requested.len(), 4, "drawn without replacement");
    assert!(
        md.contains("## Covariates of random training subjects"),
        "{md}"
    );
    assert!(md.contains("(of 5 stored with the model, drawn without replacement)"));
    assert!(md.contains("| ventricular volume, covariates of random training subjects: r |"));
    assert!(md.contains("| brain volume, covariates of random training subjects: r |"));

    // --subjects 0 leaves the part out and every other sample as it was.
    let (without, report, md) = fidelity("without", "0");
    assert_eq!(report["settings"]["samples"], 8 + 2);
    assert_eq!(report["settings"]["subjects"], 0);
    assert!(report["training_subjects"].is_null());
    assert!(csv_rows(&without, "training_subjects").is_empty());
    assert!(!md.contains("training subjects: r"), "{md}");
    assert!(!md.contains("## Covariates of random"), "{md}");
    for experiment in ["ventricular_volume", "age", "diversity"] {
        assert_eq!(
            csv_rows(&with, experiment),
            csv_rows(&without, experiment),
            "{experiment}"
        );
    }
}
