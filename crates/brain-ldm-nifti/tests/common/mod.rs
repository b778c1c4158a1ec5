//! Test helpers: a NIfTI encoder written from the standard's field offsets, independent of the
//! library's own header code, and small volumes.
#![allow(dead_code)]

use brain_ldm_nifti::{Affine, Volume};
use ndarray::Array3;

/// Path of the MNI152 2009c T1 template committed in data/mni152 (licence beside it).
pub const TEMPLATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../data/mni152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
);

/// Directory of the small nibabel-written fixtures (scripts/make_nifti_fixtures.py).
pub const NIBABEL_FIXTURES: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/nifti");

/// (name, NIfTI code, bytes) of the ten datatypes.
pub const DTYPES: [(&str, i16, usize); 10] = [
    ("uint8", 2, 1),
    ("int8", 256, 1),
    ("int16", 4, 2),
    ("uint16", 512, 2),
    ("int32", 8, 4),
    ("uint32", 768, 4),
    ("int64", 1024, 8),
    ("uint64", 1280, 8),
    ("float32", 16, 4),
    ("float64", 64, 8),
];

/// A header + data description for [`encode`].
pub struct RawFile {
    /// 1 or 2.
    pub version: u8,
    pub big_endian: bool,
    /// NIfTI dim (dim[0] first).
    pub dim: [i64; 8],
    pub datatype: i16,
    pub scl_slope: f64,
    pub scl_inter: f64,
    pub sform_code: i16,
    pub srow: [[f64; 4]; 3],
    /// Magic without NUL: "n+1", "ni1", "n+2", "ni2".
    pub magic: &'static str,
    /// Data offset; the data follows the header at this offset in the same buffer when
    /// `data_in_same_file`.
    pub vox_offset: i64,
}

impl RawFile {
    pub fn new(version: u8, big_endian: bool, shape: [usize; 3], datatype: i16) -> RawFile {
        RawFile {
            version,
            big_endian,
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
            datatype,
            scl_slope: 1.0,
            scl_inter: 0.0,
            sform_code: 1,
            srow: [
                [1.0, 0.0, 0.0, -1.0],
                [0.0, 2.0, 0.0, -2.0],
                [0.0, 0.0, 3.0, -3.0],
            ],
            magic: if version == 1 { "n+1" } else { "n+2" },
            vox_offset: if version == 1 { 352 } else { 544 },
        }
    }
}

fn put(buf: &mut Vec<u8>, off: usize, bytes: &[u8]) {
    if buf.len() < off + bytes.len() {
        buf.resize(off + bytes.len(), 0);
    }
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

macro_rules! be_or_le {
    ($v:expr, $be:expr) => {
        if $be {
            $v.to_be_bytes().to_vec()
        } else {
            $v.to_le_bytes().to_vec()
        }
    };
}

/// Header bytes (348 or 540) plus the 4-byte extension flag, from the standard's offsets.
pub fn encode_header(f: &RawFile) -> Vec<u8> {
    let be = f.big_endian;
    let mut b = Vec::new();
    if f.version == 1 {
        put(&mut b, 0, &be_or_le!(348i32, be));
        for n in 0..8 {
            put(&mut b, 40 + 2 * n, &be_or_le!(f.dim[n] as i16, be));
            put(&mut b, 76 + 4 * n, &be_or_le!(1.0f32, be));
        }
        put(&mut b, 70, &be_or_le!(f.datatype, be));
        put(&mut b, 108, &be_or_le!(f.vox_offset as f32, be));
        put(&mut b, 112, &be_or_le!(f.scl_slope as f32, be));
        put(&mut b, 116, &be_or_le!(f.scl_inter as f32, be));
        put(&mut b, 254, &be_or_le!(f.sform_code, be));
        for r in 0..3 {
            for c in 0..4 {
                put(
                    &mut b,
                    280 + 16 * r + 4 * c,
                    &be_or_le!(f.srow[r][c] as f32, be),
                );
            }
        }
        let mut magic = f.magic.as_bytes().to_vec();
        magic.push(0);
        put(&mut b, 344, &magic);
        put(&mut b, 348, &[0, 0, 0, 0]);
    } else {
        put(&mut b, 0, &be_or_le!(540i32, be));
        let mut magic = f.magic.as_bytes().to_vec();
        magic.extend_from_slice(b"\0\r\n\x1a\n");
        put(&mut b, 4, &magic);
        put(&mut b, 12, &be_or_le!(f.datatype, be));
        for n in 0..8 {
            put(&mut b, 16 + 8 * n, &be_or_le!(f.dim[n], be));
            put(&mut b, 104 + 8 * n, &be_or_le!(1.0f64, be));
        }
        put(&mut b, 168, &be_or_le!(f.vox_offset, be));
        put(&mut b, 176, &be_or_le!(f.scl_slope, be));
        put(&mut b, 184, &be_or_le!(f.scl_inter, be));
        put(&mut b, 348, &be_or_le!(f.sform_code as i32, be));
        for r in 0..3 {
            for c in 0..4 {
                put(&mut b, 400 + 32 * r + 8 * c, &be_or_le!(f.srow[r][c], be));
            }
        }
        put(&mut b, 540, &[0, 0, 0, 0]);
    }
    b
}

/// Raw bytes of `values` (already in the type's range) in the datatype `code`.
pub fn encode_values(code: i16, values: &[f64], big_endian: bool) -> Vec<u8> {
    let be = big_endian;
    let mut out = Vec::new();
    for &v in values {
        let bytes = match code {
            2 => vec![v as u8],
            256 => vec![v as i8 as u8],
            4 => be_or_le!(v as i16, be),
            512 => be_or_le!(v as u16, be),
            8 => be_or_le!(v as i32, be),
            768 => be_or_le!(v as u32, be),
            1024 => be_or_le!(v as i64, be),
            1280 => be_or_le!(v as u64, be),
            16 => be_or_le!(v as f32, be),
            64 => be_or_le!(v, be),
            _ => panic!("code {code}"),
        };
        out.extend_from_slice(&bytes);
    }
    out
}

/// A whole single file: header, then data at `vox_offset`.
pub fn encode_single(f: &RawFile, data: &[u8]) -> Vec<u8> {
    let mut b = encode_header(f);
    b.resize(f.vox_offset as usize, 0);
    b.extend_from_slice(data);
    b
}

/// Test values for a datatype: its extremes (as far as f32 holds them exactly for 64-bit
/// types), zero, and a ramp; `n` values in file order.
pub fn values_for(code: i16, n: usize) -> Vec<f64> {
    let (lo, hi): (f64, f64) = match code {
        2 => (0.0, 255.0),
        256 => (-128.0, 127.0),
        4 => (-32768.0, 32767.0),
        512 => (0.0, 65535.0),
        8 => (-2147483648.0, 2147483520.0),
        768 => (0.0, 4294967040.0),
        1024 => (-(2f64.powi(62)), 2f64.powi(62)),
        1280 => (0.0, 2f64.powi(63)),
        16 => (-3.0e38, 3.0e38),
        _ => (-1.0e30, 1.0e30),
    };
    (0..n)
        .map(|m| match m % 4 {
            0 => lo,
            1 => hi,
            2 => 0.0,
            _ => {
                if lo < 0.0 {
                    -((m % 100) as f64)
                } else {
                    (m % 100) as f64
                }
            }
        })
        .collect()
}

/// A small volume whose voxel (i, j, k) holds `f(i, j, k)`.
pub fn volume(shape: [usize; 3], affine: Affine, f: impl Fn(usize, usize, usize) -> f32) -> Volume {
    Volume::new(
        Array3::from_shape_fn((shape[0], shape[1], shape[2]), |(i, j, k)| f(i, j, k)),
        affine,
    )
}

/// The index in a row-major [ni, nj, nk] array of element `n` in file (i-fastest) order.
pub fn file_to_array_index(n: usize, [ni, nj, nk]: [usize; 3]) -> [usize; 3] {
    let _ = nk;
    [n % ni, (n / ni) % nj, n / (ni * nj)]
}
