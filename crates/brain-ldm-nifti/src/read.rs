//! Reading `.nii`, `.nii.gz` and `.hdr`/`.img` pairs (NIfTI-1 and NIfTI-2, either byte order).
//!
//! Every check on the header (magic, dimensions, voxel count, datatype, scaling, offset)
//! runs before any buffer sized from the header is allocated; data is then read only up to
//! what the file really holds, so a header claiming 2^40 voxels fails without allocating.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use ndarray::Array3;

use crate::affine::header_affine;
use crate::datatype::{CodeKind, DataType};
use crate::error::{Error, Result};
use crate::header::{NiftiHeader, NIFTI1_HEADER_SIZE, NIFTI2_HEADER_SIZE};
use crate::layout::decode_volume;
use crate::volume::Volume;

/// Default limit on voxels per 3D volume: 2^31 (8 GiB as f32).
pub const DEFAULT_MAX_VOXELS: u64 = 1 << 31;

/// Options for reading a volume; [`ReadOptions::read`] does the reading.
///
/// # Example
/// ```no_run
/// use brain_ldm_nifti::ReadOptions;
///
/// // The third volume of a 4D series.
/// let vol = ReadOptions::new().volume(2).read("bold.nii.gz")?;
/// println!("{:?} {:?}", vol.shape(), vol.voxel_sizes());
/// # Ok::<(), brain_ldm_nifti::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    volume: Option<usize>,
    max_voxels: u64,
    allow_non_finite: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            volume: None,
            max_voxels: DEFAULT_MAX_VOXELS,
            allow_non_finite: false,
        }
    }
}

impl ReadOptions {
    /// Defaults: no volume chosen (a 4D file with more than one volume is an error), at most
    /// [`DEFAULT_MAX_VOXELS`] voxels, NaN/Inf rejected.
    pub fn new() -> ReadOptions {
        ReadOptions::default()
    }

    /// Reads volume `index` (0-based) of a 4D file; 3D files have only volume 0.
    pub fn volume(mut self, index: usize) -> ReadOptions {
        self.volume = Some(index);
        self
    }

    /// Largest number of voxels in one 3D volume the reader accepts.
    pub fn max_voxels(mut self, limit: u64) -> ReadOptions {
        self.max_voxels = limit;
        self
    }

    /// Accepts NaN and infinite values instead of failing with [`Error::NonFinite`].
    pub fn allow_non_finite(mut self, allow: bool) -> ReadOptions {
        self.allow_non_finite = allow;
        self
    }

    /// Reads one 3D volume.
    ///
    /// The voxels are `raw · scl_slope + scl_inter` (computed in f64, stored as f32) when
    /// `scl_slope` is finite and nonzero, else the raw values (nibabel's `get_fdata`). The
    /// affine is nibabel's `img.affine` (see [`header_affine`]).
    ///
    /// # Errors
    /// A typed [`Error`] naming the file for: I/O and gzip failures, truncated header or
    /// data, `sizeof_hdr` or magic not NIfTI, invalid or too many dimensions, unknown or
    /// unsupported datatype, invalid scaling or `vox_offset`, an unchosen or missing volume,
    /// and NaN/Inf voxels (unless allowed).
    pub fn read(&self, path: impl AsRef<Path>) -> Result<Volume> {
        let path = path.as_ref();
        let files = Files::locate(path);
        let (header, mut header_stream) = open_header(&files.header)?;
        let layout = check_header(&header, &files)?;
        let volume = match (self.volume, layout.volumes) {
            (Some(v), n) if v >= n => {
                return Err(Error::VolumeOutOfRange {
                    path: path.to_path_buf(),
                    volume: v,
                    volumes: n,
                })
            }
            (Some(v), _) => v,
            (None, 1) => 0,
            (None, n) => {
                return Err(Error::VolumeNotChosen {
                    path: path.to_path_buf(),
                    volumes: n,
                })
            }
        };
        if layout.voxels > self.max_voxels as u128 {
            return Err(Error::TooManyVoxels {
                path: files.header.clone(),
                voxels: layout.voxels,
                limit: self.max_voxels,
            });
        }
        let bytes = match &files.data {
            None => read_data(
                &mut header_stream,
                header.version.header_size(),
                &layout,
                volume,
            )?,
            Some(data_path) => {
                let mut stream = Stream::open(data_path)?;
                read_data(&mut stream, 0, &layout, volume)?
            }
        };
        let scaling = header.slope_inter();
        let values = decode_volume(
            &bytes,
            layout.dtype,
            header.byte_order,
            layout.shape,
            scaling,
        );
        drop(bytes);
        if !self.allow_non_finite {
            check_finite(&values, layout.shape, volume, &files)?;
        }
        let [ni, nj, nk] = layout.shape;
        let data =
            Array3::from_shape_vec((ni, nj, nk), values).map_err(|e| Error::BadDimensions {
                path: files.header.clone(),
                dim: header.dim,
                reason: e.to_string(),
            })?;
        let (affine, _) = header_affine(&header);
        Ok(Volume {
            data,
            affine,
            header: Some(header),
        })
    }
}

/// Reads a 3D file (or a 4D file with one volume) with default [`ReadOptions`].
///
/// # Errors
/// As [`ReadOptions::read`].
///
/// # Example
/// ```no_run
/// let vol = brain_ldm_nifti::read("T1w.nii.gz")?;
/// println!("{}", vol.orientation()?);
/// # Ok::<(), brain_ldm_nifti::Error>(())
/// ```
pub fn read(path: impl AsRef<Path>) -> Result<Volume> {
    ReadOptions::new().read(path)
}

/// Reads and checks only the header (magic, dimensions, datatype, scaling, offset).
///
/// # Errors
/// As [`ReadOptions::read`], minus the data checks.
pub fn read_header(path: impl AsRef<Path>) -> Result<NiftiHeader> {
    let files = Files::locate(path.as_ref());
    let (header, _) = open_header(&files.header)?;
    check_header(&header, &files)?;
    Ok(header)
}

/// The shape of a volume and the geometry of the file's data, after the header checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    /// `[ni, nj, nk]` of one volume.
    pub shape: [usize; 3],
    /// Number of 3D volumes (dim\[4\], or 1).
    pub volumes: usize,
    /// Voxels per volume (as u128, so a huge claim does not overflow).
    pub voxels: u128,
    pub dtype: DataType,
    /// Byte offset of the data in the data file.
    pub offset: u64,
}

impl Layout {
    fn volume_bytes(&self) -> u128 {
        self.voxels * self.dtype.size() as u128
    }

    fn total_bytes(&self) -> u128 {
        self.volume_bytes() * self.volumes as u128
    }
}

/// Where header and data live: one `.nii[.gz]`, or a `.hdr`/`.img` pair.
struct Files {
    header: PathBuf,
    /// The `.img` of a pair; `None` for a single file.
    data: Option<PathBuf>,
}

impl Files {
    fn locate(path: &Path) -> Files {
        let name = path.to_string_lossy();
        let lower = name.to_ascii_lowercase();
        for (ext, hdr, img) in [
            (".hdr", ".hdr", ".img"),
            (".hdr.gz", ".hdr.gz", ".img.gz"),
            (".img", ".hdr", ".img"),
            (".img.gz", ".hdr.gz", ".img.gz"),
        ] {
            if lower.ends_with(ext) {
                let stem = &name[..name.len() - ext.len()];
                let keep_case = |new: &str| {
                    let orig = &name[name.len() - ext.len()..];
                    if orig.chars().any(|c| c.is_ascii_uppercase()) {
                        new.to_ascii_uppercase()
                    } else {
                        new.to_string()
                    }
                };
                return Files {
                    header: PathBuf::from(format!("{stem}{}", keep_case(hdr))),
                    data: Some(PathBuf::from(format!("{stem}{}", keep_case(img)))),
                };
            }
        }
        Files {
            header: path.to_path_buf(),
            data: None,
        }
    }
}

/// A byte stream from a file, gunzipped if it starts with the gzip magic.
struct Stream {
    path: PathBuf,
    reader: Box<dyn Read>,
    gz: bool,
    /// File length for an uncompressed file.
    len: Option<u64>,
}

impl Stream {
    fn open(path: &Path) -> Result<Stream> {
        let io_err = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let mut magic = [0u8; 2];
        let got = read_full(&mut file, &mut magic).map_err(io_err)?;
        let gz = got == 2 && magic == [0x1f, 0x8b];
        let head = io::Cursor::new(magic[..got].to_vec());
        let raw = head.chain(BufReader::with_capacity(1 << 16, file));
        let reader: Box<dyn Read> = if gz {
            Box::new(GzDecoder::new(raw))
        } else {
            Box::new(raw)
        };
        Ok(Stream {
            path: path.to_path_buf(),
            reader,
            gz,
            len: (!gz).then_some(len),
        })
    }

    fn err(&self, source: io::Error) -> Error {
        if self.gz {
            Error::Gzip {
                path: self.path.clone(),
                source,
            }
        } else {
            Error::Io {
                path: self.path.clone(),
                source,
            }
        }
    }

    /// Reads until `buf` is full or the stream ends; returns the count.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        read_full(&mut self.reader, buf).map_err(|e| self.err(e))
    }

    /// Skips up to `n` bytes; returns how many were skipped.
    fn skip(&mut self, n: u64) -> Result<u64> {
        io::copy(&mut (&mut self.reader).take(n), &mut io::sink()).map_err(|e| self.err(e))
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads exactly the header (348 or 540 bytes); the stream is left just after it.
fn open_header(path: &Path) -> Result<(NiftiHeader, Stream)> {
    let mut stream = Stream::open(path)?;
    let mut buf = vec![0u8; NIFTI2_HEADER_SIZE];
    let got = stream.fill(&mut buf[..4])?;
    let first = i32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let size = match (first, first.swap_bytes()) {
        (540, _) | (_, 540) => NIFTI2_HEADER_SIZE,
        _ => NIFTI1_HEADER_SIZE,
    };
    let got = if got == 4 {
        4 + stream.fill(&mut buf[4..size])?
    } else {
        got
    };
    let header = NiftiHeader::parse(&buf[..got], path)?;
    Ok((header, stream))
}

/// Every check that needs only the header.
fn check_header(h: &NiftiHeader, files: &Files) -> Result<Layout> {
    let path = &files.header;
    let single = files.data.is_none();
    let magic_ok = if single {
        h.magic == h.version.single_magic()
    } else {
        h.magic == h.version.pair_magic() || h.magic == h.version.single_magic()
    };
    if !magic_ok {
        return Err(Error::WrongMagic {
            path: path.clone(),
            expected: if single {
                h.version.single_magic().to_string()
            } else {
                h.version.pair_magic().to_string()
            },
            got: h.magic.clone(),
        });
    }
    let bad_dim = |reason: String| Error::BadDimensions {
        path: path.clone(),
        dim: h.dim,
        reason,
    };
    let ndim = h.dim[0];
    if !(1..=7).contains(&ndim) {
        return Err(bad_dim(format!("dim[0] = {ndim} must be 1 to 7")));
    }
    let ndim = ndim as usize;
    let mut extents = [1i64; 7];
    for (n, (extent, &e)) in extents.iter_mut().zip(&h.dim[1..=ndim]).enumerate() {
        if e < 1 {
            return Err(bad_dim(format!("dim[{}] = {e} must be at least 1", n + 1)));
        }
        *extent = e;
    }
    if let Some(n) = (4..7).find(|&n| extents[n] != 1) {
        return Err(bad_dim(format!(
            "dim[{}] = {}: images with more than 4 dimensions are not supported",
            n + 1,
            extents[n]
        )));
    }
    let to_usize =
        |e: i64| usize::try_from(e).map_err(|_| bad_dim(format!("extent {e} too large")));
    let shape = [
        to_usize(extents[0])?,
        to_usize(extents[1])?,
        to_usize(extents[2])?,
    ];
    let volumes = to_usize(extents[3])?;
    let voxels = shape.iter().map(|&e| e as u128).product::<u128>();
    let dtype = match DataType::classify(h.datatype as i32) {
        CodeKind::Supported(t) => t,
        CodeKind::Unsupported(name) => {
            return Err(Error::UnsupportedDatatype {
                path: path.clone(),
                code: h.datatype as i32,
                name,
            })
        }
        CodeKind::Unknown => {
            return Err(Error::UnknownDatatype {
                path: path.clone(),
                code: h.datatype as i32,
            })
        }
    };
    if let Some((slope, inter)) = h.slope_inter() {
        if !inter.is_finite() {
            return Err(Error::BadScaling {
                path: path.clone(),
                slope,
                inter,
            });
        }
    }
    let v = h.vox_offset;
    let bad_offset = |reason: &str| Error::BadVoxOffset {
        path: path.clone(),
        vox_offset: v,
        reason: reason.to_string(),
    };
    if !v.is_finite() || v < 0.0 || v.fract() != 0.0 {
        return Err(bad_offset("must be a non-negative whole number"));
    }
    if single && v < (h.version.header_size() + 4) as f64 {
        return Err(bad_offset(&format!(
            "a single file's data must start after the header and extension flag (at least {})",
            h.version.header_size() + 4
        )));
    }
    Ok(Layout {
        shape,
        volumes,
        voxels,
        dtype,
        offset: v as u64,
    })
}

/// Reads the bytes of volume `volume`; `consumed` bytes of the stream were already read.
fn read_data(
    stream: &mut Stream,
    consumed: usize,
    layout: &Layout,
    volume: usize,
) -> Result<Vec<u8>> {
    let data_path = stream.path.clone();
    let length_error = |got: u64| Error::DataLength {
        path: data_path.clone(),
        shape: [layout.shape.as_slice(), &[layout.volumes]].concat(),
        datatype: layout.dtype.name().to_string(),
        offset: layout.offset,
        expected: layout.total_bytes(),
        got,
    };
    if let Some(len) = stream.len {
        let got = len.saturating_sub(layout.offset);
        if (got as u128) < layout.total_bytes() {
            return Err(length_error(got));
        }
    }
    let before = layout.offset - consumed as u64;
    // volume · volume_bytes fits: the length check above or the voxel limit bounds it.
    let skip_in_data = layout.volume_bytes() * volume as u128;
    let skip = before as u128 + skip_in_data;
    let skip = u64::try_from(skip).map_err(|_| length_error(0))?;
    let skipped = stream.skip(skip)?;
    if skipped < skip {
        return Err(length_error(skipped.saturating_sub(before)));
    }
    let want = u64::try_from(layout.volume_bytes()).map_err(|_| length_error(0))?;
    let mut bytes = Vec::new();
    if stream.len.is_some() {
        // Verified present above, so this allocation is bounded by the file's size.
        bytes.reserve_exact(want as usize);
    }
    (&mut stream.reader)
        .take(want)
        .read_to_end(&mut bytes)
        .map_err(|e| stream.err(e))?;
    if (bytes.len() as u64) < want {
        return Err(length_error(skip - before + bytes.len() as u64));
    }
    Ok(bytes)
}

fn check_finite(
    values: &[f32],
    [_, nj, nk]: [usize; 3],
    volume: usize,
    files: &Files,
) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(n) => Err(Error::NonFinite {
            path: files.data.clone().unwrap_or_else(|| files.header.clone()),
            index: [n / (nj * nk), (n / nk) % nj, n % nk],
            volume,
            value: values[n],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_names() {
        let f = Files::locate(Path::new("/a/b.IMG"));
        assert_eq!(f.header, Path::new("/a/b.HDR"));
        assert_eq!(f.data.unwrap(), Path::new("/a/b.IMG"));
        let f = Files::locate(Path::new("x.hdr.gz"));
        assert_eq!(f.data.unwrap(), Path::new("x.img.gz"));
        assert!(Files::locate(Path::new("x.nii.gz")).data.is_none());
    }
}
