//! Datasets: a BIDS folder (`sub-*/anat/*_T1w.nii[.gz]` + `participants.tsv`, the layout
//! brain-ldm-synth writes) or a CSV/TSV manifest of image paths with covariate columns;
//! covariate scaling computed on the training set; deterministic shuffling; a loader thread;
//! optional preprocessing of every image as it is read (`[data.preprocess]`).

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use brain_ldm::CovariateScaling;
use brain_ldm_nifti::preprocess::PreprocessOptions;
use brain_ldm_nifti::Volume;
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::DataConfig;
use crate::error::{io, Result, TrainError};

/// One subject: an image and, when read, its covariates in physical units
/// `[sex (0 female, 1 male), age, ventricular volume, brain volume]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    /// `participant_id` (BIDS) or the manifest row's image path.
    pub id: String,
    /// The T1w image.
    pub image: PathBuf,
    /// Physical covariates, when the dataset was opened with them.
    pub covariates: Option<[f64; 4]>,
}

/// The subjects of a dataset, all images of one shape.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Where it was read from.
    pub root: PathBuf,
    /// Every subject, in the table's order.
    pub subjects: Vec<Subject>,
    /// The common image shape `[d, h, w]` (after preprocessing, when on).
    pub image_shape: [usize; 3],
    /// The first image's affine, after preprocessing when on (the grid the model's outputs
    /// are written on).
    pub affine: brain_ldm_nifti::Affine,
}

fn dataset_err(path: &Path, reason: String) -> TrainError {
    TrainError::Dataset {
        path: path.to_path_buf(),
        reason,
    }
}

/// Maps a sex value: `F`/`female`/`0` → 0, `M`/`male`/`1` → 1 (UK Biobank's coding, as
/// [`brain_ldm::Sex::code`]).
pub fn sex_code(value: &str) -> Option<f64> {
    match value.trim().to_ascii_lowercase().as_str() {
        "f" | "female" | "0" => Some(0.0),
        "m" | "male" | "1" => Some(1.0),
        _ => None,
    }
}

/// A delimited table: header and rows.
struct Table {
    path: PathBuf,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let sep = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            ','
        } else {
            '\t'
        };
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<String> = lines
            .next()
            .ok_or_else(|| dataset_err(path, "the table is empty".into()))?
            .split(sep)
            .map(|s| s.trim().to_string())
            .collect();
        let rows = lines
            .map(|l| l.split(sep).map(|s| s.trim().to_string()).collect())
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            header,
            rows,
        })
    }

    fn column(&self, name: &str) -> Result<usize> {
        self.header.iter().position(|h| h == name).ok_or_else(|| {
            dataset_err(
                &self.path,
                format!("no column `{name}` (columns: {})", self.header.join(", ")),
            )
        })
    }

    fn cell(&self, row: usize, col: usize) -> Result<&str> {
        self.rows[row].get(col).map(|s| s.as_str()).ok_or_else(|| {
            dataset_err(
                &self.path,
                format!("row {} has no column `{}`", row + 2, self.header[col]),
            )
        })
    }

    /// The four covariates of `row` (physical units, sex coded).
    fn covariates(&self, row: usize, cols: &[usize; 4]) -> Result<[f64; 4]> {
        let mut out = [0.0; 4];
        for (i, &c) in cols.iter().enumerate() {
            let cell = self.cell(row, c)?;
            let value = if i == 0 {
                sex_code(cell)
            } else {
                cell.parse::<f64>().ok().filter(|v| v.is_finite())
            };
            out[i] = value.ok_or_else(|| {
                dataset_err(
                    &self.path,
                    format!(
                        "row {} column `{}`: {cell:?} is not {}",
                        row + 2,
                        self.header[c],
                        if i == 0 {
                            "a sex (F/M, female/male, 0/1)"
                        } else {
                            "a finite number"
                        }
                    ),
                )
            })?;
        }
        Ok(out)
    }
}

fn covariate_columns(table: &Table, cfg: &DataConfig) -> Result<[usize; 4]> {
    Ok([
        table.column(&cfg.sex_column)?,
        table.column(&cfg.age_column)?,
        table.column(&cfg.ventricular_volume_column)?,
        table.column(&cfg.brain_volume_column)?,
    ])
}

/// The T1w image of a BIDS subject: the first `*_T1w.nii.gz` / `*_T1w.nii` in `anat/`.
fn bids_image(root: &Path, id: &str) -> Option<PathBuf> {
    let dir = root.join(id).join("anat");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("_T1w.nii.gz") || n.ends_with("_T1w.nii"))
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

impl Dataset {
    /// Opens a BIDS folder (a directory with `participants.tsv`) or a CSV/TSV manifest (a
    /// file), reading covariates when `with_covariates`, and checks every image header: all
    /// images must exist and share one 3D shape.
    ///
    /// With `cfg.preprocess`, the shape and affine are those of the first image after
    /// preprocessing (it is read whole), and the images must share one shape after it: their
    /// headers must be 3D, and when no target `shape` is given (so the shape follows each
    /// field of view) every image is read and preprocessed to see its shape.
    ///
    /// # Errors
    /// [`TrainError::Dataset`] naming the file, row and column (missing column, non-numeric or
    /// non-finite value, missing image, no subject); [`TrainError::ImageShape`] naming the
    /// first image whose shape (after preprocessing) differs; [`TrainError::Nifti`] for an
    /// unreadable header or image, or a failed preprocessing step;
    /// [`TrainError::InvalidConfig`] for invalid preprocessing options.
    pub fn open(path: impl AsRef<Path>, cfg: &DataConfig, with_covariates: bool) -> Result<Self> {
        let path = path.as_ref();
        let mut subjects = Vec::new();
        if path.is_dir() {
            let tsv = path.join("participants.tsv");
            if tsv.is_file() {
                let table = Table::read(&tsv)?;
                let id_col = table.column("participant_id")?;
                let cols = if with_covariates {
                    Some(covariate_columns(&table, cfg)?)
                } else {
                    None
                };
                for row in 0..table.rows.len() {
                    let id = table.cell(row, id_col)?.to_string();
                    let image = bids_image(path, &id).ok_or_else(|| {
                        dataset_err(
                            &tsv,
                            format!("row {}: no {id}/anat/*_T1w.nii[.gz]", row + 2),
                        )
                    })?;
                    let covariates = cols
                        .as_ref()
                        .map(|c| table.covariates(row, c))
                        .transpose()?;
                    subjects.push(Subject {
                        id,
                        image,
                        covariates,
                    });
                }
            } else if with_covariates {
                return Err(dataset_err(
                    path,
                    "no participants.tsv (covariates are needed)".into(),
                ));
            } else {
                let mut ids: Vec<String> = std::fs::read_dir(path)
                    .map_err(io(path))?
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with("sub-"))
                    .collect();
                ids.sort();
                for id in ids {
                    if let Some(image) = bids_image(path, &id) {
                        subjects.push(Subject {
                            id,
                            image,
                            covariates: None,
                        });
                    }
                }
            }
        } else {
            let table = Table::read(path)?;
            let image_col = table.column(&cfg.image_column)?;
            let cols = if with_covariates {
                Some(covariate_columns(&table, cfg)?)
            } else {
                None
            };
            let base = path.parent().unwrap_or(Path::new("."));
            for row in 0..table.rows.len() {
                let rel = table.cell(row, image_col)?;
                let image = base.join(rel);
                let covariates = cols
                    .as_ref()
                    .map(|c| table.covariates(row, c))
                    .transpose()?;
                subjects.push(Subject {
                    id: rel.to_string(),
                    image,
                    covariates,
                });
            }
        }
        let preprocess = cfg.preprocess_options()?;
        let first = subjects
            .first()
            .ok_or_else(|| dataset_err(path, "no subject with a T1w image".into()))?;
        let header = |p: &Path| {
            brain_ldm_nifti::read_header(p).map_err(|source| TrainError::Nifti {
                path: p.to_path_buf(),
                source: Box::new(source),
            })
        };
        let shape_of = |h: &brain_ldm_nifti::NiftiHeader| -> Vec<usize> {
            let n = (h.dim[0].max(0) as usize).min(7);
            h.dim[1..=n].iter().map(|&d| d as usize).collect()
        };
        let h0 = header(&first.image)?;
        let s0 = shape_of(&h0);
        if s0.len() != 3 {
            return Err(TrainError::ImageShape {
                path: first.image.clone(),
                expected: "a 3D volume".into(),
                got: s0,
            });
        }
        let (image_shape, affine, after) = match &preprocess {
            None => (
                [s0[0], s0[1], s0[2]],
                brain_ldm_nifti::header_affine(&h0).0,
                "",
            ),
            Some(p) => {
                let v = read_image(&first.image, Some(p))?;
                (v.shape(), v.affine, " after preprocessing")
            }
        };
        for s in &subjects[1..] {
            let stored = shape_of(&header(&s.image)?);
            let shape = match &preprocess {
                None => stored,
                Some(_) if stored.len() != 3 => {
                    return Err(TrainError::ImageShape {
                        path: s.image.clone(),
                        expected: "a 3D volume".into(),
                        got: stored,
                    })
                }
                Some(p) => match p.shape {
                    Some(shape) => shape.to_vec(),
                    None => read_image(&s.image, Some(p))?.shape().to_vec(),
                },
            };
            if shape != image_shape {
                return Err(TrainError::ImageShape {
                    path: s.image.clone(),
                    expected: format!(
                        "{image_shape:?}, the shape of {}{after}",
                        first.image.display()
                    ),
                    got: shape,
                });
            }
        }
        Ok(Self {
            root: path.to_path_buf(),
            subjects,
            image_shape,
            affine,
        })
    }

    /// Splits the subjects into training and validation sets: a `fraction` of them (rounded,
    /// at least one when `fraction > 0`), chosen by a permutation seeded with `seed`; both in
    /// the table's order.
    ///
    /// # Errors
    /// [`TrainError::Dataset`] when no training subject would remain.
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(Vec<Subject>, Vec<Subject>)> {
        let (train, val) = self.split_indices(fraction, seed)?;
        let pick = |idx: Vec<usize>| idx.into_iter().map(|i| self.subjects[i].clone()).collect();
        Ok((pick(train), pick(val)))
    }

    /// The split of [`Dataset::split`] as ascending indices into [`Dataset::subjects`]:
    /// `(training, validation)`.
    ///
    /// # Errors
    /// [`TrainError::Dataset`] when no training subject would remain.
    pub fn split_indices(&self, fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
        let n = self.subjects.len();
        let n_val = if fraction > 0.0 {
            ((n as f64 * fraction).round() as usize).max(1)
        } else {
            0
        };
        if n_val >= n {
            return Err(dataset_err(
                &self.root,
                format!(
                    "{n} subjects leave none for training after holding out {n_val} for validation"
                ),
            ));
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_5A17));
        let mut held_out = vec![false; n];
        for &i in &order[..n_val] {
            held_out[i] = true;
        }
        Ok((0..n).partition(|&i| !held_out[i]))
    }
}

/// Min/max of each physical covariate over `subjects` (the training set): the scaling stored
/// with the model so that sampling takes physical units.
///
/// # Errors
/// [`TrainError::Dataset`] when a covariate has no covariates or does not vary.
pub fn covariate_scaling(subjects: &[Subject], root: &Path) -> Result<CovariateScaling> {
    let mut lo = [f64::INFINITY; 4];
    let mut hi = [f64::NEG_INFINITY; 4];
    for s in subjects {
        let c = s
            .covariates
            .ok_or_else(|| dataset_err(root, format!("{}: covariates were not read", s.id)))?;
        for i in 0..4 {
            lo[i] = lo[i].min(c[i]);
            hi[i] = hi[i].max(c[i]);
        }
    }
    for (i, name) in ["age", "ventricular volume", "brain volume"]
        .iter()
        .enumerate()
    {
        if hi[i + 1].is_nan() || hi[i + 1] <= lo[i + 1] {
            return Err(dataset_err(
                root,
                format!("{name} does not vary over the training set: min/max scaling is undefined"),
            ));
        }
    }
    Ok(CovariateScaling {
        age_years: (lo[1], hi[1]),
        ventricular_volume_mm3: (lo[2], hi[2]),
        brain_volume_mm3: (lo[3], hi[3]),
    })
}

/// The normalised conditioning vectors `[b, 4]` of `subjects`.
///
/// # Errors
/// As [`brain_ldm::CovariateScaling::normalise`].
pub fn conditioning(subjects: &[&Subject], scaling: &CovariateScaling) -> Result<Vec<[f32; 4]>> {
    subjects
        .iter()
        .map(|s| {
            let c = s.covariates.unwrap_or([0.0; 4]);
            let sex = if c[0] >= 0.5 {
                brain_ldm::Sex::Male
            } else {
                brain_ldm::Sex::Female
            };
            let cov = brain_ldm::Covariates {
                sex,
                age_years: c[1],
                ventricular_volume_mm3: c[2],
                brain_volume_mm3: c[3],
            };
            Ok(scaling.normalise(&cov)?.0)
        })
        .collect()
}

/// The order of the `n` training items in `epoch`: a permutation drawn from `(seed, epoch)`
/// alone, so a resumed run sees the same batches.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(seed, epoch, 0xE90C)));
    order
}

/// A 64-bit mix of a seed and two counters (SplitMix64 finaliser).
pub(crate) fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Which items micro-batch `index` of a run holds: epochs of `floor(n / batch)` batches over
/// [`epoch_order`] (the incomplete last batch of an epoch is dropped).
pub fn batch_items(n: usize, batch: usize, seed: u64, index: u64) -> (u64, Vec<usize>) {
    let per_epoch = (n / batch).max(1) as u64;
    let epoch = index / per_epoch;
    let k = (index % per_epoch) as usize;
    let order = epoch_order(n, seed, epoch);
    (epoch, order[k * batch..(k + 1) * batch].to_vec())
}

fn nifti_error(path: &Path) -> impl Fn(brain_ldm_nifti::Error) -> TrainError + '_ {
    move |source| TrainError::Nifti {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

/// Reads one image and, with `preprocess`, brings it into the model's space
/// ([`PreprocessOptions::apply`]).
///
/// # Errors
/// [`TrainError::Nifti`] naming the image: unreadable, or a preprocessing step failed.
pub fn read_image(path: &Path, preprocess: Option<&PreprocessOptions>) -> Result<Volume> {
    let volume = brain_ldm_nifti::read(path).map_err(nifti_error(path))?;
    match preprocess {
        Some(p) => p.apply(&volume).map_err(nifti_error(path)),
        None => Ok(volume),
    }
}

/// Reads one image as stored as a `[1, 1, d, h, w]` f32 tensor.
///
/// # Errors
/// [`TrainError::Nifti`].
pub fn load_image(path: &Path, device: &Device) -> Result<Tensor> {
    load_preprocessed(path, None, device)
}

/// Reads one image as a `[1, 1, d, h, w]` f32 tensor after `preprocess` ([`read_image`]);
/// with `None` as [`load_image`].
///
/// # Errors
/// [`TrainError::Nifti`].
pub fn load_preprocessed(
    path: &Path,
    preprocess: Option<&PreprocessOptions>,
    device: &Device,
) -> Result<Tensor> {
    read_image(path, preprocess)?
        .to_tensor(device)
        .map_err(nifti_error(path))
}

/// Loads the images of the upcoming micro-batches on another thread, `prefetch` batches ahead,
/// in the order of `batches` (each a list of image paths), each image read and preprocessed
/// there as [`load_preprocessed`] does; yields `[b, 1, d, h, w]` tensors.
pub struct Prefetcher {
    rx: mpsc::Receiver<Result<Tensor>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Prefetcher {
    /// Starts the loader thread; `preprocess`: as [`load_preprocessed`].
    pub fn start(
        batches: Vec<Vec<PathBuf>>,
        prefetch: usize,
        preprocess: Option<PreprocessOptions>,
    ) -> Self {
        let (tx, rx) = mpsc::sync_channel(prefetch.max(1));
        let handle = std::thread::spawn(move || {
            for paths in batches {
                let batch = paths
                    .iter()
                    .map(|p| load_preprocessed(p, preprocess.as_ref(), &Device::Cpu))
                    .collect::<Result<Vec<_>>>()
                    .and_then(|ts| Ok(Tensor::cat(&ts, 0)?));
                if tx.send(batch).is_err() {
                    return;
                }
            }
        });
        Self {
            rx,
            handle: Some(handle),
        }
    }

    /// The next batch.
    ///
    /// # Errors
    /// The loader's error, or [`TrainError::Dataset`] if the thread ended early.
    pub fn next_batch(&mut self) -> Result<Tensor> {
        self.rx.recv().unwrap_or_else(|_| {
            Err(TrainError::Dataset {
                path: PathBuf::new(),
                reason: "the image loader thread stopped".into(),
            })
        })
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Unblock the loader (it sees the closed channel) and wait for it.
        let (_, dead) = mpsc::sync_channel(0);
        let rx = std::mem::replace(&mut self.rx, dead);
        drop(rx);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
