//! A tiny synthetic BIDS cohort: smooth ellipsoid "brains" whose size and a bright "ventricle"
//! vary with the covariates, written as brain-ldm-synth lays a dataset out.
#![allow(dead_code)]

use std::path::Path;

use brain_ldm_nifti::{affine::IDENTITY, Volume};
use brain_ldm_train::config::DataConfig;
use ndarray::Array3;

/// Writes `n` subjects of `shape` with participants.tsv under `root`.
pub fn write_cohort(root: &Path, n: usize, shape: [usize; 3]) {
    let mut tsv = String::from("participant_id\tsex\tage\tventricular_volume\tbrain_volume\n");
    for i in 0..n {
        let id = format!("sub-{i:06}");
        let dir = root.join(&id).join("anat");
        std::fs::create_dir_all(&dir).unwrap();
        let size = 0.55 + 0.25 * (i as f64 / n.max(2) as f64);
        let vent = 0.1 + 0.15 * ((i * 7 % n) as f64 / n as f64);
        let data = Array3::from_shape_fn((shape[0], shape[1], shape[2]), |(a, b, c)| {
            let p = [a, b, c].map(|_| 0.0);
            let _ = p;
            let x = (a as f64 + 0.5) / shape[0] as f64 * 2.0 - 1.0;
            let y = (b as f64 + 0.5) / shape[1] as f64 * 2.0 - 1.0;
            let z = (c as f64 + 0.5) / shape[2] as f64 * 2.0 - 1.0;
            let r = (x * x + y * y + z * z).sqrt();
            let brain = 1.0 / (1.0 + ((r - size) * 12.0).exp());
            let ventricle = 1.0 / (1.0 + ((r - vent) * 20.0).exp());
            (0.7 * brain - 0.5 * ventricle).clamp(0.0, 1.0) as f32
        });
        brain_ldm_nifti::write(
            &Volume::new(data, IDENTITY),
            dir.join(format!("{id}_T1w.nii.gz")),
        )
        .unwrap();
        let sex = if i % 2 == 0 { "F" } else { "M" };
        tsv.push_str(&format!(
            "{id}\t{sex}\t{}\t{}\t{}\n",
            50 + 3 * i,
            10000.0 + 4000.0 * vent,
            1.2e6 + 4e5 * size
        ));
    }
    std::fs::write(root.join("participants.tsv"), tsv).unwrap();
}

/// A manifest of the cohort under `data` (written by [`write_cohort`]), `sep`-separated,
/// with the image column `image_column` and covariate columns named as in `cfg`; each image
/// path is `prefix` + its path under `data`, except the last row's, which is absolute.
pub fn write_manifest(path: &Path, data: &Path, sep: &str, prefix: &str, cfg: &DataConfig) {
    let tsv = std::fs::read_to_string(data.join("participants.tsv")).unwrap();
    let rows: Vec<Vec<&str>> = tsv
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    let mut text = [
        cfg.image_column.as_str(),
        &cfg.sex_column,
        &cfg.age_column,
        &cfg.ventricular_volume_column,
        &cfg.brain_volume_column,
    ]
    .join(sep);
    text.push('\n');
    for (i, row) in rows.iter().enumerate() {
        let rel = format!("{0}/anat/{0}_T1w.nii.gz", row[0]);
        let image = if i + 1 == rows.len() {
            data.join(&rel).to_str().unwrap().to_string()
        } else {
            format!("{prefix}{rel}")
        };
        text.push_str(&[image.as_str(), row[1], row[2], row[3], row[4]].join(sep));
        text.push('\n');
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A tiny autoencoder configuration: channels [8, 16], one residual block, 4 groups.
pub const TINY_AE: &str = r#"
[model]
spatial_dims = 3
channels = [8, 16]
num_res_blocks = 1
norm_num_groups = 4
latent_channels = 3
attention_levels = [false, false]
with_encoder_nonlocal_attn = false
with_decoder_nonlocal_attn = false
"#;

/// A tiny conditioned UNet for [`TINY_AE`]'s 3-channel latents: channels [8, 16], the
/// covariates concatenated and, at the second level, attended to.
pub const TINY_UNET: &str = r#"
[model]
spatial_dims = 3
in_channels = 7
out_channels = 3
channels = [8, 16]
attention_levels = [false, true]
num_head_channels = [0, 16]
num_res_blocks = 1
norm_num_groups = 4
resblock_updown = true
with_conditioning = true
transformer_num_layers = 1
cross_attention_dim = 4
upcast_attention = true
"#;
