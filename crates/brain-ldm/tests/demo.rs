//! The built-in demo model follows its covariates: a larger requested ventricular volume gives
//! a larger measured one on average (issue 12's check at CI size; `brain-ldm fidelity` runs the
//! full experiment, docs/fidelity.md); the training-subject samples ask for the covariates of
//! distinct training subjects; cohort images go through its autoencoder and are measured
//! before and after.

use brain_ldm::fidelity::{Experiment, Fidelity, FidelityConfig};
use brain_ldm::synth::bids::{write_dataset, DatasetOptions};
use brain_ldm::synth::VoxelSize;
use brain_ldm::{LatentDiffusionPipeline, SamplingSettings};
use candle_core::Device;

#[test]
fn demo_ventricles_grow_with_the_requested_volume() {
    let device = Device::Cpu;
    let pipeline = LatentDiffusionPipeline::demo(&device).unwrap();
    let config = FidelityConfig {
        points: 2,
        seeds: 4,
        pairs: 1,
        diversity_samples: Some(2),
        subjects: 4,
        sampling: SamplingSettings {
            steps: 20,
            ..SamplingSettings::default()
        },
        batch_size: 8,
        ..FidelityConfig::default()
    };
    let outcome = Fidelity::new(&pipeline, config, None)
        .unwrap()
        .run(&device, &mut |_| {})
        .unwrap();
    let sweep = &outcome.report.ventricular_volume;
    assert_eq!(sweep.failures, 0, "every generated brain is measurable");
    let [low, high] = [&sweep.rows[0], &sweep.rows[1]].map(|row| row.ventricular.mean.unwrap());
    assert!(
        sweep.rows[1].requested > sweep.rows[0].requested && high > 1.2 * low,
        "requested {} → measured {low:.0} mm³, requested {} → measured {high:.0} mm³",
        sweep.rows[0].requested,
        sweep.rows[1].requested
    );

    let training = pipeline.training_covariates.as_deref().unwrap();
    let mut drawn: Vec<usize> = outcome
        .measurements
        .iter()
        .filter(|m| m.experiment == Experiment::TrainingSubjects)
        .map(|m| {
            let c = m.conditioning.unwrap().0;
            training.iter().position(|row| *row == c).unwrap()
        })
        .collect();
    drawn.sort_unstable();
    drawn.dedup();
    assert_eq!(drawn.len(), 4, "four distinct training subjects");
    let subjects = outcome.report.training_subjects.as_ref().unwrap();
    assert_eq!((subjects.samples, subjects.failures), (4, 0));
    assert_eq!(subjects.ventricular_fit.n, 4);
}

/// The smallest fidelity run: one step, the fewest samples each part allows.
fn smallest_run(reconstructions: Option<usize>) -> FidelityConfig {
    FidelityConfig {
        points: 2,
        seeds: 1,
        pairs: 1,
        diversity_samples: Some(2),
        subjects: 0,
        reconstructions,
        sampling: SamplingSettings {
            steps: 1,
            ..SamplingSettings::default()
        },
        batch_size: 8,
        ..FidelityConfig::default()
    }
}

#[test]
fn cohort_images_are_measured_before_and_after_the_autoencoder() {
    let device = Device::Cpu;
    let pipeline = LatentDiffusionPipeline::demo(&device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cohort = dir.path().join("cohort");
    write_dataset(
        &DatasetOptions {
            n: 3,
            voxel_size: VoxelSize::Mm4,
            seed: 0,
            out: cohort.clone(),
            resume: false,
        },
        &|_| {},
    )
    .unwrap();

    // By default every image of a cohort this small is reconstructed.
    let fidelity = Fidelity::new(&pipeline, smallest_run(None), Some(&cohort)).unwrap();
    assert_eq!(fidelity.reconstructions(), 3);
    let outcome = fidelity.run(&device, &mut |_| {}).unwrap();
    let report = outcome.report.reconstruction.as_ref().unwrap();
    assert_eq!((report.images, report.failures), (3, 0));
    let mut files: Vec<&str> = outcome
        .reconstructions
        .iter()
        .map(|r| r.file.as_str())
        .collect();
    files.sort_unstable();
    files.dedup();
    assert_eq!(files.len(), 3, "three distinct images");
    for r in &outcome.reconstructions {
        // The demo autoencoder reconstructs its own cohort's images closely, and keeps their
        // ventricles (docs/fidelity.md: about half their measured volume).
        assert!(r.l1 > 0.0 && r.l1 < 0.08, "{}: L1 {}", r.file, r.l1);
        let [before, after] =
            [&r.original, &r.reconstruction].map(|v| v.as_ref().unwrap().ventricular_volume);
        assert!(
            after > 0.2 * before && after < 1.5 * before,
            "{}: {before} → {after}",
            r.file
        );
    }
    assert_eq!(report.ventricular_fit.n, 3);
    let out = dir.path().join("fidelity");
    let provenance = brain_ldm::fidelity::Provenance {
        model: "demo".into(),
        command: String::new(),
    };
    outcome.write(&out, &provenance).unwrap();
    let csv = std::fs::read_to_string(out.join("reconstructions.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.starts_with("file,ventricular_volume_mm3,"), "{csv}");
    let md = std::fs::read_to_string(out.join("fidelity.md")).unwrap();
    assert!(md.contains("## Autoencoder reconstructions"), "{md}");

    // Asked for explicitly: 2 … the cohort's size, and only with a cohort.
    let err = |reconstructions, cohort: Option<&std::path::Path>| {
        Fidelity::new(&pipeline, smallest_run(Some(reconstructions)), cohort)
            .err()
            .unwrap()
            .to_string()
    };
    assert!(err(1, Some(&cohort)).contains("reconstructions = 1"));
    assert!(err(4, Some(&cohort)).contains("has 3 images"));
    assert!(err(2, None).contains("needs a cohort folder"));
    let zero = Fidelity::new(&pipeline, smallest_run(Some(0)), Some(&cohort)).unwrap();
    assert_eq!(zero.reconstructions(), 0);

    // Images of another shape: left out by default, an error when asked for.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    for i in 0..2 {
        let volume = brain_ldm::nifti::Volume::new(
            ndarray::Array3::zeros((16, 16, 16)),
            brain_ldm::nifti::affine::IDENTITY,
        );
        brain_ldm::nifti::write(&volume, other.join(format!("{i}.nii.gz"))).unwrap();
    }
    let fidelity = Fidelity::new(&pipeline, smallest_run(None), Some(&other)).unwrap();
    assert_eq!(fidelity.reconstructions(), 0);
    let message = err(2, Some(&other));
    assert!(
        message.contains("[16, 16, 16]") && message.contains("[40, 56, 40]"),
        "{message}"
    );
}
