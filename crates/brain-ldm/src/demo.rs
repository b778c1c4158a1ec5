//! The built-in demo model: a small brain LDM compiled into the library, so that sampling
//! works without downloading anything ([`LatentDiffusionPipeline::demo`]).
//!
//! Its files live in `crates/brain-ldm/demo/` as a brain-ldm model folder with f16 weights
//! (`brain-ldm convert --dtype f16`): autoencoder channels [32, 64, 64] to a 3×10×14×10
//! latent of 40×56×40 images (4 mm), UNet channels [32, 64] with cross-attention and
//! concatenated covariates, v-prediction, trained with conditioning dropout (null condition
//! [-1, -1, -1, -1]) so that it can be guided and sample unconditionally. Recipe, training
//! curves and timings: docs/demo.md; `scripts/train-demo.sh` reproduces it.

use crate::error::Result;
use crate::model::parse_folder_config;
use crate::pipeline::LatentDiffusionPipeline;
use brain_ldm_nn::checkpoint::Checkpoint;
use candle_core::Device;
use std::path::Path;

/// The name the demo model goes by in sample sidecars and messages.
pub const DEMO_MODEL_NAME: &str = "brain-ldm built-in demo model";

const MODEL_JSON: &str = include_str!("../demo/model.json");
const AUTOENCODER: &[u8] = include_bytes!("../demo/autoencoder.safetensors");
const UNET: &[u8] = include_bytes!("../demo/unet.safetensors");

/// Reads one embedded safetensors file as a checkpoint named `demo/{name}` in errors.
fn embedded(bytes: &[u8], name: &str, device: &Device) -> Result<Checkpoint> {
    let file = format!("demo/{name}");
    let tensors = candle_core::safetensors::load_buffer(bytes, device).map_err(|source| {
        brain_ldm_nn::checkpoint::CheckpointError::Read {
            path: file.clone().into(),
            source,
        }
    })?;
    Ok(Checkpoint::from_tensors(tensors, file))
}

impl LatentDiffusionPipeline {
    /// The built-in demo model ([`DEMO_MODEL_NAME`]), from weights compiled into the library
    /// (f16, converted to f32 on `device`): 40×56×40 images at 4 mm, guidance and
    /// unconditional sampling supported, open covariates drawn from its training subjects.
    ///
    /// ```
    /// use brain_ldm::{LatentDiffusionPipeline, SampleRequest, SamplingSettings};
    /// let device = candle_core::Device::Cpu;
    /// let pipeline = LatentDiffusionPipeline::demo(&device)?;
    /// let mut scheduler = pipeline.scheduler(&SamplingSettings { steps: 2, ..Default::default() })?;
    /// let request = SampleRequest { conditioning: None, seed: 0, index: 0 };
    /// let images = pipeline.sample_batch(scheduler.as_mut(), 1.0, &[request], &device, &mut |_, _| {})?;
    /// assert_eq!(images.dims(), [1, 1, 40, 56, 40]);
    /// # Ok::<(), brain_ldm::Error>(())
    /// ```
    ///
    /// # Errors
    /// A candle error when the weights cannot be moved to `device`.
    pub fn demo(device: &Device) -> Result<Self> {
        let config_path = Path::new("demo/model.json");
        let config = parse_folder_config(MODEL_JSON, config_path)?;
        let autoencoder = embedded(AUTOENCODER, "autoencoder.safetensors", device)?;
        let unet = embedded(UNET, "unet.safetensors", device)?;
        Self::from_parts(config, config_path, &autoencoder, unet)
    }
}
