//! A tiny synthetic BIDS cohort: smooth ellipsoid "brains" whose size and a bright "ventricle"
//! vary with the covariates, written as brain-ldm-synth lays a dataset out.
#![allow(dead_code)]

use std::path::Path;

use brain_ldm_nifti::{affine::IDENTITY, Volume};
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
