//! Loading a pipeline from a model folder: the public MONAI bundle as it is distributed, or
//! brain-ldm's own folder (`model.json`, `autoencoder.safetensors`, `unet.safetensors`), and
//! converting the former into the latter.

use crate::bundle::BundleConfig;
use crate::covariates::CovariateScaling;
use crate::error::{Error, Result};
use crate::pipeline::{
    check_default_guidance, ConditioningMode, LatentDiffusionPipeline, BUNDLE_IMAGE_AFFINE,
};
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
    /// The normalised conditioning that stood for "no covariates" in training (conditioning
    /// dropout); absent for a model trained without dropout, which cannot be guided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_condition: Option<[f32; 4]>,
    /// The normalised covariates of the training subjects, one row each; absent when not
    /// recorded (open covariates cannot be drawn then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_covariates: Option<Vec<[f32; 4]>>,
    /// The classifier-free guidance scale sampling uses when none is asked for; absent means
    /// 1 (plain conditional sampling). A scale other than 1 needs a null condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance_scale: Option<f64>,
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
            null_condition: None,
            training_covariates: None,
            guidance_scale: 1.0,
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
        let config = read_folder_config(&config_path)?;
        let autoencoder = Checkpoint::load(dir.join("autoencoder.safetensors"), device)?;
        let unet = Checkpoint::load(dir.join("unet.safetensors"), device)?;
        Self::from_parts(config, &config_path, &autoencoder, unet)
    }

    /// Builds a pipeline from a parsed `model.json` (read from `config_path`, named in
    /// errors; see `parse_folder_config`) and the two checkpoints, whatever their float dtype
    /// (converted to f32).
    pub(crate) fn from_parts(
        config: ModelFolderConfig,
        config_path: &Path,
        autoencoder: &Checkpoint,
        unet: Checkpoint,
    ) -> Result<Self> {
        let (ae_config, unet_config) = folder_configs(&config, config_path)?;
        let autoencoder = AutoencoderKL::from_checkpoint(autoencoder, &ae_config, DType::F32)?;
        let unet = DiffusionModelUNet::from_checkpoint(unet, &unet_config, DType::F32)?;
        let pipeline = Self {
            autoencoder,
            unet,
            conditioning: config.conditioning,
            latent_shape: config.latent_shape,
            scale_factor: config.scale_factor,
            scheduler_config: config.scheduler,
            covariate_scaling: config.covariate_scaling,
            image_affine: config.image_affine,
            null_condition: config.null_condition,
            training_covariates: config.training_covariates,
            guidance_scale: config.guidance_scale.unwrap_or(1.0),
        };
        pipeline.validate()?;
        Ok(pipeline)
    }
}

/// Reads and parses a model folder's `model.json`.
fn read_folder_config(config_path: &Path) -> Result<ModelFolderConfig> {
    let text = std::fs::read_to_string(config_path).map_err(|source| Error::Io {
        path: config_path.to_path_buf(),
        source,
    })?;
    parse_folder_config(&text, config_path)
}

/// Parses `model.json` text (read from `config_path`, named in errors) and checks its format
/// tag.
pub(crate) fn parse_folder_config(text: &str, config_path: &Path) -> Result<ModelFolderConfig> {
    let bad = |reason: String| Error::Bundle {
        path: config_path.to_path_buf(),
        reason,
    };
    let config: ModelFolderConfig = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    if config.format != MODEL_FOLDER_FORMAT {
        return Err(bad(format!(
            "format {:?}, expected {MODEL_FOLDER_FORMAT:?}",
            config.format
        )));
    }
    Ok(config)
}

/// The autoencoder's and UNet's configurations in a `model.json`.
fn folder_configs(
    config: &ModelFolderConfig,
    config_path: &Path,
) -> Result<(AutoencoderKLConfig, DiffusionModelUNetConfig)> {
    let ae = parse_config(&config.autoencoder, "autoencoder", config_path, |s| {
        AutoencoderKLConfig::from_json(s).map_err(|e| e.to_string())
    })?;
    let unet = parse_config(&config.unet, "unet", config_path, |s| {
        DiffusionModelUNetConfig::from_json(s).map_err(|e| e.to_string())
    })?;
    Ok((ae, unet))
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
    let (config, autoencoder, unet) = bundle_parts(bundle_dir.as_ref())?;
    write_model_folder(&config, &autoencoder, &unet, out.as_ref(), DType::F32)
}

/// Writes a brain-ldm model folder at `out` from a MONAI bundle folder or another brain-ldm
/// model folder (told apart as [`LatentDiffusionPipeline::open`] does), with its weights
/// stored as `dtype`: `F32`, or `F16` / `BF16` for half the size (converted back to f32 when
/// loaded). The weights are checked against the models first; `model.json` is kept as it is
/// (a bundle's is made from its configuration), except that `Some(guidance_scale)` becomes
/// the folder's default guidance scale.
///
/// # Errors
/// [`Error::InvalidRequest`] for another dtype, or a guidance scale that is not finite or
/// not 1 on a model without a null condition; as [`LatentDiffusionPipeline::open`]; and
/// [`Error::Io`] when `out` cannot be written.
pub fn convert_model(
    source: impl AsRef<Path>,
    out: impl AsRef<Path>,
    dtype: DType,
    guidance_scale: Option<f64>,
) -> Result<PathBuf> {
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::InvalidRequest(format!(
            "weights can be stored as f32, f16 or bf16, not {dtype:?}"
        )));
    }
    let source = source.as_ref();
    let config_path = source.join("model.json");
    let (mut config, autoencoder, unet) = if config_path.is_file() {
        let config = read_folder_config(&config_path)?;
        let device = Device::Cpu;
        let autoencoder = Checkpoint::load(source.join("autoencoder.safetensors"), &device)?;
        let unet = Checkpoint::load(source.join("unet.safetensors"), &device)?;
        let (ae_config, _) = folder_configs(&config, &config_path)?;
        // Loads as `from_model_folder` does, so the same keys (old ones renamed) are written.
        let autoencoder = upgrade_old_keys(autoencoder, &ae_config)?;
        let unet = unet.rename(old_key_to_core);
        LatentDiffusionPipeline::from_parts(
            config.clone(),
            &config_path,
            &autoencoder,
            unet.clone(),
        )?;
        (config, autoencoder, unet)
    } else {
        bundle_parts(source)?
    };
    if let Some(scale) = guidance_scale {
        check_default_guidance(scale, config.null_condition.is_some())
            .map_err(Error::InvalidRequest)?;
        config.guidance_scale = Some(scale);
    }
    write_model_folder(&config, &autoencoder, &unet, out.as_ref(), dtype)
}

/// A bundle's `model.json` and its weights under MONAI core key names, checked against the
/// models.
fn bundle_parts(bundle_dir: &Path) -> Result<(ModelFolderConfig, Checkpoint, Checkpoint)> {
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
        null_condition: None,
        training_covariates: None,
        guidance_scale: None,
    };
    Ok((config, ae_weights, unet_weights))
}

/// Writes `model.json` and both weight files (float tensors as `dtype`) into `out`.
fn write_model_folder(
    config: &ModelFolderConfig,
    autoencoder: &Checkpoint,
    unet: &Checkpoint,
    out: &Path,
    dtype: DType,
) -> Result<PathBuf> {
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let as_dtype = |checkpoint: &Checkpoint| -> Result<Checkpoint> {
        let tensors = checkpoint
            .tensors()
            .iter()
            .map(|(k, t)| {
                let t = if t.dtype().is_float() {
                    t.to_dtype(dtype)?
                } else {
                    t.clone()
                };
                Ok((k.clone(), t))
            })
            .collect::<Result<_>>()?;
        Ok(Checkpoint::from_tensors(tensors, checkpoint.file()))
    };
    as_dtype(autoencoder)?.save_safetensors(out.join("autoencoder.safetensors"))?;
    as_dtype(unet)?.save_safetensors(out.join("unet.safetensors"))?;
    let json = serde_json::to_string_pretty(config)
        .map_err(|e| Error::InvalidRequest(format!("cannot encode model.json: {e}")))?;
    crate::output::write_atomically(&out.join("model.json"), json.as_bytes())?;
    Ok(out.to_path_buf())
}
