//! The NIfTI-1 (348-byte) and NIfTI-2 (540-byte) headers: parsing in either byte order and
//! encoding.
//!
//! Both versions are held in one [`NiftiHeader`] with every field widened to the NIfTI-2
//! type (i64 dimensions, f64 reals), so the rest of the crate never branches on the version.

use std::path::Path;

use crate::datatype::{ByteOrder, DataType};
use crate::error::{Error, Result};

/// Size of a NIfTI-1 header in bytes.
pub const NIFTI1_HEADER_SIZE: usize = 348;
/// Size of a NIfTI-2 header in bytes.
pub const NIFTI2_HEADER_SIZE: usize = 540;

/// The NIfTI format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NiftiVersion {
    /// NIfTI-1: 348-byte header, i16 dimensions, f32 reals.
    #[default]
    V1,
    /// NIfTI-2: 540-byte header, i64 dimensions, f64 reals.
    V2,
}

impl NiftiVersion {
    /// 1 or 2.
    pub fn number(self) -> u8 {
        match self {
            NiftiVersion::V1 => 1,
            NiftiVersion::V2 => 2,
        }
    }

    /// Header size in bytes (348 or 540).
    pub fn header_size(self) -> usize {
        match self {
            NiftiVersion::V1 => NIFTI1_HEADER_SIZE,
            NiftiVersion::V2 => NIFTI2_HEADER_SIZE,
        }
    }

    /// Magic of a single `.nii` file (`n+1` / `n+2`).
    pub fn single_magic(self) -> &'static str {
        match self {
            NiftiVersion::V1 => "n+1",
            NiftiVersion::V2 => "n+2",
        }
    }

    /// Magic of a `.hdr`/`.img` pair (`ni1` / `ni2`).
    pub fn pair_magic(self) -> &'static str {
        match self {
            NiftiVersion::V1 => "ni1",
            NiftiVersion::V2 => "ni2",
        }
    }
}

/// A NIfTI-1 or NIfTI-2 header, fields widened to NIfTI-2 types.
///
/// Fields keep the standard's names (`dim`, `pixdim`, `scl_slope`, `srow_x`, ...). The
/// header describes the file it was read from; preprocessing does not update it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NiftiHeader {
    /// Format version.
    pub version: NiftiVersion,
    /// Byte order of header and data.
    pub byte_order: ByteOrder,
    /// `dim`: dim\[0\] is the number of dimensions, dim\[1..=7\] the extents.
    pub dim: [i64; 8],
    /// `datatype` code (see [`DataType`]).
    pub datatype: i16,
    /// `bitpix` (bits per voxel; not used for reading, as nibabel).
    pub bitpix: i16,
    /// `pixdim`: pixdim\[0\] is qfac, pixdim\[1..=3\] the voxel sizes, pixdim\[4\] the TR.
    pub pixdim: [f64; 8],
    /// `vox_offset`: byte offset of the data in the data file.
    pub vox_offset: f64,
    /// `scl_slope`.
    pub scl_slope: f64,
    /// `scl_inter`.
    pub scl_inter: f64,
    /// `intent_code`.
    pub intent_code: i32,
    /// `intent_p1`, `intent_p2`, `intent_p3`.
    pub intent_p: [f64; 3],
    /// `intent_name`.
    pub intent_name: String,
    /// `qform_code`.
    pub qform_code: i32,
    /// `sform_code`.
    pub sform_code: i32,
    /// `quatern_b`, `quatern_c`, `quatern_d`.
    pub quatern: [f64; 3],
    /// `qoffset_x`, `qoffset_y`, `qoffset_z`.
    pub qoffset: [f64; 3],
    /// `srow_x`, `srow_y`, `srow_z`.
    pub srow: [[f64; 4]; 3],
    /// `descrip`.
    pub descrip: String,
    /// `aux_file`.
    pub aux_file: String,
    /// `xyzt_units` (2 = millimetres, 8 = seconds).
    pub xyzt_units: i32,
    /// `dim_info`.
    pub dim_info: u8,
    /// `slice_code`.
    pub slice_code: i32,
    /// `slice_start`.
    pub slice_start: i64,
    /// `slice_end`.
    pub slice_end: i64,
    /// `slice_duration`.
    pub slice_duration: f64,
    /// `toffset`.
    pub toffset: f64,
    /// `cal_min`.
    pub cal_min: f64,
    /// `cal_max`.
    pub cal_max: f64,
    /// `magic` (without the trailing NUL and NIfTI-2's `\r\n\x1a\n`).
    pub magic: String,
}

impl Default for NiftiHeader {
    fn default() -> Self {
        NiftiHeader {
            version: NiftiVersion::V1,
            byte_order: ByteOrder::Little,
            dim: [0, 1, 1, 1, 1, 1, 1, 1],
            datatype: DataType::F32.code(),
            bitpix: 32,
            pixdim: [1.0; 8],
            vox_offset: 352.0,
            scl_slope: 1.0,
            scl_inter: 0.0,
            intent_code: 0,
            intent_p: [0.0; 3],
            intent_name: String::new(),
            qform_code: 0,
            sform_code: 0,
            quatern: [0.0; 3],
            qoffset: [0.0; 3],
            srow: [
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
            ],
            descrip: String::new(),
            aux_file: String::new(),
            xyzt_units: 0,
            dim_info: 0,
            slice_code: 0,
            slice_start: 0,
            slice_end: 0,
            slice_duration: 0.0,
            toffset: 0.0,
            cal_min: 0.0,
            cal_max: 0.0,
            magic: "n+1".to_string(),
        }
    }
}

impl NiftiHeader {
    /// The datatype, if it is one this crate reads.
    pub fn data_type(&self) -> Option<DataType> {
        DataType::from_code(self.datatype as i32)
    }

    /// The scaling nibabel applies: `Some((slope, inter))`, or `None` when `scl_slope` is 0
    /// or not finite (no scaling). A non-finite `scl_inter` with a valid slope is returned as
    /// is; the reader rejects it.
    pub fn slope_inter(&self) -> Option<(f64, f64)> {
        if self.scl_slope == 0.0 || !self.scl_slope.is_finite() {
            None
        } else {
            Some((self.scl_slope, self.scl_inter))
        }
    }

    /// Voxel sizes from `pixdim[1..=3]` (nibabel's `header.get_zooms()[:3]`).
    pub fn zooms(&self) -> [f64; 3] {
        [self.pixdim[1], self.pixdim[2], self.pixdim[3]]
    }

    /// Number of dimensions (`dim[0]`).
    pub fn ndim(&self) -> i64 {
        self.dim[0]
    }

    /// Parses a header from the start of `buf`, detecting version and byte order from
    /// `sizeof_hdr` (348 or 540, in either byte order). The magic is not checked here.
    ///
    /// # Errors
    /// [`Error::TruncatedHeader`] if `buf` is shorter than the header, [`Error::NotNifti`] if
    /// `sizeof_hdr` is neither size in either byte order. `path` only names the file in errors.
    pub fn parse(buf: &[u8], path: &Path) -> Result<NiftiHeader> {
        if buf.len() < 4 {
            return Err(Error::TruncatedHeader {
                path: path.to_path_buf(),
                expected: NIFTI1_HEADER_SIZE as u64,
                got: buf.len() as u64,
            });
        }
        let first = [buf[0], buf[1], buf[2], buf[3]];
        let le = i32::from_le_bytes(first);
        let be = i32::from_be_bytes(first);
        let (version, order) = match (le, be) {
            (348, _) => (NiftiVersion::V1, ByteOrder::Little),
            (540, _) => (NiftiVersion::V2, ByteOrder::Little),
            (_, 348) => (NiftiVersion::V1, ByteOrder::Big),
            (_, 540) => (NiftiVersion::V2, ByteOrder::Big),
            _ => {
                return Err(Error::NotNifti {
                    path: path.to_path_buf(),
                    sizeof_hdr: le,
                })
            }
        };
        if buf.len() < version.header_size() {
            return Err(Error::TruncatedHeader {
                path: path.to_path_buf(),
                expected: version.header_size() as u64,
                got: buf.len() as u64,
            });
        }
        let r = Fields { buf, order };
        Ok(match version {
            NiftiVersion::V1 => r.nifti1(),
            NiftiVersion::V2 => r.nifti2(),
        })
    }

    /// Encodes the header for a single `.nii` file: the header (magic `n+1`/`n+2`) followed by
    /// four zero bytes (no extensions), in `self.byte_order`.
    ///
    /// NIfTI-1 stores dimensions as i16 and reals as f32; values are cast (the writer checks
    /// the dimensions first).
    pub fn to_bytes(&self) -> Vec<u8> {
        let size = self.version.header_size();
        let mut buf = vec![0u8; size + 4];
        let mut w = FieldsMut {
            buf: &mut buf,
            order: self.byte_order,
        };
        match self.version {
            NiftiVersion::V1 => w.nifti1(self),
            NiftiVersion::V2 => w.nifti2(self),
        }
        buf
    }
}

/// Reads typed fields at byte offsets.
struct Fields<'a> {
    buf: &'a [u8],
    order: ByteOrder,
}

macro_rules! getter {
    ($name:ident, $t:ty, $w:expr) => {
        fn $name(&self, off: usize) -> $t {
            let mut b = [0u8; $w];
            b.copy_from_slice(&self.buf[off..off + $w]);
            match self.order {
                ByteOrder::Little => <$t>::from_le_bytes(b),
                ByteOrder::Big => <$t>::from_be_bytes(b),
            }
        }
    };
}

impl Fields<'_> {
    getter!(i16, i16, 2);
    getter!(i32, i32, 4);
    getter!(i64, i64, 8);
    getter!(f32, f32, 4);
    getter!(f64, f64, 8);

    fn f32_as_f64(&self, off: usize) -> f64 {
        self.f32(off) as f64
    }

    fn text(&self, off: usize, len: usize) -> String {
        let bytes = &self.buf[off..off + len];
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(len);
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    }

    fn nifti1(&self) -> NiftiHeader {
        let mut dim = [0i64; 8];
        let mut pixdim = [0f64; 8];
        for n in 0..8 {
            dim[n] = self.i16(40 + 2 * n) as i64;
            pixdim[n] = self.f32_as_f64(76 + 4 * n);
        }
        let row = |off: usize| {
            [
                self.f32_as_f64(off),
                self.f32_as_f64(off + 4),
                self.f32_as_f64(off + 8),
                self.f32_as_f64(off + 12),
            ]
        };
        NiftiHeader {
            version: NiftiVersion::V1,
            byte_order: self.order,
            dim,
            datatype: self.i16(70),
            bitpix: self.i16(72),
            pixdim,
            vox_offset: self.f32_as_f64(108),
            scl_slope: self.f32_as_f64(112),
            scl_inter: self.f32_as_f64(116),
            intent_code: self.i16(68) as i32,
            intent_p: [
                self.f32_as_f64(56),
                self.f32_as_f64(60),
                self.f32_as_f64(64),
            ],
            intent_name: self.text(328, 16),
            qform_code: self.i16(252) as i32,
            sform_code: self.i16(254) as i32,
            quatern: [
                self.f32_as_f64(256),
                self.f32_as_f64(260),
                self.f32_as_f64(264),
            ],
            qoffset: [
                self.f32_as_f64(268),
                self.f32_as_f64(272),
                self.f32_as_f64(276),
            ],
            srow: [row(280), row(296), row(312)],
            descrip: self.text(148, 80),
            aux_file: self.text(228, 24),
            xyzt_units: self.buf[123] as i32,
            dim_info: self.buf[39],
            slice_code: self.buf[122] as i32,
            slice_start: self.i16(74) as i64,
            slice_end: self.i16(120) as i64,
            slice_duration: self.f32_as_f64(132),
            toffset: self.f32_as_f64(136),
            cal_max: self.f32_as_f64(124),
            cal_min: self.f32_as_f64(128),
            magic: self.text(344, 4),
        }
    }

    fn nifti2(&self) -> NiftiHeader {
        let mut dim = [0i64; 8];
        let mut pixdim = [0f64; 8];
        for n in 0..8 {
            dim[n] = self.i64(16 + 8 * n);
            pixdim[n] = self.f64(104 + 8 * n);
        }
        let row = |off: usize| {
            [
                self.f64(off),
                self.f64(off + 8),
                self.f64(off + 16),
                self.f64(off + 24),
            ]
        };
        NiftiHeader {
            version: NiftiVersion::V2,
            byte_order: self.order,
            dim,
            datatype: self.i16(12),
            bitpix: self.i16(14),
            pixdim,
            vox_offset: self.i64(168) as f64,
            scl_slope: self.f64(176),
            scl_inter: self.f64(184),
            intent_code: self.i32(504),
            intent_p: [self.f64(80), self.f64(88), self.f64(96)],
            intent_name: self.text(508, 16),
            qform_code: self.i32(344),
            sform_code: self.i32(348),
            quatern: [self.f64(352), self.f64(360), self.f64(368)],
            qoffset: [self.f64(376), self.f64(384), self.f64(392)],
            srow: [row(400), row(432), row(464)],
            descrip: self.text(240, 80),
            aux_file: self.text(320, 24),
            xyzt_units: self.i32(500),
            dim_info: self.buf[524],
            slice_code: self.i32(496),
            slice_start: self.i64(224),
            slice_end: self.i64(232),
            slice_duration: self.f64(208),
            toffset: self.f64(216),
            cal_max: self.f64(192),
            cal_min: self.f64(200),
            magic: self.text(4, 8),
        }
    }
}

/// Writes typed fields at byte offsets.
struct FieldsMut<'a> {
    buf: &'a mut [u8],
    order: ByteOrder,
}

macro_rules! setter {
    ($name:ident, $t:ty) => {
        fn $name(&mut self, off: usize, v: $t) {
            let b = match self.order {
                ByteOrder::Little => v.to_le_bytes(),
                ByteOrder::Big => v.to_be_bytes(),
            };
            self.buf[off..off + b.len()].copy_from_slice(&b);
        }
    };
}

impl FieldsMut<'_> {
    setter!(i16, i16);
    setter!(i32, i32);
    setter!(i64, i64);
    setter!(f32, f32);
    setter!(f64, f64);

    /// Writes `s` truncated to `len - 1` bytes (keeping a terminating NUL).
    fn text(&mut self, off: usize, len: usize, s: &str) {
        let b = s.as_bytes();
        let n = b.len().min(len - 1);
        self.buf[off..off + n].copy_from_slice(&b[..n]);
    }

    fn nifti1(&mut self, h: &NiftiHeader) {
        self.i32(0, NIFTI1_HEADER_SIZE as i32);
        self.buf[38] = b'r';
        self.buf[39] = h.dim_info;
        for n in 0..8 {
            self.i16(40 + 2 * n, h.dim[n] as i16);
            self.f32(76 + 4 * n, h.pixdim[n] as f32);
        }
        for (n, p) in h.intent_p.iter().enumerate() {
            self.f32(56 + 4 * n, *p as f32);
        }
        self.i16(68, h.intent_code as i16);
        self.i16(70, h.datatype);
        self.i16(72, h.bitpix);
        self.i16(74, h.slice_start as i16);
        self.f32(108, h.vox_offset as f32);
        self.f32(112, h.scl_slope as f32);
        self.f32(116, h.scl_inter as f32);
        self.i16(120, h.slice_end as i16);
        self.buf[122] = h.slice_code as u8;
        self.buf[123] = h.xyzt_units as u8;
        self.f32(124, h.cal_max as f32);
        self.f32(128, h.cal_min as f32);
        self.f32(132, h.slice_duration as f32);
        self.f32(136, h.toffset as f32);
        self.text(148, 80, &h.descrip);
        self.text(228, 24, &h.aux_file);
        self.i16(252, h.qform_code as i16);
        self.i16(254, h.sform_code as i16);
        for n in 0..3 {
            self.f32(256 + 4 * n, h.quatern[n] as f32);
            self.f32(268 + 4 * n, h.qoffset[n] as f32);
            for c in 0..4 {
                self.f32(280 + 16 * n + 4 * c, h.srow[n][c] as f32);
            }
        }
        self.text(328, 16, &h.intent_name);
        self.buf[344..348].copy_from_slice(b"n+1\0");
    }

    fn nifti2(&mut self, h: &NiftiHeader) {
        self.i32(0, NIFTI2_HEADER_SIZE as i32);
        self.buf[4..12].copy_from_slice(b"n+2\0\r\n\x1a\n");
        self.i16(12, h.datatype);
        self.i16(14, h.bitpix);
        for n in 0..8 {
            self.i64(16 + 8 * n, h.dim[n]);
            self.f64(104 + 8 * n, h.pixdim[n]);
        }
        for (n, p) in h.intent_p.iter().enumerate() {
            self.f64(80 + 8 * n, *p);
        }
        self.i64(168, h.vox_offset as i64);
        self.f64(176, h.scl_slope);
        self.f64(184, h.scl_inter);
        self.f64(192, h.cal_max);
        self.f64(200, h.cal_min);
        self.f64(208, h.slice_duration);
        self.f64(216, h.toffset);
        self.i64(224, h.slice_start);
        self.i64(232, h.slice_end);
        self.text(240, 80, &h.descrip);
        self.text(320, 24, &h.aux_file);
        self.i32(344, h.qform_code);
        self.i32(348, h.sform_code);
        for n in 0..3 {
            self.f64(352 + 8 * n, h.quatern[n]);
            self.f64(376 + 8 * n, h.qoffset[n]);
            for c in 0..4 {
                self.f64(400 + 32 * n + 8 * c, h.srow[n][c]);
            }
        }
        self.i32(496, h.slice_code);
        self.i32(500, h.xyzt_units);
        self.i32(504, h.intent_code);
        self.text(508, 16, &h.intent_name);
        self.buf[524] = h.dim_info;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse_is_identity_for_both_versions_and_orders() {
        for version in [NiftiVersion::V1, NiftiVersion::V2] {
            for order in [ByteOrder::Little, ByteOrder::Big] {
                let h = NiftiHeader {
                    version,
                    byte_order: order,
                    dim: [3, 4, 5, 6, 1, 1, 1, 1],
                    datatype: 4,
                    bitpix: 16,
                    pixdim: [-1.0, 1.5, 2.0, 2.5, 0.0, 0.0, 0.0, 0.0],
                    scl_slope: 2.0,
                    scl_inter: -3.0,
                    qform_code: 1,
                    sform_code: 4,
                    quatern: [0.5, -0.25, 0.125],
                    qoffset: [1.0, 2.0, 3.0],
                    srow: [[1.5, 0., 0., -9.], [0., 2., 0., 7.], [0., 0., 2.5, 1.]],
                    descrip: "test".into(),
                    xyzt_units: 10,
                    magic: version.single_magic().into(),
                    vox_offset: (version.header_size() + 4) as f64,
                    ..NiftiHeader::default()
                };
                let bytes = h.to_bytes();
                let back = NiftiHeader::parse(&bytes, Path::new("mem")).unwrap();
                assert_eq!(back, h, "{version:?} {order:?}");
            }
        }
    }
}
