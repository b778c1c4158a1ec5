//! `[data.preprocess]`: a cohort stored at 1 mm, 15³ (no axis divisible by the autoencoder's
//! downsampling) is reoriented to LAS, resampled to 2 mm and padded to 8×8×12 as it is read;
//! both stages train on that grid, stage 2's model folder is written on it, invalid options
//! are named before training, and a changed option is a changed configuration (resume) and a
//! stale latent cache.

mod common;

use std::path::{Path, PathBuf};

use brain_ldm_nifti::affine::IDENTITY;
use brain_ldm_nifti::Volume;
use brain_ldm_train::config::DataConfig;
use brain_ldm_train::data::{batch_items, load_preprocessed, Dataset};
use brain_ldm_train::{
    AutoencoderTrainConfig, AutoencoderTrainer, DiffusionTrainConfig, DiffusionTrainer, TrainError,
};
use candle_core::{Device, Tensor};
use common::{TINY_AE, TINY_UNET};

const PREPROCESS: &str = "[data.preprocess]\norientation = \"LAS\"\nspacing = [2.0, 2.0, 2.0]\nshape = [8, 8, 12]\nscaling = \"min_max\"\n";

/// The grid of the preprocessed images, derived by hand: i flipped (LAS) about the 15-voxel
/// field of view (x = 14 − i), every axis sampled every 2 mm from voxel 0 (15 → 8 voxels),
/// k padded from 8 to 12 with 2 voxels before.
const GRID: [[f64; 4]; 4] = [
    [-2.0, 0.0, 0.0, 14.0],
    [0.0, 2.0, 0.0, 0.0],
    [0.0, 0.0, 2.0, -4.0],
    [0.0, 0.0, 0.0, 1.0],
];

fn ae_config(extra: &str, preprocess: &str) -> AutoencoderTrainConfig {
    let text =
        format!("adversarial_weight = 0.0\ncheckpoint_every = 0\n{extra}\n{preprocess}\n{TINY_AE}");
    AutoencoderTrainConfig::from_toml(&text, "ae.toml".as_ref()).unwrap()
}

fn ldm_config(extra: &str, preprocess: &str) -> DiffusionTrainConfig {
    let text = format!("checkpoint_every = 0\n{extra}\n{preprocess}\n{TINY_UNET}");
    DiffusionTrainConfig::from_toml(&text, "ldm.toml".as_ref()).unwrap()
}

fn cohort(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    common::write_cohort(&data, 4, [15, 15, 15]);
    data
}

fn image(data: &Path, i: usize) -> PathBuf {
    data.join(format!("sub-{i:06}/anat/sub-{i:06}_T1w.nii.gz"))
}

fn assert_grid(affine: &[[f64; 4]; 4]) {
    for (row, want) in affine.iter().zip(&GRID) {
        for (a, b) in row.iter().zip(want) {
            assert!((a - b).abs() < 1e-9, "affine {affine:?}, expected {GRID:?}");
        }
    }
}

#[test]
fn stage_1_trains_on_the_preprocessed_grid_and_resumes_only_with_the_same_options() {
    let dir = tempfile::tempdir().unwrap();
    let data = cohort(dir.path());
    let cpu = Device::Cpu;

    // As stored, the 15³ images do not fit the autoencoder.
    let err = AutoencoderTrainer::new(
        ae_config("steps = 1", ""),
        &data,
        &dir.path().join("raw"),
        false,
        &cpu,
    )
    .err()
    .unwrap();
    assert!(matches!(err, TrainError::ImageShape { .. }), "{err}");

    // Preprocessed, the dataset has the new grid.
    let cfg = ae_config("seed = 3\nsteps = 2\n[optimizer]\nlr = 1e-3", PREPROCESS);
    let ds = Dataset::open(&data, &cfg.data, false).unwrap();
    assert_eq!(ds.image_shape, [8, 8, 12]);
    assert_grid(&ds.affine);

    // run() reads its batches through the preprocessing: train_step on images preprocessed
    // here gives the same losses and weights.
    let mut a =
        AutoencoderTrainer::new(cfg.clone(), &data, &dir.path().join("a"), false, &cpu).unwrap();
    let mut reports = Vec::new();
    a.run(None, &mut |r| reports.push(r.clone())).unwrap();
    assert_eq!(reports.len(), 2);
    let options = cfg.data.preprocess_options().unwrap().unwrap();
    let mut b =
        AutoencoderTrainer::new(cfg.clone(), &data, &dir.path().join("b"), false, &cpu).unwrap();
    for (step, report) in (0u64..).zip(&reports) {
        let i = batch_items(4, 1, 3, step).1[0];
        let x = load_preprocessed(&image(&data, i), Some(&options), &cpu).unwrap();
        assert_eq!(x.dims(), [1, 1, 8, 8, 12]);
        // Min-max scaled.
        let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (lo, hi) = v
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        assert_eq!((lo, hi), (0.0, 1.0));
        let got = b.train_step(&[x]).unwrap();
        assert_eq!((got.lr, &got.losses), (report.lr, &report.losses));
    }
    let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (wa, wb) = (a.weights().unwrap(), b.weights().unwrap());
    for (k, ta) in &wa {
        assert_eq!(values(ta), values(&wb[k]), "{k}");
    }

    // Validation images are preprocessed too (a 15³ image would not reconstruct to 15³).
    let cfg_val = ae_config(
        "steps = 1\nvalidation_fraction = 0.25\nvalidate_every = 1",
        PREPROCESS,
    );
    let out = dir.path().join("val");
    let mut t = AutoencoderTrainer::new(cfg_val.clone(), &data, &out, false, &cpu).unwrap();
    let mut val = None;
    t.run(None, &mut |r| val = r.validation).unwrap();
    assert!(val.is_some_and(f64::is_finite), "{val:?}");

    // The options are stored with the run; resuming with others is refused, naming them.
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train_config.json")).unwrap())
            .unwrap();
    assert_eq!(stored["data"]["preprocess"]["orientation"], "LAS");
    assert!(stored["data"]["preprocess"].get("interpolation").is_none());
    let resume =
        |cfg: AutoencoderTrainConfig| AutoencoderTrainer::new(cfg, &data, &out, true, &cpu);
    for (preprocess, key) in [
        (
            PREPROCESS.replace("[2.0, 2.0, 2.0]", "[2.0, 2.0, 1.0]"),
            "`data.preprocess.spacing`",
        ),
        (
            format!("{PREPROCESS}interpolation = \"nearest\"\n"),
            "`data.preprocess.interpolation`",
        ),
    ] {
        let cfg = ae_config(
            "steps = 2\nvalidation_fraction = 0.25\nvalidate_every = 1",
            &preprocess,
        );
        let err = resume(cfg).err().unwrap();
        assert!(
            matches!(err, TrainError::Resume { .. }) && err.to_string().contains(key),
            "{err}"
        );
    }
    let mut cfg = cfg_val;
    cfg.common.steps = 2;
    let mut t = resume(cfg).unwrap();
    assert_eq!(t.step(), 1);
    t.run(None, &mut |_| {}).unwrap();
    assert_eq!(t.step(), 2);
}

#[test]
fn stage_2_model_folder_follows_the_preprocessed_grid_and_the_cache_the_options() {
    let dir = tempfile::tempdir().unwrap();
    let data = cohort(dir.path());
    let cpu = Device::Cpu;
    let ae = dir.path().join("ae");
    AutoencoderTrainer::new(ae_config("steps = 1", PREPROCESS), &data, &ae, false, &cpu)
        .unwrap()
        .run(None, &mut |_| {})
        .unwrap();

    let open = |preprocess: &str, out: &Path| {
        let mut encoded = 0;
        let t = DiffusionTrainer::new_with_progress(
            ldm_config("seed = 1\nsteps = 1", preprocess),
            &data,
            &ae,
            out,
            false,
            &cpu,
            &mut |_, _| encoded += 1,
        );
        (t, encoded)
    };
    let out = dir.path().join("ldm");
    let (t, encoded) = open(PREPROCESS, &out);
    let mut t = t.unwrap();
    assert_eq!(encoded, 4);
    t.run(None, &mut |_| {}).unwrap();
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
    assert_eq!(model["latent_shape"], serde_json::json!([3, 4, 4, 6]));
    let affine: [[f64; 4]; 4] = serde_json::from_value(model["image_affine"].clone()).unwrap();
    assert_grid(&affine);
    let pipeline = brain_ldm::LatentDiffusionPipeline::open(&out, &cpu).unwrap();
    assert_eq!(pipeline.latent_shape, [3, 4, 4, 6]);

    // As stored the images do not fit: the options are what made the run possible.
    let err = open("", &dir.path().join("raw")).0.err().unwrap();
    assert!(matches!(err, TrainError::ImageShape { .. }), "{err}");

    // The latent cache holds the options: a fresh run where only the cache is left reuses
    // it with the same options and encodes again with another (same shape, other values).
    let fresh = || std::fs::remove_file(out.join("train_config.json")).unwrap();
    let restart = || {
        fresh();
        std::fs::remove_file(out.join("latest")).unwrap();
        std::fs::remove_dir_all(out.join("checkpoints")).unwrap();
    };
    restart();
    let (t, encoded) = open(PREPROCESS, &out);
    assert!(t.unwrap().latents_cached());
    assert_eq!(encoded, 0);
    fresh();
    let nearest = format!("{PREPROCESS}interpolation = \"nearest\"\n");
    let (t, encoded) = open(&nearest, &out);
    assert!(!t.unwrap().latents_cached());
    assert_eq!(encoded, 4);
    fresh();
    let (t, encoded) = open(&nearest, &out);
    assert!(t.unwrap().latents_cached());
    assert_eq!(encoded, 0);
}

#[test]
fn shapes_must_agree_after_preprocessing() {
    let dir = tempfile::tempdir().unwrap();
    let data = cohort(dir.path());
    // Subject 2 has another field of view: 13 voxels along i.
    let odd = image(&data, 2);
    brain_ldm_nifti::write(
        &Volume::new(ndarray::Array3::from_elem((13, 15, 15), 0.5), IDENTITY),
        &odd,
    )
    .unwrap();
    let data_config = |preprocess: &str| {
        let text = format!("{preprocess}\n{TINY_AE}");
        AutoencoderTrainConfig::from_toml(&text, "ae.toml".as_ref())
            .unwrap()
            .data
    };
    let shape_error = |cfg: &DataConfig| {
        let err = Dataset::open(&data, cfg, true).unwrap_err();
        let TrainError::ImageShape { path, got, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(path, &odd, "{err}");
        got.clone()
    };
    // As stored, and resampled without a target shape (13 → 7 voxels at 2 mm, 15 → 8): the
    // file is named with its shape.
    assert_eq!(shape_error(&DataConfig::default()), [13, 15, 15]);
    let resampled = data_config("[data.preprocess]\nspacing = [2.0, 2.0, 2.0]\n");
    let err = Dataset::open(&data, &resampled, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("after preprocessing"), "{err}");
    assert_eq!(shape_error(&resampled), [7, 8, 8]);
    // With a target shape every image is cropped or padded to it.
    let ds = Dataset::open(&data, &data_config(PREPROCESS), true).unwrap();
    assert_eq!(ds.image_shape, [8, 8, 12]);
    assert_grid(&ds.affine);
}

#[test]
fn invalid_options_are_named_before_training() {
    let parse_ae = |table: &str| {
        AutoencoderTrainConfig::from_toml(
            &format!("[data.preprocess]\n{table}\n"),
            "ae.toml".as_ref(),
        )
    };
    let parse_ldm = |table: &str| {
        DiffusionTrainConfig::from_toml(
            &format!("[data.preprocess]\n{table}\n"),
            "ldm.toml".as_ref(),
        )
    };
    for (table, key) in [
        ("orientation = \"XYZ\"", "data.preprocess.orientation"),
        ("orientation = \"LRS\"", "data.preprocess.orientation"),
        ("spacing = [2.0, 0.0, 2.0]", "data.preprocess.spacing"),
        ("spacing = [2.0, -1.0, 2.0]", "data.preprocess.spacing"),
        ("shape = [8, 0, 8]", "data.preprocess.shape"),
        (
            "scaling = { percentiles = [50.0, 10.0] }",
            "data.preprocess.scaling.percentiles",
        ),
        (
            "preset = \"brain_ldm\"\norientation = \"up\"",
            "data.preprocess.orientation",
        ),
    ] {
        for err in [parse_ae(table).unwrap_err(), parse_ldm(table).unwrap_err()] {
            let TrainError::InvalidConfig { key: got, .. } = &err else {
                panic!("{table}: {err}");
            };
            assert_eq!(got, key, "{table}: {err}");
        }
    }
    // Unknown keys and values are named too.
    for (table, named) in [
        ("spacng = [2.0, 2.0, 2.0]", "spacng"),
        ("preset = \"paper\"", "paper"),
        ("interpolation = \"cubic\"", "cubic"),
        ("scaling = \"z_score\"", "z_score"),
        ("scaling = { percentile = [0.5, 99.5] }", "percentile"),
    ] {
        for err in [parse_ae(table).unwrap_err(), parse_ldm(table).unwrap_err()] {
            assert!(
                matches!(err, TrainError::Config { .. }) && err.to_string().contains(named),
                "{table}: {err}"
            );
        }
    }

    // The preset is PreprocessOptions::brain_ldm(), each key given replacing its value.
    let options = |table: &str| {
        parse_ae(table)
            .unwrap()
            .data
            .preprocess_options()
            .unwrap()
            .unwrap()
    };
    let paper = brain_ldm_nifti::preprocess::PreprocessOptions::brain_ldm();
    assert_eq!(options("preset = \"brain_ldm\""), paper);
    let demo = options("preset = \"brain_ldm\"\nspacing = [4.0, 4.0, 4.0]\nshape = [40, 56, 40]\nscaling = \"none\"\ninterpolation = \"nearest\"");
    assert_eq!(demo.orientation, paper.orientation);
    assert_eq!(
        (demo.spacing, demo.shape),
        (Some([4.0; 3]), Some([40, 56, 40]))
    );
    assert_eq!(demo.scaling, None);
    assert_eq!(
        demo.interpolation,
        brain_ldm_nifti::preprocess::Interpolation::Nearest
    );
    assert_eq!(
        options("orientation = \"lpi\"\nscaling = { percentiles = [0.5, 99.5] }"),
        brain_ldm_nifti::preprocess::PreprocessOptions {
            orientation: Some("LPI".parse().unwrap()),
            spacing: None,
            interpolation: brain_ldm_nifti::preprocess::Interpolation::Linear,
            shape: None,
            scaling: Some(brain_ldm_nifti::preprocess::IntensityScaling::Percentile {
                lower: 0.5,
                upper: 99.5
            }),
        }
    );
    // No table: images as stored.
    let none = AutoencoderTrainConfig::from_toml("", "ae.toml".as_ref()).unwrap();
    assert_eq!(none.data.preprocess, None);
    assert_eq!(none.data.preprocess_options().unwrap(), None);
}
