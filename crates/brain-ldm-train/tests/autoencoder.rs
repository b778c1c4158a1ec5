//! Stage 1 on a tiny synthetic cohort: it learns, checkpoints, and resumes exactly; one
//! `train_step` is one step of `run`.

mod common;

use brain_ldm_train::data::{batch_items, load_image};
use brain_ldm_train::{AutoencoderTrainConfig, AutoencoderTrainer, TrainError};
use candle_core::{DType, Device, Tensor};

fn config(extra: &str) -> AutoencoderTrainConfig {
    let text = format!("{extra}\n{}", common::TINY_AE);
    AutoencoderTrainConfig::from_toml(&text, "ae.toml".as_ref()).unwrap()
}

#[test]
fn autoencoder_l1_falls_below_0_05() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_cohort(&data, 4, [16, 16, 16]);
    let cfg = config(
        "seed = 1\nsteps = 150\nbatch_size = 2\ncheckpoint_every = 0\nkl_weight = 1e-6\nadversarial_weight = 0.0\n[optimizer]\nlr = 2e-3\n",
    );
    let out = dir.path().join("ae");
    let mut t = AutoencoderTrainer::new(cfg, &data, &out, false, &Device::Cpu).unwrap();
    let mut l1 = Vec::new();
    t.run(None, &mut |r| l1.push(r.losses[1].1)).unwrap();
    let last: f64 = l1[l1.len() - 5..].iter().sum::<f64>() / 5.0;
    eprintln!("L1: first {:.4}, mean of the last 5 steps {last:.4}", l1[0]);
    assert!(last < 0.05, "L1 {last}");
    assert!(
        out.join("autoencoder.safetensors").is_file() && out.join("autoencoder.json").is_file()
    );
    let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 150);
    // The final checkpoint redrew the loss curves.
    let png = image::open(out.join("loss.png")).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (900, 500));
}

#[test]
fn split_run_with_resume_equals_straight_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_cohort(&data, 3, [16, 16, 16]);
    // Adversarial terms from step 2, accumulation, clipping, warm-up and EMA all take part.
    let cfg = config(
        "seed = 3\nsteps = 6\nbatch_size = 1\ngrad_accumulation = 2\nema_decay = 0.9\nadversarial_start_step = 2\nadversarial_weight = 0.1\ncheckpoint_every = 0\n[optimizer]\nlr = 1e-3\nwarmup_steps = 2\ngrad_clip_norm = 0.5\n[discriminator]\nchannels = 4\nnum_layers_d = 2\n",
    );
    let straight = dir.path().join("straight");
    let mut a =
        AutoencoderTrainer::new(cfg.clone(), &data, &straight, false, &Device::Cpu).unwrap();
    a.run(None, &mut |_| {}).unwrap();
    let split = dir.path().join("split");
    let mut b = AutoencoderTrainer::new(cfg.clone(), &data, &split, false, &Device::Cpu).unwrap();
    b.run(Some(3), &mut |_| {}).unwrap();
    drop(b);
    let mut b = AutoencoderTrainer::new(cfg.clone(), &data, &split, true, &Device::Cpu).unwrap();
    assert_eq!(b.step(), 3);
    b.run(None, &mut |_| {}).unwrap();
    let (wa, wb) = (a.weights().unwrap(), b.weights().unwrap());
    assert_eq!(wa.len(), wb.len());
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
    let disc = |p: &std::path::Path| std::fs::read(p.join("discriminator.safetensors")).unwrap();
    assert_eq!(disc(&straight), disc(&split));
    let la = std::fs::read_to_string(straight.join("log.jsonl")).unwrap();
    let lb = std::fs::read_to_string(split.join("log.jsonl")).unwrap();
    let losses = |l: &str| {
        l.lines()
            .map(|x| {
                let v: serde_json::Value = serde_json::from_str(x).unwrap();
                v["loss"].as_f64().unwrap()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&la), losses(&lb));
    // A second fresh run into the same folder is refused; a changed config cannot resume.
    assert!(AutoencoderTrainer::new(cfg.clone(), &data, &split, false, &Device::Cpu).is_err());
    let mut other = cfg;
    other.kl_weight = 0.5;
    let err = AutoencoderTrainer::new(other, &data, &split, true, &Device::Cpu)
        .err()
        .unwrap();
    assert!(err.to_string().contains("kl_weight"), "{err}");
}

#[test]
fn train_step_is_one_step_of_run_and_rejects_bad_batches() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_cohort(&data, 3, [16, 16, 16]);
    // Accumulation, adversarial terms from the first step, clipping and EMA take part.
    let cfg = config(
        "seed = 7\nsteps = 2\ngrad_accumulation = 2\nema_decay = 0.5\nadversarial_weight = 0.1\ncheckpoint_every = 0\n[optimizer]\nlr = 1e-3\ngrad_clip_norm = 0.5\n[discriminator]\nchannels = 4\nnum_layers_d = 2\n",
    );
    let cpu = Device::Cpu;
    let mut a =
        AutoencoderTrainer::new(cfg.clone(), &data, &dir.path().join("run"), false, &cpu).unwrap();
    let mut reports = Vec::new();
    a.run(None, &mut |r| reports.push(r.clone())).unwrap();

    let out = dir.path().join("steps");
    let mut b = AutoencoderTrainer::new(cfg, &data, &out, false, &cpu).unwrap();
    let zeros = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &cpu).unwrap();
    for bad in [
        vec![],
        vec![zeros(&[1, 16, 16, 16])],
        vec![zeros(&[1, 1, 15, 16, 16])],
        vec![zeros(&[1, 2, 16, 16, 16])],
    ] {
        let err = b.train_step(&bad).unwrap_err();
        assert!(matches!(err, TrainError::Shape { .. }), "{err}");
    }
    assert_eq!(b.step(), 0);
    // The micro-batches run() draws: the seeded shuffle of the 3 subjects, batch 1.
    let image = |i: usize| {
        let path = data.join(format!("sub-{i:06}/anat/sub-{i:06}_T1w.nii.gz"));
        load_image(&path, &cpu).unwrap()
    };
    for (step, report) in (0u64..).zip(&reports) {
        let micro: Vec<Tensor> = (0..2)
            .map(|m| image(batch_items(3, 1, 7, step * 2 + m).1[0]))
            .collect();
        let got = b.train_step(&micro).unwrap();
        assert_eq!((got.lr, &got.losses), (report.lr, &report.losses));
        let names: Vec<&str> = got.losses.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            ["loss", "l1", "kl", "generator_adversarial", "discriminator"]
        );
    }
    assert_eq!(b.step(), 2);
    let (wa, wb) = (a.weights().unwrap(), b.weights().unwrap());
    assert_eq!(wa.len(), wb.len());
    for (k, ta) in &wa {
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(values(ta), values(&wb[k]), "{k}");
    }
    // train_step writes nothing.
    assert!(!out.join("autoencoder.safetensors").exists() && !out.join("log.jsonl").exists());
}
