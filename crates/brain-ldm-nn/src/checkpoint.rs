//! Named-tensor checkpoints: loading safetensors and PyTorch pickles, renaming keys, building a
//! model with a strict fit check, and saving to safetensors.
//!
//! Every brain-ldm model is built from a [`VarBuilder`]; [`Checkpoint::build`] hands the
//! constructor one over the checkpoint's tensors and then reports, in a single
//! [`CheckpointError::Mismatch`], every key the model asked for that is missing or has the wrong
//! shape and every key of the checkpoint the model never used.
//!
//! ```
//! use brain_ldm_nn::checkpoint::Checkpoint;
//! use candle_core::{DType, Device, Tensor};
//! use std::collections::HashMap;
//! let dev = Device::Cpu;
//! let tensors = HashMap::from([
//!     ("model.weight".to_string(), Tensor::ones((2, 3), DType::F32, &dev)?),
//!     ("model.bias".to_string(), Tensor::zeros(2, DType::F32, &dev)?),
//! ]);
//! let ckpt = Checkpoint::from_tensors(tensors, "in memory").strip_prefix("model.");
//! let layer = ckpt.build(DType::F32, |vb| candle_nn::linear(3, 2, vb))?;
//! assert_eq!(layer.weight().dims(), [2, 3]);
//! // A model that asks for other keys gets one error naming all of them.
//! let err = ckpt.build(DType::F32, |vb| candle_nn::linear_no_bias(4, 2, vb)).unwrap_err();
//! assert!(err.to_string().contains("weight: expected [2, 4], found [2, 3]"));
//! assert!(err.to_string().contains("unexpected: bias"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use candle_core::{DType, Device, Result as CandleResult, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How many names of each kind a [`CheckpointError::Mismatch`] message lists before it counts
/// the rest.
const LISTED_KEYS: usize = 20;

/// A key the model asked for with another shape than the checkpoint holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongShape {
    /// The checkpoint key.
    pub key: String,
    /// The shape the model expects.
    pub expected: Vec<usize>,
    /// The shape stored in the checkpoint.
    pub found: Vec<usize>,
}

/// Errors of checkpoint loading, fitting and saving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The file could not be read or parsed.
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        /// The checkpoint file.
        path: PathBuf,
        /// What went wrong.
        source: candle_core::Error,
    },
    /// The file name has no checkpoint extension this crate reads.
    #[error(
        "cannot read checkpoint {path}: unknown extension (expected .safetensors, .pt, .pth, .ckpt or .bin)"
    )]
    UnknownFormat {
        /// The checkpoint file.
        path: PathBuf,
    },
    /// The checkpoint does not fit the model.
    #[error("checkpoint {file} does not fit the model:{}", mismatch_summary(.missing, .wrong_shape, .unexpected))]
    Mismatch {
        /// Where the checkpoint came from.
        file: String,
        /// Keys the model needs that the checkpoint lacks.
        missing: Vec<String>,
        /// Keys present with another shape than the model needs.
        wrong_shape: Vec<WrongShape>,
        /// Keys of the checkpoint the model never asked for.
        unexpected: Vec<String>,
    },
    /// The model constructor failed for a reason other than a missing or mis-shaped key.
    #[error("building the model from checkpoint {file}: {source}")]
    Build {
        /// Where the checkpoint came from.
        file: String,
        /// The constructor's error.
        source: candle_core::Error,
    },
    /// Writing a safetensors file failed; nothing was left at `path`.
    #[error("cannot write checkpoint {path}: {source}")]
    Write {
        /// The destination file.
        path: PathBuf,
        /// What went wrong.
        source: candle_core::Error,
    },
}

/// One line per kind of problem, each listing at most [`LISTED_KEYS`] names.
fn mismatch_summary(missing: &[String], wrong: &[WrongShape], unexpected: &[String]) -> String {
    fn list(names: impl ExactSizeIterator<Item = String>) -> String {
        let total = names.len();
        let mut shown: Vec<String> = names.take(LISTED_KEYS).collect();
        if total > LISTED_KEYS {
            shown.push(format!("… and {} more", total - LISTED_KEYS));
        }
        shown.join(", ")
    }
    let mut out = String::new();
    if !missing.is_empty() {
        out += &format!("\n  missing: {}", list(missing.iter().cloned()));
    }
    if !wrong.is_empty() {
        let shapes = wrong
            .iter()
            .map(|w| format!("{}: expected {:?}, found {:?}", w.key, w.expected, w.found));
        out += &format!("\n  wrong shape: {}", list(shapes));
    }
    if !unexpected.is_empty() {
        out += &format!("\n  unexpected: {}", list(unexpected.iter().cloned()));
    }
    out
}

/// Named tensors from a checkpoint file (or from memory) and where they came from.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    tensors: HashMap<String, Tensor>,
    file: String,
}

impl Checkpoint {
    /// Reads every tensor of a `.safetensors` file or of a PyTorch pickled state dict
    /// (`.pt`, `.pth`, `.ckpt`, `.bin`; a dict nested under `state_dict` is found too) onto
    /// `device`.
    ///
    /// # Errors
    /// [`CheckpointError::UnknownFormat`] for another extension, [`CheckpointError::Read`] when
    /// the file cannot be read or holds no tensors.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        let read_error = |source| CheckpointError::Read {
            path: path.to_path_buf(),
            source,
        };
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let tensors = match extension.as_deref() {
            Some("safetensors") => {
                candle_core::safetensors::load(path, device).map_err(read_error)?
            }
            Some("pt" | "pth" | "ckpt" | "bin") => {
                let mut entries = candle_core::pickle::read_all(path).map_err(read_error)?;
                if entries.is_empty() {
                    entries = candle_core::pickle::read_all_with_key(path, Some("state_dict"))
                        .map_err(read_error)?;
                }
                entries
                    .into_iter()
                    .map(|(name, t)| Ok((name, t.to_device(device)?)))
                    .collect::<CandleResult<HashMap<_, _>>>()
                    .map_err(read_error)?
            }
            _ => {
                return Err(CheckpointError::UnknownFormat {
                    path: path.to_path_buf(),
                })
            }
        };
        if tensors.is_empty() {
            return Err(read_error(candle_core::Error::Msg(
                "the file holds no tensors".into(),
            )));
        }
        Ok(Self {
            tensors,
            file: path.display().to_string(),
        })
    }

    /// Wraps tensors already in memory; `file` names their origin in error messages.
    pub fn from_tensors(tensors: HashMap<String, Tensor>, file: impl Into<String>) -> Self {
        Self {
            tensors,
            file: file.into(),
        }
    }

    /// The tensors by key.
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    /// Where the tensors came from, as error messages name it.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Keeps the keys that start with `prefix`, with the prefix removed.
    pub fn strip_prefix(self, prefix: &str) -> Self {
        let tensors = self
            .tensors
            .into_iter()
            .filter_map(|(k, t)| k.strip_prefix(prefix).map(|k| (k.to_string(), t)))
            .collect();
        Self {
            tensors,
            file: self.file,
        }
    }

    /// Rewrites keys: `rename(key)` returns the new name, or `None` to keep the key.
    pub fn rename(self, rename: impl Fn(&str) -> Option<String>) -> Self {
        let tensors = self
            .tensors
            .into_iter()
            .map(|(k, t)| (rename(&k).unwrap_or(k), t))
            .collect();
        Self {
            tensors,
            file: self.file,
        }
    }

    /// Runs `construct` on a [`VarBuilder`] over these tensors (converted to `dtype`) and
    /// checks that the model used every key, each with the shape it asked for.
    ///
    /// # Errors
    /// [`CheckpointError::Mismatch`] listing every missing, mis-shaped and unused key;
    /// [`CheckpointError::Build`] when the constructor fails for another reason.
    pub fn build<T>(
        &self,
        dtype: DType,
        construct: impl FnOnce(VarBuilder) -> CandleResult<T>,
    ) -> Result<T, CheckpointError> {
        let device = self
            .tensors
            .values()
            .next()
            .map_or(Device::Cpu, |t| t.device().clone());
        let recorder = FitRecorder {
            tensors: &self.tensors,
            log: Mutex::default(),
        };
        let built = {
            let vb = VarBuilder::from_backend(Box::new(&recorder), dtype, device);
            construct(vb)
        };
        let log = recorder.log.into_inner().unwrap_or_else(|e| e.into_inner());
        let unexpected: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !log.requested.contains(*k))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !log.missing.is_empty() || !log.wrong_shape.is_empty() || !unexpected.is_empty() {
            return Err(CheckpointError::Mismatch {
                file: self.file.clone(),
                missing: log.missing.into_iter().collect(),
                wrong_shape: log.wrong_shape,
                unexpected,
            });
        }
        built.map_err(|source| CheckpointError::Build {
            file: self.file.clone(),
            source,
        })
    }

    /// Writes the tensors to a safetensors file, through a temporary file renamed into place.
    ///
    /// # Errors
    /// [`CheckpointError::Write`]; no file is left at `path` on failure.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let path = path.as_ref();
        let write_error = |source| CheckpointError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(format!(".tmp{}", std::process::id()));
        let temporary = PathBuf::from(temporary);
        let written = candle_core::safetensors::save(&self.tensors, &temporary)
            .and_then(|()| ordinary_permissions(&temporary).map_err(candle_core::Error::from))
            .and_then(|()| std::fs::rename(&temporary, path).map_err(candle_core::Error::from));
        if let Err(e) = written {
            // Best effort: the temporary file may not exist.
            let _ = std::fs::remove_file(&temporary);
            return Err(write_error(e));
        }
        Ok(())
    }
}

/// What a model asked of a checkpoint while it was built.
#[derive(Default)]
struct FitLog {
    requested: BTreeSet<String>,
    missing: BTreeSet<String>,
    wrong_shape: Vec<WrongShape>,
}

/// A [`SimpleBackend`] that serves a checkpoint's tensors and records every request, standing
/// in zeros for missing or mis-shaped keys so that one build reports all problems.
struct FitRecorder<'a> {
    tensors: &'a HashMap<String, Tensor>,
    log: Mutex<FitLog>,
}

impl FitRecorder<'_> {
    fn log(&self) -> std::sync::MutexGuard<'_, FitLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SimpleBackend for &FitRecorder<'_> {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _init: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> CandleResult<Tensor> {
        let mut log = self.log();
        log.requested.insert(name.to_string());
        match self.tensors.get(name) {
            Some(t) if t.shape() == &shape => t.to_dtype(dtype)?.to_device(device),
            Some(t) => {
                log.wrong_shape.push(WrongShape {
                    key: name.to_string(),
                    expected: shape.dims().to_vec(),
                    found: t.dims().to_vec(),
                });
                Tensor::zeros(shape, dtype, device)
            }
            None => {
                log.missing.insert(name.to_string());
                Tensor::zeros(shape, dtype, device)
            }
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, device: &Device) -> CandleResult<Tensor> {
        let mut log = self.log();
        log.requested.insert(name.to_string());
        match self.tensors.get(name) {
            Some(t) => t.to_dtype(dtype)?.to_device(device),
            None => {
                log.missing.insert(name.to_string());
                candle_core::bail!("checkpoint has no tensor {name}")
            }
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Gives `path` the permissions of a file made by `File::create` in its folder (0666 less
/// the umask): safetensors writes through a private (0600) temporary file, which would make
/// saved models unreadable to other users.
fn ordinary_permissions(path: &Path) -> std::io::Result<()> {
    let mut probe = path.as_os_str().to_owned();
    probe.push(".mode");
    let probe = PathBuf::from(probe);
    let permissions = std::fs::File::create(&probe).and_then(|f| f.metadata());
    std::fs::remove_file(&probe)?;
    std::fs::set_permissions(path, permissions?.permissions())
}
