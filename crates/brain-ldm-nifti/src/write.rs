//! Writing `.nii` and `.nii.gz` files, atomically (temporary file in the same directory,
//! then rename).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::affine::{qform_params, Affine};
use crate::datatype::{ByteOrder, DataType};
use crate::error::{Error, Result};
use crate::header::{NiftiHeader, NiftiVersion};
use crate::layout::encode_volume;
use crate::volume::Volume;

/// NIfTI `NIFTI_XFORM_ALIGNED_ANAT`, the transform code used when the source had none.
pub const XFORM_ALIGNED_ANAT: i32 = 2;
/// NIfTI `xyzt_units` for millimetres.
const UNITS_MM: i32 = 2;

/// Options for writing a volume; [`WriteOptions::write`] does the writing.
///
/// # Example
/// ```no_run
/// use brain_ldm_nifti::{DataType, WriteOptions};
///
/// let vol = brain_ldm_nifti::read("in.nii.gz")?;
/// WriteOptions::new().datatype(DataType::I16).write(&vol, "out.nii.gz")?;
/// # Ok::<(), brain_ldm_nifti::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    datatype: DataType,
    version: NiftiVersion,
    byte_order: ByteOrder,
    compression: u32,
    xform_code: Option<i32>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            datatype: DataType::F32,
            version: NiftiVersion::V1,
            byte_order: ByteOrder::Little,
            compression: 1,
            xform_code: None,
        }
    }
}

impl WriteOptions {
    /// Defaults: float32, NIfTI-1, little-endian, gzip level 1 (nibabel's default), transform
    /// codes from the source header.
    pub fn new() -> WriteOptions {
        WriteOptions::default()
    }

    /// Stored datatype. Float types store the values as they are. Integer types store them
    /// unscaled (`scl_slope` 1, `scl_inter` 0) when every value is a whole number in the
    /// type's range, else linearly scaled so that the data's [min, max] spans the type's
    /// range (error at most half a step, `(max − min) / (type max − type min) / 2`, plus the
    /// rounding of slope and intercept to the header's float type).
    pub fn datatype(mut self, datatype: DataType) -> WriteOptions {
        self.datatype = datatype;
        self
    }

    /// NIfTI-1 (the default; extents up to 32767, f32 header reals) or NIfTI-2.
    pub fn version(mut self, version: NiftiVersion) -> WriteOptions {
        self.version = version;
        self
    }

    /// Byte order of header and data.
    pub fn byte_order(mut self, order: ByteOrder) -> WriteOptions {
        self.byte_order = order;
        self
    }

    /// gzip level 0–9 for `.nii.gz` (default 1, as nibabel).
    pub fn compression(mut self, level: u32) -> WriteOptions {
        self.compression = level.min(9);
        self
    }

    /// `sform_code` and `qform_code` to write. Default: the source header's `sform_code`
    /// if nonzero, else its `qform_code` if nonzero, else 2 (aligned anatomical).
    pub fn xform_code(mut self, code: i32) -> WriteOptions {
        self.xform_code = Some(code);
        self
    }

    /// Writes `volume` to `path` (`.nii` or `.nii.gz`, gzip chosen by the name).
    ///
    /// The sform is the affine; the qform is nibabel's `set_qform` of the same affine
    /// (shears stripped). The file is written to a temporary file in the same directory and
    /// renamed over `path`, so a failed write never leaves a partial output.
    ///
    /// # Errors
    /// [`Error::BadExtension`], [`Error::BadDimensions`] (NIfTI-1 extents above 32767),
    /// [`Error::BadAffine`] (zero voxel size), [`Error::NotRepresentable`] (NaN/Inf to an
    /// integer type), [`Error::Io`].
    pub fn write(&self, volume: &Volume, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let lower = path.to_string_lossy().to_ascii_lowercase();
        let gz = if lower.ends_with(".nii.gz") {
            true
        } else if lower.ends_with(".nii") {
            false
        } else {
            return Err(Error::BadExtension {
                path: path.to_path_buf(),
            });
        };
        let shape = volume.shape();
        let values = volume.values();
        let (slope, inter) = self.scaling(&values, path)?;
        let header = self.header(volume, path, slope, inter)?;
        let dtype = self.datatype;
        let data = match dtype.int_range() {
            None => encode_volume(&values, shape, dtype, self.byte_order, |v| v as f64),
            Some((lo, hi)) => encode_volume(&values, shape, dtype, self.byte_order, |v| {
                ((v as f64 - inter) / slope).round().clamp(lo, hi)
            }),
        };
        write_atomic(path, |out| {
            if gz {
                let mut enc = GzEncoder::new(out, Compression::new(self.compression));
                enc.write_all(&header.to_bytes())?;
                enc.write_all(&data)?;
                enc.finish()?.flush()
            } else {
                out.write_all(&header.to_bytes())?;
                out.write_all(&data)?;
                out.flush()
            }
        })
    }

    /// `(slope, inter)` for the stored type, rounded to the header's float precision.
    fn scaling(&self, values: &[f32], path: &Path) -> Result<(f64, f64)> {
        let Some((lo, hi)) = self.datatype.int_range() else {
            return Ok((1.0, 0.0));
        };
        let mut min = f64::INFINITY;
        let mut max = f64::NEG_INFINITY;
        let mut whole = true;
        for &v in values {
            if !v.is_finite() {
                return Err(Error::NotRepresentable {
                    path: path.to_path_buf(),
                    datatype: self.datatype.name().to_string(),
                    value: v,
                });
            }
            let v = v as f64;
            min = min.min(v);
            max = max.max(v);
            whole &= v.fract() == 0.0;
        }
        if values.is_empty() || (whole && min >= lo && max <= hi) {
            return Ok((1.0, 0.0));
        }
        let round = |x: f64| match self.version {
            NiftiVersion::V1 => x as f32 as f64,
            NiftiVersion::V2 => x,
        };
        let slope = if max > min {
            round((max - min) / (hi - lo))
        } else {
            1.0
        };
        let inter = round(min - lo * slope);
        Ok((slope, inter))
    }

    fn header(&self, volume: &Volume, path: &Path, slope: f64, inter: f64) -> Result<NiftiHeader> {
        let shape = volume.shape();
        if self.version == NiftiVersion::V1 {
            if let Some(&e) = shape.iter().find(|&&e| e > i16::MAX as usize) {
                return Err(Error::BadDimensions {
                    path: path.to_path_buf(),
                    dim: [
                        3,
                        shape[0] as i64,
                        shape[1] as i64,
                        shape[2] as i64,
                        1,
                        1,
                        1,
                        1,
                    ],
                    reason: format!("extent {e} exceeds NIfTI-1's 32767; write NIfTI-2"),
                });
            }
        }
        let affine: &Affine = &volume.affine;
        let (quatern, qoffset, qfac, zooms) = qform_params(affine);
        if zooms.iter().any(|z| !z.is_finite() || *z == 0.0) {
            return Err(Error::BadAffine { voxel_sizes: zooms });
        }
        let source = volume.header.as_ref();
        let code = self.xform_code.unwrap_or(match source {
            Some(h) if h.sform_code != 0 => h.sform_code,
            Some(h) if h.qform_code != 0 => h.qform_code,
            _ => XFORM_ALIGNED_ANAT,
        });
        let xyzt_units = match source {
            Some(h) if h.xyzt_units != 0 => h.xyzt_units,
            _ => UNITS_MM,
        };
        Ok(NiftiHeader {
            version: self.version,
            byte_order: self.byte_order,
            dim: [
                3,
                shape[0] as i64,
                shape[1] as i64,
                shape[2] as i64,
                1,
                1,
                1,
                1,
            ],
            datatype: self.datatype.code(),
            bitpix: (self.datatype.size() * 8) as i16,
            pixdim: [qfac, zooms[0], zooms[1], zooms[2], 1.0, 1.0, 1.0, 1.0],
            vox_offset: (self.version.header_size() + 4) as f64,
            scl_slope: slope,
            scl_inter: inter,
            qform_code: code,
            sform_code: code,
            quatern,
            qoffset,
            srow: [affine[0], affine[1], affine[2]],
            descrip: source.map(|h| h.descrip.clone()).unwrap_or_default(),
            xyzt_units,
            magic: self.version.single_magic().to_string(),
            ..NiftiHeader::default()
        })
    }
}

/// Writes `volume` as float32 NIfTI-1, little-endian, with default [`WriteOptions`].
///
/// # Errors
/// As [`WriteOptions::write`].
pub fn write(volume: &Volume, path: impl AsRef<Path>) -> Result<()> {
    WriteOptions::new().write(volume, path)
}

/// Runs `fill` on a buffered temporary file beside `path`, then renames it to `path`.
fn write_atomic<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
{
    let io_err = |p: PathBuf| move |source| Error::Io { path: p, source };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".brain-ldm-nifti-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_err(dir.to_path_buf()))?;
    {
        let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
        fill(&mut out).map_err(io_err(tmp.path().to_path_buf()))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(io_err(tmp.path().to_path_buf()))?;
    set_readable(tmp.as_file()).map_err(io_err(tmp.path().to_path_buf()))?;
    tmp.persist(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// Temporary files are created private (0600); outputs get the usual 0644.
#[cfg(unix)]
fn set_readable(file: &File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn set_readable(_file: &File) -> std::io::Result<()> {
    Ok(())
}
