//! The latent cache of a stage-2 run: every subject's posterior (μ, σ) under the stage-1
//! autoencoder, written once to `latents.safetensors` in the run folder and read back instead
//! of encoding again while its fingerprint matches.

use std::collections::HashMap;
use std::path::Path;
use std::time::UNIX_EPOCH;

use brain_ldm_autoencoder::{AutoencoderKL, AutoencoderKLConfig};
use brain_ldm_nifti::preprocess::PreprocessOptions;
use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};

use crate::data::{load_preprocessed, Subject};
use crate::error::{io, Result, TrainError};
use crate::run::{load_tensors, save_tensors};

/// The file name of a stage-2 run's latent cache in its run folder (see
/// [`DiffusionTrainer::new_with_progress`](crate::DiffusionTrainer::new_with_progress)).
pub const LATENT_CACHE: &str = "latents.safetensors";

/// Hashed first: changing what the cache holds or how it is fingerprinted bumps it, so that
/// an older cache is ignored.
const FORMAT: &str = "brain-ldm latent cache v1";

/// Every subject's `(μ, σ)`, each `[1, c, d, h, w]`, in the order of the subjects.
pub(crate) struct Latents {
    /// `(μ, σ)` per subject.
    pub posteriors: Vec<(Tensor, Tensor)>,
    /// Whether they were read from the cache rather than encoded.
    pub cached: bool,
}

/// What the latents are encoded with: the autoencoder, the device it runs on, and the
/// preprocessing images go through as they are read ([`load_preprocessed`]).
pub(crate) struct Encoder<'a> {
    /// The stage-1 autoencoder.
    pub ae: &'a AutoencoderKL,
    /// Its device (and that of the latents).
    pub device: &'a Device,
    /// `[data.preprocess]`, resolved.
    pub preprocess: Option<&'a PreprocessOptions>,
}

/// SHA-256 over everything the latents depend on: the autoencoder's weights file (its
/// bytes) and configuration, each image's canonical path, size and modification time (not
/// its bytes: cheap, as `make` and cargo judge freshness), the device (encodings on
/// another device may differ in the last bits) and the preprocessing, when on (without it
/// the fingerprint is that of a run before preprocessing existed).
///
/// # Errors
/// [`TrainError::Io`] when the weights or an image's metadata cannot be read.
pub(crate) fn fingerprint(
    weights: &Path,
    config: &AutoencoderKLConfig,
    subjects: &[Subject],
    device: &Device,
    preprocess: Option<&PreprocessOptions>,
) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(FORMAT.as_bytes());
    field(&std::fs::read(weights).map_err(io(weights))?);
    let config = serde_json::to_vec(config).map_err(|e| TrainError::InvalidConfig {
        key: "autoencoder.json".into(),
        reason: e.to_string(),
    })?;
    field(&config);
    field(format!("{:?}", device.location()).as_bytes());
    if let Some(p) = preprocess {
        // Every option, f64s in Rust's shortest round-trip form.
        field(format!("preprocess {p:?}").as_bytes());
    }
    for s in subjects {
        let path = std::fs::canonicalize(&s.image).map_err(io(&s.image))?;
        let meta = std::fs::metadata(&path).map_err(io(&path))?;
        let modified = meta.modified().map_err(io(&path))?;
        let nanos = match modified.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        field(path.to_string_lossy().as_bytes());
        field(&meta.len().to_le_bytes());
        field(&nanos.to_le_bytes());
    }
    Ok(h.finalize().into())
}

/// The latents of `subjects` (each `[1, ..latent_shape]`): read from
/// `out/latents.safetensors` when that file holds `fingerprint` and latents of the right
/// shape, otherwise read (and preprocessed) and encoded one subject at a time by `encoder`
/// (calling `progress(done, total)` after each) and written there (temporary file +
/// rename), replacing a stale or unreadable cache. Read or encoded, the values are the same
/// bits.
///
/// # Errors
/// Image, autoencoder and I/O errors of the encoding and of writing the cache (a cache that
/// cannot be read is not an error: it is encoded again).
pub(crate) fn load_or_encode(
    encoder: &Encoder,
    fingerprint: [u8; 32],
    subjects: &[Subject],
    latent_shape: [usize; 4],
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Latents> {
    let device = encoder.device;
    let path = out.join(LATENT_CACHE);
    let [c, d, h, w] = latent_shape;
    let shape = [subjects.len(), c, d, h, w];
    if let Some(posteriors) = read_cache(&path, &fingerprint, &shape, device) {
        return Ok(Latents {
            posteriors,
            cached: true,
        });
    }
    let total = subjects.len();
    let mut posteriors = Vec::with_capacity(total);
    for (i, s) in subjects.iter().enumerate() {
        let x = load_preprocessed(&s.image, encoder.preprocess, device)?;
        posteriors.push(encoder.ae.encode(&x)?);
        progress(i + 1, total);
    }
    let stack = |pick: fn(&(Tensor, Tensor)) -> &Tensor| {
        Tensor::cat(&posteriors.iter().map(pick).collect::<Vec<_>>(), 0)
    };
    let tensors = HashMap::from([
        ("mu".to_string(), stack(|p| &p.0)?),
        ("sigma".to_string(), stack(|p| &p.1)?),
        (
            "fingerprint".to_string(),
            Tensor::from_vec(fingerprint.to_vec(), 32, &Device::Cpu)?,
        ),
    ]);
    std::fs::create_dir_all(out).map_err(io(out))?;
    save_tensors(&path, tensors)?;
    Ok(Latents {
        posteriors,
        cached: false,
    })
}

/// The cached `(μ, σ)` per subject, or `None` when the file is missing, unreadable, holds
/// another fingerprint or latents of another shape.
fn read_cache(
    path: &Path,
    fingerprint: &[u8; 32],
    shape: &[usize; 5],
    device: &Device,
) -> Option<Vec<(Tensor, Tensor)>> {
    if !path.is_file() {
        return None;
    }
    let tensors = load_tensors(path, device).ok()?;
    let stored = tensors.get("fingerprint")?.to_vec1::<u8>().ok()?;
    if stored != fingerprint {
        return None;
    }
    let get = |key: &str| {
        tensors
            .get(key)
            .filter(|t| t.dims() == shape && t.dtype() == DType::F32)
    };
    let (mu, sigma) = (get("mu")?, get("sigma")?);
    (0..shape[0])
        .map(|i| Ok((mu.narrow(0, i, 1)?, sigma.narrow(0, i, 1)?)))
        .collect::<candle_core::Result<Vec<_>>>()
        .ok()
}
