//! Loading a pipeline from a model folder: the public MONAI bundle as it is distributed, or
//! brain-ldm's own folder (`model.json`, `autoencoder.safetensors`, `unet.safetensors`), and
//! converting the former into the latter.

use crate::bundle::BundleConfig;
use crate::covariates::CovariateScaling;
use crate::error::{Error, Result};
use crate::pipeline::{ConditioningMode, LatentDiffusionPipeline, BUNDLE_IMAGE_AFFINE};
use brain_ldm_autoencoder::{upgrade_old_keys, AutoencoderKL, AutoencoderKLConfig};
use brain_ldm_nifti::Affine;
use brain_ldm_nn::checkpoint::Checkpoint;
use brain_ldm_unet::{old_key_to_core, DiffusionModelUNet, DiffusionModelUNetConfig};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The version tag of brain-ldm's model folder format.
pub const MODEL_FOLDER_FORMAT: &str = "brain-ldm model folder 1";

/// `model.json` of a brain-ldm model folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFolderConfig {
    /// Always [`MODEL_FOLDER_FORMAT`].
    pub format: String,
    /// The autoencoder's constructor arguments (MONAI names).
    pub autoencoder: Value,
    /// The UNet's constructor arguments (MONAI names).
    pub unet: Value,
    /// The noise schedule and prediction type (MONAI scheduler argument names).
    pub scheduler: Value,
    /// The latent shape without the batch axis.
    pub latent_shape: [usize; 4],
    /// Latent scale factor (1 = none).
    pub scale_factor: f64,
    /// How the covariates reach the UNet.
    pub conditioning: ConditioningMode,
    /// Physical covariates → normalised inputs.
    pub covariate_scaling: CovariateScaling,
    /// World grid of the decoded images.
    pub image_affine: Affine,
}

/// The conditioning a UNet's configuration implies, or an error naming the configuration.
fn conditioning_of(
    unet: &DiffusionModelUNetConfig,
    latent_channels: usize,
    path: &Path,
) -> Result<ConditioningMode> {
    ConditioningMode::of_unet(unet, latent_channels).ok_or_else(|| Error::Bundle {
        path: path.to_path_buf(),
        reason: format!(
            "the UNet ({} input channels, no cross-attention) takes no covariates",
            unet.in_channels
        ),
    })
}

fn parse_config<T>(
    value: &Value,
    what: &str,
    path: &Path,
    parse: impl Fn(&str) -> std::result::Result<T, String>,
) -> Result<T> {
    parse(&value.to_string()).map_err(|reason| Error::Bundle {
        path: path.to_path_buf(),
        reason: format!("{what} configuration: {reason}"),
    })
}

impl LatentDiffusionPipeline {
    /// Opens a model folder: brain-ldm's own when it holds `model.json`, else a MONAI bundle.
    ///
    /// # Errors
    /// [`Error::Bundle`] for a missing file or inconsistent configuration; checkpoint errors
    /// listing the keys that do not fit.
    pub fn open(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        if dir.join("model.json").is_file() {
            Self::from_model_folder(dir, device)
        } else {
            Self::from_bundle(dir, device)
        }
    }

    /// Loads the public MONAI bundle (or one laid out like it) as distributed: old-key pickled
    /// weights, GenerativeModels argument names, no conversion.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn from_bundle(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let bundle = BundleConfig::open(dir)?;
        let (ae_config, unet_config) = bundle_configs(&bundle)?;
        let latent_shape = bundle_latent_shape(&bundle, &ae_config)?;
        let conditioning =
            conditioning_of(&unet_config, ae_config.latent_channels, &bundle.config_file)?;
        let autoencoder = AutoencoderKL::load(&bundle.autoencoder_weights, &ae_config, device)?;
        let unet =
            DiffusionModelUNet::load(&bundle.diffusion_weights, &unet_config, DType::F32, device)?;
        let pipeline = Self {
            autoencoder,
            unet,
            conditioning,
            latent_shape,
            scale_factor: 1.0,
            scheduler_config: bundle.scheduler.clone(),
            covariate_scaling: CovariateScaling::paper(),
            image_affine: BUNDLE_IMAGE_AFFINE,
        };
        pipeline.validate()?;
        Ok(pipeline)
    }

    /// Loads a brain-ldm model folder (`model.json`, `autoencoder.safetensors`,
    /// `unet.safetensors`).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn from_model_folder(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config_path = dir.join("model.json");
        let text = std::fs::read_to_string(&config_path).map_err(|source| Error::Io {
            path: config_path.clone(),
            source,
        })?;
        let config: ModelFolderConfig = serde_json::from_str(&text).map_err(|e| Error::Bundle {
            path: config_path.clone(),
            reason: e.to_string(),
        })?;
        if config.format != MODEL_FOLDER_FORMAT {
            return Err(Error::Bundle {
                path: config_path,
                reason: format!(
                    "format {:?}, expected {MODEL_FOLDER_FORMAT:?}",
                    config.format
                ),
            });
        }
        let ae_config = parse_config(&config.autoencoder, "autoencoder", &config_path, |s| {
            AutoencoderKLConfig::from_json(s).map_err(|e| e.to_string())
        })?;
        let unet_config = parse_config(&config.unet, "unet", &config_path, |s| {
            DiffusionModelUNetConfig::from_json(s).map_err(|e| e.to_string())
        })?;
        let autoencoder =
            AutoencoderKL::load(dir.join("autoencoder.safetensors"), &ae_config, device)?;
        let unet = DiffusionModelUNet::load(
            dir.join("unet.safetensors"),
            &unet_config,
            DType::F32,
            device,
        )?;
        let pipeline = Self {
            autoencoder,
            unet,
            conditioning: config.conditioning,
            latent_shape: config.latent_shape,
            scale_factor: config.scale_factor,
            scheduler_config: config.scheduler,
            covariate_scaling: config.covariate_scaling,
            image_affine: config.image_affine,
        };
        pipeline.validate()?;
        Ok(pipeline)
    }
}

fn bundle_configs(
    bundle: &BundleConfig,
) -> Result<(AutoencoderKLConfig, DiffusionModelUNetConfig)> {
    let path = &bundle.config_file;
    let ae = parse_config(&bundle.autoencoder, "autoencoder_def", path, |s| {
        AutoencoderKLConfig::from_json(s).map_err(|e| e.to_string())
    })?;
    let unet = parse_config(&bundle.diffusion, "diffusion_def", path, |s| {
        DiffusionModelUNetConfig::from_json(s).map_err(|e| e.to_string())
    })?;
    Ok((ae, unet))
}

fn bundle_latent_shape(bundle: &BundleConfig, ae: &AutoencoderKLConfig) -> Result<[usize; 4]> {
    match bundle.latent_shape.as_deref() {
        Some(&[c, d, h, w]) => Ok([c, d, h, w]),
        Some(other) => Err(Error::Bundle {
            path: bundle.config_file.clone(),
            reason: format!("latent_shape {other:?} is not [channels, d, h, w]"),
        }),
        // The paper's latent: 160×224×160 images downsampled 8× per axis.
        None => Ok([ae.latent_channels, 20, 28, 20]),
    }
}

/// Converts a MONAI bundle folder into a brain-ldm model folder at `out`: safetensors weights
/// under MONAI core key names (checked against the models first) and `model.json`.
///
/// # Errors
/// As [`LatentDiffusionPipeline::from_bundle`], and [`Error::Io`] when `out` cannot be written.
pub fn convert_bundle(bundle_dir: impl AsRef<Path>, out: impl AsRef<Path>) -> Result<PathBuf> {
    let out = out.as_ref();
    let bundle = BundleConfig::open(bundle_dir)?;
    let (ae_config, unet_config) = bundle_configs(&bundle)?;
    let latent_shape = bundle_latent_shape(&bundle, &ae_config)?;
    let conditioning =
        conditioning_of(&unet_config, ae_config.latent_channels, &bundle.config_file)?;
    let device = Device::Cpu;
    let ae_weights = upgrade_old_keys(
        Checkpoint::load(&bundle.autoencoder_weights, &device)?,
        &ae_config,
    )?;
    ae_weights.build(DType::F32, |vb| AutoencoderKL::new(&ae_config, vb))?;
    let unet_weights =
        Checkpoint::load(&bundle.diffusion_weights, &device)?.rename(old_key_to_core);
    unet_weights.build(DType::F32, |vb| DiffusionModelUNet::new(&unet_config, vb))?;
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    ae_weights.save_safetensors(out.join("autoencoder.safetensors"))?;
    unet_weights.save_safetensors(out.join("unet.safetensors"))?;
    let config = ModelFolderConfig {
        format: MODEL_FOLDER_FORMAT.into(),
        autoencoder: bundle.autoencoder.clone(),
        unet: bundle.diffusion.clone(),
        scheduler: bundle.scheduler.clone(),
        latent_shape,
        scale_factor: 1.0,
        conditioning,
        covariate_scaling: CovariateScaling::paper(),
        image_affine: BUNDLE_IMAGE_AFFINE,
    };
    let json = serde_json::to_string_pretty(&config)
        .map_err(|e| Error::InvalidRequest(format!("cannot encode model.json: {e}")))?;
    crate::output::write_atomically(&out.join("model.json"), json.as_bytes())?;
    Ok(out.to_path_buf())
}
