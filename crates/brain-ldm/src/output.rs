//! Writing generated samples: one NIfTI per sample, a PNG preview (three orthogonal
//! mid-slices) and a JSON sidecar with the covariates and settings, each through a temporary
//! file renamed into place. The sidecar is written last, so its presence marks a complete
//! sample and `--resume` can skip it.

use crate::covariates::{Conditioning, Covariates};
use crate::error::{Error, Result};
use brain_ldm_nifti::{Affine, DataType, Volume, WriteOptions};
use candle_core::Tensor;
use image::ImageEncoder as _;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How voxels are stored in the NIfTI files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VoxelFormat {
    /// The decoder's output as is, float32.
    #[default]
    F32,
    /// Clamped to [0, 1] and scaled to 0–255 as uint8, as the public bundle's saver stores
    /// its samples.
    U8,
}

/// Everything that determines a sample, stored in its sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// The sample's index in its run (part of its file names).
    pub index: usize,
    /// The run's seed; `(seed, index)` determines the starting noise.
    pub seed: u64,
    /// The covariates in physical units, when given so.
    pub covariates: Option<Covariates>,
    /// The normalised conditioning vector fed to the model.
    pub conditioning: Conditioning,
    /// The scheduler's name.
    pub scheduler: String,
    /// Number of denoising steps.
    pub steps: usize,
    /// DDIM's eta (0 = deterministic).
    pub eta: f64,
    /// Where the model came from.
    pub model: String,
    /// The classifier-free guidance scale (1: plain conditional sampling, 0: unconditional);
    /// 1 in sidecars written before guidance existed.
    #[serde(default = "plain_conditional")]
    pub guidance_scale: f64,
}

/// The guidance scale of plain conditional sampling, for sidecars without one.
fn plain_conditional() -> f64 {
    1.0
}

/// The three files of one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplePaths {
    /// `sample-NNNN.nii.gz`.
    pub nifti: PathBuf,
    /// `sample-NNNN.png`.
    pub preview: PathBuf,
    /// `sample-NNNN.json`.
    pub sidecar: PathBuf,
}

/// Writes samples into one folder.
#[derive(Debug, Clone)]
pub struct SampleWriter {
    dir: PathBuf,
    format: VoxelFormat,
    affine: Affine,
}

impl SampleWriter {
    /// A writer into `dir` (created if needed), storing voxels as `format` on the grid
    /// `affine`.
    ///
    /// # Errors
    /// [`Error::Io`] when the folder cannot be created or written to (checked now, before any
    /// long computation).
    pub fn new(dir: impl AsRef<Path>, format: VoxelFormat, affine: Affine) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let io = |source| Error::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let probe = dir.join(format!(".write-test-{}", std::process::id()));
        std::fs::write(&probe, b"").map_err(io)?;
        std::fs::remove_file(&probe).map_err(io)?;
        Ok(Self {
            dir,
            format,
            affine,
        })
    }

    /// The file names of sample `index`.
    pub fn paths(&self, index: usize) -> SamplePaths {
        let stem = format!("sample-{index:04}");
        SamplePaths {
            nifti: self.dir.join(format!("{stem}.nii.gz")),
            preview: self.dir.join(format!("{stem}.png")),
            sidecar: self.dir.join(format!("{stem}.json")),
        }
    }

    /// Whether sample `record.index` was already written with exactly these settings.
    pub fn is_complete(&self, record: &SampleRecord) -> bool {
        let paths = self.paths(record.index);
        let same = std::fs::read_to_string(&paths.sidecar)
            .ok()
            .and_then(|s| serde_json::from_str::<SampleRecord>(&s).ok())
            .is_some_and(|stored| &stored == record);
        same && paths.nifti.is_file() && paths.preview.is_file()
    }

    /// Writes the image `(1, 1, D, H, W)` of `record.index`: NIfTI, PNG, then the sidecar.
    ///
    /// # Errors
    /// NIfTI, PNG or I/O errors naming the file; a previous complete sample is not touched
    /// before the new NIfTI is fully written.
    pub fn write(&self, image: &Tensor, record: &SampleRecord) -> Result<SamplePaths> {
        let paths = self.paths(record.index);
        let image = match self.format {
            VoxelFormat::F32 => image.clone(),
            VoxelFormat::U8 => (image.clamp(0f32, 1f32)? * 255.0)?.round()?,
        };
        let volume = Volume::from_tensor(&image, self.affine)?;
        let datatype = match self.format {
            VoxelFormat::F32 => DataType::F32,
            VoxelFormat::U8 => DataType::U8,
        };
        WriteOptions::new()
            .datatype(datatype)
            .write(&volume, &paths.nifti)?;
        write_preview(&volume, &paths.preview, self.format)?;
        let json = serde_json::to_string_pretty(record)
            .map_err(|e| Error::InvalidRequest(format!("cannot encode the sidecar: {e}")))?;
        write_atomically(&paths.sidecar, json.as_bytes())?;
        Ok(paths)
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let result = std::fs::write(&temporary, bytes).and_then(|()| std::fs::rename(&temporary, path));
    result.map_err(|source| {
        let _ = std::fs::remove_file(&temporary);
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// A grey-level PNG of the three orthogonal mid-slices side by side (sagittal, coronal,
/// axial), superior and anterior up, for a volume indexed `[i, j, k]` ≈ (x, y, z).
fn write_preview(volume: &Volume, path: &Path, format: VoxelFormat) -> Result<()> {
    let full_scale = match format {
        VoxelFormat::F32 => 1.0,
        VoxelFormat::U8 => 255.0,
    };
    let preview = mid_slices(volume, full_scale);
    write_grey_png(path, &preview)
}

/// An 8-bit grey image, rows top to bottom.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GreyImage {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width × height` values, row-major.
    pub pixels: Vec<u8>,
}

/// The three orthogonal mid-slices of `volume` side by side (sagittal, coronal, axial),
/// superior and anterior up, for a volume indexed `[i, j, k]` ≈ (x, y, z); `full_scale`
/// maps to white.
pub(crate) fn mid_slices(volume: &Volume, full_scale: f32) -> GreyImage {
    let [ni, nj, nk] = volume.shape();
    let data = &volume.data;
    let grey = |v: f32| ((v / full_scale).clamp(0.0, 1.0) * 255.0).round() as u8;
    let (ci, cj, ck) = (ni / 2, nj / 2, nk / 2);
    let panel = |w: usize, h: usize, value: &dyn Fn(usize, usize) -> f32| {
        let pixels: Vec<u8> = (0..h)
            .flat_map(|r| (0..w).map(move |c| (c, r)))
            .map(|(c, r)| grey(value(c, r)))
            .collect();
        (w, h, pixels)
    };
    let panels = [
        panel(nj, nk, &|c, r| data[[ci, c, nk - 1 - r]]),
        panel(ni, nk, &|c, r| data[[c, cj, nk - 1 - r]]),
        panel(ni, nj, &|c, r| data[[c, nj - 1 - r, ck]]),
    ];
    let width: usize = panels.iter().map(|p| p.0).sum();
    let height = panels.iter().map(|p| p.1).max().unwrap_or(0);
    let mut pixels = vec![0u8; width * height];
    let mut x0 = 0;
    for (w, h, panel_pixels) in &panels {
        for r in 0..*h {
            pixels[r * width + x0..r * width + x0 + w]
                .copy_from_slice(&panel_pixels[r * w..(r + 1) * w]);
        }
        x0 += w;
    }
    GreyImage {
        width,
        height,
        pixels,
    }
}

/// Encodes `image` as an 8-bit grey PNG and writes it atomically to `path`.
pub(crate) fn write_grey_png(path: &Path, image: &GreyImage) -> Result<()> {
    let png_error = |reason: String| Error::Png {
        path: path.to_path_buf(),
        reason,
    };
    let mut encoded = Vec::new();
    image::codecs::png::PngEncoder::new(&mut encoded)
        .write_image(
            &image.pixels,
            image.width as u32,
            image.height as u32,
            image::ExtendedColorType::L8,
        )
        .map_err(|e| png_error(e.to_string()))?;
    write_atomically(path, &encoded)
}
