//! `brain-ldm train autoencoder` then `train diffusion` on a tiny cohort, `--resume` (stage 2
//! reading its latent cache), and `brain-ldm sample --model` on the result.

use std::path::Path;
use std::process::{Command, Output};

use brain_ldm_nifti::{affine::IDENTITY, Volume};

const BIN: &str = env!("CARGO_BIN_EXE_brain-ldm");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(out: Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Four 16³ ellipsoids of growing size with participants.tsv.
fn cohort(root: &Path) {
    let mut tsv = String::from("participant_id\tsex\tage\tventricular_volume\tbrain_volume\n");
    for i in 0..4 {
        let id = format!("sub-{i:06}");
        let dir = root.join(&id).join("anat");
        std::fs::create_dir_all(&dir).unwrap();
        let size = 0.5 + 0.1 * i as f64;
        let data = ndarray::Array3::from_shape_fn((16, 16, 16), |(a, b, c)| {
            let r = [a, b, c]
                .iter()
                .map(|&v| ((v as f64 + 0.5) / 8.0 - 1.0).powi(2))
                .sum::<f64>()
                .sqrt();
            (0.8 / (1.0 + ((r - size) * 12.0).exp())) as f32
        });
        brain_ldm_nifti::write(
            &Volume::new(data, IDENTITY),
            dir.join(format!("{id}_T1w.nii.gz")),
        )
        .unwrap();
        tsv.push_str(&format!(
            "{id}\t{}\t{}\t{}\t{}\n",
            ["F", "M"][i % 2],
            50 + 5 * i,
            9000 + 1000 * i,
            1_200_000 + 50_000 * i
        ));
    }
    std::fs::write(root.join("participants.tsv"), tsv).unwrap();
}

const AE: &str = "steps = 2\nadversarial_weight = 0.01\n[discriminator]\nchannels = 4\nnum_layers_d = 2\n[model]\nspatial_dims = 3\nchannels = [8, 16]\nnum_res_blocks = 1\nnorm_num_groups = 4\nattention_levels = [false, false]\nwith_encoder_nonlocal_attn = false\nwith_decoder_nonlocal_attn = false\n";
const LDM: &str = "steps = 2\n[model]\nspatial_dims = 3\nin_channels = 7\nout_channels = 3\nchannels = [8, 16]\nattention_levels = [false, true]\nnum_head_channels = [0, 16]\nnum_res_blocks = 1\nnorm_num_groups = 4\nresblock_updown = true\nwith_conditioning = true\ncross_attention_dim = 4\n";

#[test]
fn train_both_stages_resume_and_sample() {
    let dir = tempfile::tempdir().unwrap();
    let p = |s: &str| dir.path().join(s).to_str().unwrap().to_string();
    cohort(&dir.path().join("data"));
    std::fs::write(p("ae.toml"), AE).unwrap();
    std::fs::write(p("ldm.toml"), LDM).unwrap();
    ok(run(&[
        "train",
        "autoencoder",
        "--data",
        &p("data"),
        "--config",
        &p("ae.toml"),
        "--out",
        &p("ae"),
    ]));
    assert!(dir.path().join("ae/autoencoder.safetensors").is_file());
    // Without --resume an existing run is refused; with it (and more steps) it continues.
    let out = run(&[
        "train",
        "autoencoder",
        "--data",
        &p("data"),
        "--config",
        &p("ae.toml"),
        "--out",
        &p("ae"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
    std::fs::write(p("ae.toml"), AE.replace("steps = 2", "steps = 3")).unwrap();
    ok(run(&[
        "train",
        "autoencoder",
        "--data",
        &p("data"),
        "--config",
        &p("ae.toml"),
        "--out",
        &p("ae"),
        "--resume",
    ]));
    let log = std::fs::read_to_string(dir.path().join("ae/log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3);
    // Training drew loss.png; `train plot` redraws it, here into another file.
    assert!(dir.path().join("ae/loss.png").is_file());
    ok(run(&["train", "plot", &p("ae"), "--out", &p("curves.png")]));
    let png = std::fs::read(dir.path().join("curves.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    // A run folder without a log is a typed error naming the file.
    let out = run(&["train", "plot", &p("data")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("log.jsonl"));

    ok(run(&[
        "train",
        "diffusion",
        "--data",
        &p("data"),
        "--autoencoder",
        &p("ae"),
        "--config",
        &p("ldm.toml"),
        "--out",
        &p("ldm"),
    ]));
    // Resumed with more steps, stage 2 reads its latents from the run's cache.
    assert!(dir.path().join("ldm/latents.safetensors").is_file());
    std::fs::write(p("ldm.toml"), LDM.replace("steps = 2", "steps = 3")).unwrap();
    let out = run(&[
        "train",
        "diffusion",
        "--data",
        &p("data"),
        "--autoencoder",
        &p("ae"),
        "--config",
        &p("ldm.toml"),
        "--out",
        &p("ldm"),
        "--resume",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("latents read from"), "{stderr}");
    ok(run(&[
        "sample",
        "--model",
        &p("ldm"),
        "--out",
        &p("samples"),
        "--raw",
        "1,0.5,0.5,0.5",
        "--steps",
        "2",
    ]));
    assert!(dir.path().join("samples/sample-0000.nii.gz").is_file());

    // A typo in the configuration is named before anything runs.
    std::fs::write(p("bad.toml"), "lerning_rate = 1\n").unwrap();
    let out = run(&[
        "train",
        "autoencoder",
        "--data",
        &p("data"),
        "--config",
        &p("bad.toml"),
        "--out",
        &p("bad"),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("lerning_rate"));
    assert!(!dir.path().join("bad").exists());
}
