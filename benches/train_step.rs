//! One training step at batch 1, the three reference configurations of issue 11, timed against
//! the same steps in PyTorch + MONAI (`scripts/bench_train_torch.py`, one configuration per
//! invocation):
//!
//! * `ae_40x56x40`: the demo autoencoder (`configs/demo/ae.toml`: channels 32/64/64, 1
//!   residual block, 16 groups, no attention) on a 1×1×40×56×40 image, L1 + KL + least-squares
//!   patch adversarial loss with a PatchDiscriminator (3 layers, 32 channels): the generator's
//!   and the discriminator's steps together ([`AutoencoderTrainer::train_step`]);
//! * `unet_64_128_latent_10x14x10`: a UNet with channels 64/128, attention at level 2 (head
//!   channels 0/128), 2 residual blocks, resblock up/down, on a 7×10×14×10 input (3 latent
//!   channels + the 4 covariates concatenated, which are also the 4-wide cross-attention
//!   context) ([`DiffusionTrainer::train_step`]);
//! * `unet_64_128_192_latent_20x28x20`: the same with channels 64/128/192 (the public bundle's
//!   UNet at a quarter of its width: attention at levels 2–3, head channels 0/128/192) on
//!   7×20×28×20.
//!
//! No EMA, no gradient clipping, no warm-up (as the PyTorch script); the setup (a 2-subject
//! cohort in a temporary folder, a random autoencoder for stage 2, encoding the latents) is not
//! timed and runs only for the benchmarks selected.
//!
//! ```text
//! cargo bench -p brain-ldm-train --bench train_step                        # all three
//! cargo bench -p brain-ldm-train --bench train_step -- ae_40x56x40         # one of them
//! cargo bench -p brain-ldm-train --bench train_step -- unet_64_128_latent
//! cargo bench -p brain-ldm-train --bench train_step -- unet_64_128_192
//! ```

#[path = "../crates/brain-ldm-train/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::Duration;

use brain_ldm_autoencoder::AutoencoderKL;
use brain_ldm_train::data::load_image;
use brain_ldm_train::optim::Parameters;
use brain_ldm_train::{
    seeded_init, AutoencoderTrainConfig, AutoencoderTrainer, DiffusionTrainConfig, DiffusionTrainer,
};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use tempfile::TempDir;

/// The demo autoencoder and discriminator; adversarial terms from the first step.
const AUTOENCODER: &str = r#"
seed = 0
steps = 1000000
batch_size = 1
checkpoint_every = 0
kl_weight = 1e-6
adversarial_weight = 0.005
adversarial_start_step = 0

[model]
spatial_dims = 3
in_channels = 1
out_channels = 1
channels = [32, 64, 64]
latent_channels = 3
num_res_blocks = 1
norm_num_groups = 16
norm_eps = 1e-6
attention_levels = [false, false, false]
with_encoder_nonlocal_attn = false
with_decoder_nonlocal_attn = false

[optimizer]
lr = 2e-4

[discriminator]
channels = 32
num_layers_d = 3

[discriminator.optimizer]
lr = 2e-4
"#;

/// Stage 2 with `{channels}`, `{attention}` and `{heads}` to fill in.
const DIFFUSION: &str = r#"
seed = 0
steps = 1000000
batch_size = 1
checkpoint_every = 0
ema_decay = 0.0
condition_dropout = 0.1
null_condition = [-1.0, -1.0, -1.0, -1.0]
scale_factor_samples = 2

[model]
spatial_dims = 3
in_channels = 7
out_channels = 3
channels = {channels}
attention_levels = {attention}
num_head_channels = {heads}
num_res_blocks = 2
norm_num_groups = 32
norm_eps = 1e-6
resblock_updown = true
with_conditioning = true
transformer_num_layers = 1
cross_attention_dim = 4
upcast_attention = true

[scheduler]
num_train_timesteps = 1000
schedule = "scaled_linear_beta"
beta_start = 0.0015
beta_end = 0.0205
prediction_type = "v_prediction"
clip_sample = false

[optimizer]
lr = 3e-4
"#;

fn autoencoder_config() -> AutoencoderTrainConfig {
    AutoencoderTrainConfig::from_toml(AUTOENCODER, "ae.toml".as_ref()).expect("ae config")
}

/// A 2-subject cohort of `shape` with covariates.
fn cohort(dir: &Path, shape: [usize; 3]) -> std::path::PathBuf {
    let data = dir.join("data");
    common::write_cohort(&data, 2, shape);
    data
}

/// The stage-1 trainer and one image.
fn setup_autoencoder() -> (TempDir, AutoencoderTrainer, Tensor) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = cohort(dir.path(), [40, 56, 40]);
    let out = dir.path().join("ae");
    let trainer = AutoencoderTrainer::new(autoencoder_config(), &data, &out, false, &Device::Cpu)
        .expect("autoencoder trainer");
    let image = data.join("sub-000000/anat/sub-000000_T1w.nii.gz");
    let x = load_image(&image, &Device::Cpu).expect("image");
    (dir, trainer, x)
}

/// The stage-2 trainer on images of `shape` (latents of a randomly initialised demo
/// autoencoder, downsampling 4).
fn setup_diffusion(
    shape: [usize; 3],
    channels: &str,
    attention: &str,
    heads: &str,
) -> (TempDir, DiffusionTrainer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = cohort(dir.path(), shape);
    let ae_dir = dir.path().join("ae");
    std::fs::create_dir_all(&ae_dir).expect("ae folder");
    let ae_cfg = autoencoder_config().model;
    let vars = VarMap::new();
    AutoencoderKL::new(
        &ae_cfg,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )
    .expect("autoencoder");
    seeded_init(&Parameters::from_varmap(&vars), 0).expect("init");
    vars.save(ae_dir.join("autoencoder.safetensors"))
        .expect("autoencoder weights");
    std::fs::write(
        ae_dir.join("autoencoder.json"),
        serde_json::to_string(&ae_cfg).expect("json"),
    )
    .expect("autoencoder.json");
    let text = DIFFUSION
        .replace("{channels}", channels)
        .replace("{attention}", attention)
        .replace("{heads}", heads);
    let cfg = DiffusionTrainConfig::from_toml(&text, "ldm.toml".as_ref()).expect("ldm config");
    let out = dir.path().join("ldm");
    let trainer = DiffusionTrainer::new(cfg, &data, &ae_dir, &out, false, &Device::Cpu)
        .expect("diffusion trainer");
    (dir, trainer)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(20));

    // Set up on first use: criterion calls each closure many times, and not at all for the
    // benchmarks a filter leaves out.
    let mut ae = None;
    group.bench_function("ae_40x56x40", |b| {
        let (_, trainer, x) = ae.get_or_insert_with(setup_autoencoder);
        b.iter(|| trainer.train_step(std::slice::from_ref(x)).expect("step"))
    });
    drop(ae);

    let mut small = None;
    group.bench_function("unet_64_128_latent_10x14x10", |b| {
        let (_, trainer) = small.get_or_insert_with(|| {
            setup_diffusion([40, 56, 40], "[64, 128]", "[false, true]", "[0, 128]")
        });
        b.iter(|| trainer.train_step().expect("step"))
    });
    drop(small);

    let mut large = None;
    group.bench_function("unet_64_128_192_latent_20x28x20", |b| {
        let (_, trainer) = large.get_or_insert_with(|| {
            setup_diffusion(
                [80, 112, 80],
                "[64, 128, 192]",
                "[false, true, true]",
                "[0, 128, 192]",
            )
        });
        b.iter(|| trainer.train_step().expect("step"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
