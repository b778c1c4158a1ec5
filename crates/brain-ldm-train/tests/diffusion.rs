//! Stage 2 on a tiny synthetic cohort: the loss falls, a split run resumes exactly, the
//! latent cache is reused only while it is valid, a manifest dataset trains, and the output
//! folder loads as a sampling pipeline; a file's missing keys take the defaults.

mod common;

use brain_ldm_train::config::DataConfig;
use brain_ldm_train::{
    AutoencoderTrainConfig, AutoencoderTrainer, DiffusionTrainConfig, DiffusionTrainer, TrainError,
    LATENT_CACHE,
};
use candle_core::Device;
use common::TINY_UNET;

fn setup(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = dir.join("data");
    common::write_cohort(&data, 4, [16, 16, 16]);
    let ae_cfg = AutoencoderTrainConfig::from_toml(
        &format!("steps = 3\nadversarial_weight = 0.0\n{}", common::TINY_AE),
        "ae.toml".as_ref(),
    )
    .unwrap();
    let ae = dir.join("ae");
    AutoencoderTrainer::new(ae_cfg, &data, &ae, false, &Device::Cpu)
        .unwrap()
        .run(None, &mut |_| {})
        .unwrap();
    (data, ae)
}

fn config(extra: &str) -> DiffusionTrainConfig {
    DiffusionTrainConfig::from_toml(&format!("{extra}\n{TINY_UNET}"), "ldm.toml".as_ref()).unwrap()
}

#[test]
fn an_empty_file_gives_the_default_configurations() {
    // Keys a file leaves out take the documented defaults, the flattened shared ones too.
    let path = "train.toml".as_ref();
    assert_eq!(
        DiffusionTrainConfig::from_toml("", path).unwrap(),
        DiffusionTrainConfig::default()
    );
    assert_eq!(
        AutoencoderTrainConfig::from_toml("", path).unwrap(),
        AutoencoderTrainConfig::default()
    );
}

#[test]
fn diffusion_loss_halves_and_the_folder_samples() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ae) = setup(dir.path());
    let cfg = config("seed = 2\nsteps = 80\nbatch_size = 4\ncheckpoint_every = 0\nema_decay = 0.0\ncondition_dropout = 0.1\n[optimizer]\nlr = 3e-3\n[scheduler]\nschedule = \"scaled_linear_beta\"\nbeta_start = 0.0015\nbeta_end = 0.0205\nprediction_type = \"epsilon\"\nclip_sample = false\n");
    let out = dir.path().join("ldm");
    let mut t = DiffusionTrainer::new(cfg, &data, &ae, &out, false, &Device::Cpu).unwrap();
    let mut losses = Vec::new();
    t.run(None, &mut |r| losses.push(r.losses[0].1)).unwrap();
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&losses[..10]), mean(&losses[losses.len() - 10..]));
    eprintln!(
        "diffusion loss: first 10 steps {first:.4}, last 10 {last:.4}, scale factor {}",
        t.scale_factor()
    );
    assert!(last <= 0.5 * first, "loss {first} → {last}");

    let pipeline = brain_ldm::LatentDiffusionPipeline::open(&out, &Device::Cpu).unwrap();
    assert_eq!(pipeline.latent_shape, [3, 8, 8, 8]);
    // Trained with dropout: the null condition (the default, zeros) and the 4 training
    // subjects' normalised covariates are in model.json.
    assert_eq!(pipeline.null_condition, Some([0.0; 4]));
    let rows = pipeline.training_covariates.as_ref().unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows
        .iter()
        .all(|r| (r[0] == 0.0 || r[0] == 1.0) && r[1..].iter().all(|v| (0.0..=1.0).contains(v))));
    let settings = brain_ldm::SamplingSettings {
        steps: 3,
        ..Default::default()
    };
    let mut scheduler = pipeline.scheduler(&settings).unwrap();
    let cov = brain_ldm::Covariates {
        sex: brain_ldm::Sex::Male,
        age_years: 55.0,
        ventricular_volume_mm3: 10500.0,
        brain_volume_mm3: 1.45e6,
    };
    let cond = pipeline.covariate_scaling.normalise(&cov).unwrap();
    let image = pipeline
        .sample(
            scheduler.as_mut(),
            &cond,
            0,
            0,
            &Device::Cpu,
            &mut |_, _| {},
        )
        .unwrap();
    assert_eq!(image.dims(), [1, 1, 16, 16, 16]);
}

#[test]
fn diffusion_split_run_with_resume_equals_straight_run() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ae) = setup(dir.path());
    let cfg = config("seed = 5\nsteps = 4\nbatch_size = 2\ngrad_accumulation = 2\ncheckpoint_every = 0\nema_decay = 0.9\ncondition_dropout = 0.5\n[optimizer]\nlr = 1e-3\nwarmup_steps = 1\ndecay = \"cosine\"\ngrad_clip_norm = 1.0\n");
    let straight = dir.path().join("a");
    let mut a =
        DiffusionTrainer::new(cfg.clone(), &data, &ae, &straight, false, &Device::Cpu).unwrap();
    a.run(None, &mut |_| {}).unwrap();
    let split = dir.path().join("b");
    DiffusionTrainer::new(cfg.clone(), &data, &ae, &split, false, &Device::Cpu)
        .unwrap()
        .run(Some(2), &mut |_| {})
        .unwrap();
    let mut b = DiffusionTrainer::new(cfg, &data, &ae, &split, true, &Device::Cpu).unwrap();
    assert_eq!(b.step(), 2);
    b.run(None, &mut |_| {}).unwrap();
    let (wa, wb) = (a.weights().unwrap(), b.weights().unwrap());
    for (k, ta) in &wa {
        let diff = (ta - &wb[k])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0, "{k} differs after resume");
    }
    assert_eq!(
        std::fs::read(straight.join("unet.safetensors")).unwrap(),
        std::fs::read(split.join("unet.safetensors")).unwrap()
    );
}

#[test]
fn bad_datasets_are_typed_errors_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ae) = setup(dir.path());
    let tsv = data.join("participants.tsv");
    let good = std::fs::read_to_string(&tsv).unwrap();
    let out = dir.path().join("x");
    let open = || {
        DiffusionTrainer::new(config("steps = 1"), &data, &ae, &out, false, &Device::Cpu)
            .err()
            .unwrap()
            .to_string()
    };
    std::fs::write(&tsv, good.replace("\tage\t", "\tyears\t")).unwrap();
    assert!(open().contains("no column `age`"), "{}", open());
    std::fs::write(&tsv, good.replacen("\t53\t", "\tNaN\t", 1)).unwrap();
    assert!(open().contains("row 3 column `age`"), "{}", open());
    std::fs::write(&tsv, good.replacen("\tF\t", "\tX\t", 1)).unwrap();
    assert!(open().contains("column `sex`"), "{}", open());
    std::fs::write(&tsv, good.clone()).unwrap();
    common::write_cohort(&dir.path().join("odd"), 1, [16, 16, 8]);
    std::fs::copy(
        dir.path().join("odd/sub-000000/anat/sub-000000_T1w.nii.gz"),
        data.join("sub-000002/anat/sub-000002_T1w.nii.gz"),
    )
    .unwrap();
    assert!(
        open().contains("sub-000002_T1w.nii.gz: image shape [16, 16, 8]"),
        "{}",
        open()
    );
    let err = DiffusionTrainConfig::from_toml("stepz = 3", "ldm.toml".as_ref())
        .unwrap_err()
        .to_string();
    assert!(err.contains("stepz"), "{err}");
    let err = DiffusionTrainConfig::from_toml(
        &format!("{TINY_UNET}in_channel = 3\n"),
        "ldm.toml".as_ref(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("model.in_channel"), "{err}");
    assert!(!out.exists());
}

/// The demo's configurations (`scripts/train-demo.sh`) parse and validate, and a UNet option
/// that is not written back when off (`context_embedding = false`) is not an unknown key.
#[test]
fn demo_configurations_parse() {
    let configs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/demo");
    AutoencoderTrainConfig::from_file(configs.join("ae.toml")).unwrap();
    for name in ["ldm.toml", "ldm-continue.toml"] {
        let ldm = DiffusionTrainConfig::from_file(configs.join(name)).unwrap();
        assert!(ldm.model.context_embedding, "{name}");
    }
    let off = DiffusionTrainConfig::from_toml(
        &format!("{TINY_UNET}context_embedding = false\n"),
        "ldm.toml".as_ref(),
    )
    .unwrap();
    assert!(!off.model.context_embedding);
}

#[test]
fn without_dropout_the_model_folder_has_no_null_condition() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ae) = setup(dir.path());
    let cfg =
        config("steps = 1\ncondition_dropout = 0.0\nnull_condition = [-1.0, -1.0, -1.0, -1.0]\n");
    let t = DiffusionTrainer::new(
        cfg,
        &data,
        &ae,
        &dir.path().join("ldm"),
        false,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(t.model_config().null_condition, None);
    assert_eq!(
        t.model_config().training_covariates.as_ref().unwrap().len(),
        4
    );
    let cfg =
        config("steps = 1\ncondition_dropout = 0.2\nnull_condition = [-1.0, -1.0, -1.0, -1.0]\n");
    let t = DiffusionTrainer::new(
        cfg,
        &data,
        &ae,
        &dir.path().join("ldm2"),
        false,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(t.model_config().null_condition, Some([-1.0; 4]));
}

#[test]
fn the_latent_cache_is_reused_until_the_autoencoder_or_an_image_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ae) = setup(dir.path());
    let cfg = config("seed = 3\nsteps = 2\ncheckpoint_every = 0\nvalidation_fraction = 0.25\n");
    let out = dir.path().join("ldm");
    // Each construction with the (done, total) calls of its encoding.
    let open = |resume: bool| {
        let mut calls = Vec::new();
        let t = DiffusionTrainer::new_with_progress(
            cfg.clone(),
            &data,
            &ae,
            &out,
            resume,
            &Device::Cpu,
            &mut |done, total| calls.push((done, total)),
        )
        .unwrap();
        (t, calls)
    };
    let encoded_all = [(1, 4), (2, 4), (3, 4), (4, 4)];

    // The first construction encodes the 3 training and 1 validation subjects and writes
    // the cache.
    let (mut t, calls) = open(false);
    assert_eq!(calls, encoded_all);
    assert!(!t.latents_cached());
    assert!(out.join(LATENT_CACHE).is_file());
    assert_eq!(
        t.model_config().training_covariates.as_ref().unwrap().len(),
        3
    );
    t.run(Some(1), &mut |_| {}).unwrap();
    let val = t.validation_loss().unwrap().unwrap();

    // Resuming reads it: nothing encoded, the same latents (the same validation loss bits,
    // the model being restored).
    let (t, calls) = open(true);
    assert!(calls.is_empty(), "{calls:?}");
    assert!(t.latents_cached());
    assert_eq!(
        t.validation_loss().unwrap().unwrap().to_bits(),
        val.to_bits()
    );

    // A fresh run into a folder holding a run is refused before any encoding.
    let err = DiffusionTrainer::new_with_progress(
        cfg.clone(),
        &data,
        &ae,
        &out,
        false,
        &Device::Cpu,
        &mut |_, _| panic!("encoded before checking the run folder"),
    )
    .err()
    .unwrap();
    assert!(matches!(err, TrainError::OutputExists { .. }), "{err}");

    // A fresh run where only the cache (and the abandoned run's files) is left reuses it,
    // and starts a new log.
    std::fs::remove_file(out.join("train_config.json")).unwrap();
    std::fs::remove_file(out.join("latest")).unwrap();
    std::fs::remove_dir_all(out.join("checkpoints")).unwrap();
    let (mut t, calls) = open(false);
    assert!(calls.is_empty(), "{calls:?}");
    t.run(Some(1), &mut |_| {}).unwrap();
    assert_eq!(
        t.validation_loss().unwrap().unwrap().to_bits(),
        val.to_bits()
    );
    let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");

    // A retrained autoencoder (one step more: same configuration and file size, other
    // weights) invalidates it; the new cache is then reused.
    let ae_cfg = AutoencoderTrainConfig::from_toml(
        &format!("steps = 4\nadversarial_weight = 0.0\n{}", common::TINY_AE),
        "ae.toml".as_ref(),
    )
    .unwrap();
    let weights = ae.join("autoencoder.safetensors");
    let before = std::fs::read(&weights).unwrap();
    AutoencoderTrainer::new(ae_cfg, &data, &ae, true, &Device::Cpu)
        .unwrap()
        .run(None, &mut |_| {})
        .unwrap();
    let after = std::fs::read(&weights).unwrap();
    assert_eq!(before.len(), after.len());
    assert_ne!(before, after);
    let (t, calls) = open(true);
    assert_eq!(calls, encoded_all);
    assert!(!t.latents_cached());
    assert_ne!(
        t.validation_loss().unwrap().unwrap().to_bits(),
        val.to_bits()
    );
    let (mut t, calls) = open(true);
    assert!(calls.is_empty(), "{calls:?}");
    // Its model folder pairs the UNet with the autoencoder the latents now come from.
    t.run(Some(2), &mut |_| {}).unwrap();
    assert_eq!(
        std::fs::read(out.join("autoencoder.safetensors")).unwrap(),
        after
    );

    // So does a rewritten image.
    std::fs::copy(
        data.join("sub-000000/anat/sub-000000_T1w.nii.gz"),
        data.join("sub-000001/anat/sub-000001_T1w.nii.gz"),
    )
    .unwrap();
    assert_eq!(open(true).1, encoded_all);
    assert!(open(true).1.is_empty());

    // An unreadable cache is encoded again and replaced, not an error.
    std::fs::write(out.join(LATENT_CACHE), b"not safetensors").unwrap();
    assert_eq!(open(true).1, encoded_all);
    assert!(open(true).1.is_empty());
}

#[test]
fn a_manifest_dataset_trains_stage_2() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ae) = setup(dir.path());
    let csv = dir.path().join("lists").join("cohort.csv");
    let columns = DataConfig {
        sex_column: "Sex".into(),
        age_column: "Age".into(),
        ventricular_volume_column: "VV".into(),
        brain_volume_column: "BV".into(),
        image_column: "t1".into(),
        ..DataConfig::default()
    };
    common::write_manifest(&csv, &data, ",", "../data/", &columns);
    let cfg = config(
        "seed = 4\nsteps = 2\ncheckpoint_every = 0\nvalidation_fraction = 0.25\nvalidate_every = 1\n[data]\nsex_column = \"Sex\"\nage_column = \"Age\"\nventricular_volume_column = \"VV\"\nbrain_volume_column = \"BV\"\nimage_column = \"t1\"\n",
    );
    let out = dir.path().join("ldm");
    let mut t = DiffusionTrainer::new(cfg, &csv, &ae, &out, false, &Device::Cpu).unwrap();
    assert_eq!(
        t.model_config().training_covariates.as_ref().unwrap().len(),
        3
    );
    let mut reports = Vec::new();
    t.run(None, &mut |r| reports.push(r.clone())).unwrap();
    assert_eq!(reports.len(), 2);
    assert!(reports
        .iter()
        .all(|r| r.losses[0].1.is_finite() && r.validation.is_some_and(f64::is_finite)));
    brain_ldm::LatentDiffusionPipeline::open(&out, &Device::Cpu).unwrap();
}

#[test]
fn train_step_is_one_step_of_run() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ae) = setup(dir.path());
    let cfg = config("seed = 6\nsteps = 2\nbatch_size = 2\ngrad_accumulation = 2\ncheckpoint_every = 0\nema_decay = 0.5\ncondition_dropout = 0.5\n[optimizer]\nlr = 1e-3\ngrad_clip_norm = 1.0\n");
    let cpu = Device::Cpu;
    let mut a = DiffusionTrainer::new(
        cfg.clone(),
        &data,
        &ae,
        &dir.path().join("run"),
        false,
        &cpu,
    )
    .unwrap();
    let mut reports = Vec::new();
    a.run(None, &mut |r| reports.push(r.clone())).unwrap();
    let out = dir.path().join("steps");
    let mut b = DiffusionTrainer::new(cfg, &data, &ae, &out, false, &cpu).unwrap();
    for report in &reports {
        let got = b.train_step().unwrap();
        assert_eq!((got.lr, &got.losses), (report.lr, &report.losses));
    }
    assert_eq!(b.step(), 2);
    let (wa, wb) = (a.weights().unwrap(), b.weights().unwrap());
    for (k, ta) in &wa {
        let values = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(values(ta), values(&wb[k]), "{k}");
    }
    // train_step writes no model.
    assert!(!out.join("unet.safetensors").exists() && !out.join("log.jsonl").exists());
}
