//! Reading files made byte by byte in each datatype, byte order, version and layout; write →
//! read round trips; cross-checks with the independent `nifti` crate.
// Index loops read naturally for 4×4 matrices.
#![allow(clippy::needless_range_loop)]

mod common;

use std::fs;

use brain_ldm_nifti::{
    read, read_header, ByteOrder, DataType, NiftiVersion, ReadOptions, Volume, WriteOptions,
};
use common::*;

const SHAPE: [usize; 3] = [3, 4, 5];

/// Expected f32 voxel (i, j, k) of a file whose elements (file order) are `values`.
fn expected(values: &[f64], slope: f64, inter: f64, scaled: bool) -> Vec<f32> {
    let [ni, nj, nk] = SHAPE;
    let mut out = vec![0f32; ni * nj * nk];
    for (n, &v) in values.iter().enumerate() {
        let [i, j, k] = file_to_array_index(n, SHAPE);
        out[(i * nj + j) * nk + k] = if scaled {
            (v * slope + inter) as f32
        } else {
            v as f32
        };
    }
    out
}

#[test]
fn hand_made_files_in_every_datatype_order_version_and_layout_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let n = SHAPE.iter().product();
    for (name, code, _) in DTYPES {
        for version in [1u8, 2] {
            for big in [false, true] {
                for layout in ["nii", "nii.gz", "pair"] {
                    let values = values_for(code, n);
                    let mut f = RawFile::new(version, big, SHAPE, code);
                    // Integer types carry a scaling (nibabel applies it in f64); floats none.
                    let scaled = !name.starts_with("float");
                    if scaled {
                        f.scl_slope = 0.5;
                        f.scl_inter = -2.0;
                    } else {
                        f.scl_slope = 0.0; // slope 0 = no scaling, as nibabel
                        f.scl_inter = 99.0;
                    }
                    let data = encode_values(code, &values, big);
                    let stem = dir.path().join(format!("{name}_v{version}_{big}"));
                    let path = match layout {
                        "pair" => {
                            f.magic = if version == 1 { "ni1" } else { "ni2" };
                            f.vox_offset = 0;
                            fs::write(stem.with_extension("hdr"), encode_header(&f)).unwrap();
                            fs::write(stem.with_extension("img"), &data).unwrap();
                            stem.with_extension("img")
                        }
                        "nii" => {
                            let p = stem.with_extension("nii");
                            fs::write(&p, encode_single(&f, &data)).unwrap();
                            p
                        }
                        _ => {
                            let p = stem.with_extension("nii.gz");
                            fs::write(&p, gzip(&encode_single(&f, &data))).unwrap();
                            p
                        }
                    };
                    let vol = read(&path)
                        .unwrap_or_else(|e| panic!("{name} v{version} big={big} {layout}: {e}"));
                    assert_eq!(vol.shape(), SHAPE);
                    let want = expected(&values, 0.5, -2.0, scaled);
                    assert_eq!(
                        vol.data.as_slice().unwrap(),
                        want.as_slice(),
                        "{name} v{version} big={big} {layout}"
                    );
                    let a = vol.affine;
                    assert_eq!(a[1], [0.0, 2.0, 0.0, -2.0]);
                    let h = vol.header.unwrap();
                    assert_eq!(
                        h.byte_order,
                        if big {
                            ByteOrder::Big
                        } else {
                            ByteOrder::Little
                        }
                    );
                    assert_eq!(h.version.number(), version);
                    assert_eq!(h.data_type(), DataType::from_code(code as i32));
                }
            }
        }
    }
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(raw).unwrap();
    enc.finish().unwrap()
}

fn oblique_affine() -> [[f64; 4]; 4] {
    // A rotation about z by 0.3 rad with voxel sizes 1.5, 2, 2.5 and the k axis flipped
    // (negative determinant, so qfac = -1), all entries rounded to f32 so NIfTI-1 holds them.
    let (s, c) = (0.3f64).sin_cos();
    let r = |x: f64| x as f32 as f64;
    [
        [r(1.5 * c), r(-2.0 * s), 0.0, r(-12.25)],
        [r(1.5 * s), r(2.0 * c), 0.0, r(30.5)],
        [0.0, 0.0, -2.5, r(7.125)],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

/// Whole numbers in each type's range that f32 holds exactly.
fn integral_volume(dtype: DataType) -> Volume {
    let (lo, hi) = match dtype.int_range() {
        Some((lo, hi)) => (lo.max(-(2f64.powi(24))), hi.min(2f64.powi(24))),
        None => (-1.0e6, 1.0e6),
    };
    volume(SHAPE, oblique_affine(), |i, j, k| {
        let t = ((i * 20 + j * 5 + k) as f64) / 59.0;
        let v = (lo + (hi - lo) * t).round() as f32;
        if dtype.is_float() {
            v + 0.375
        } else {
            v
        }
    })
}

#[test]
fn write_then_read_is_identical_for_every_datatype_gz_version_and_byte_order() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in DataType::ALL {
        for version in [NiftiVersion::V1, NiftiVersion::V2] {
            for order in [ByteOrder::Little, ByteOrder::Big] {
                for ext in ["nii", "nii.gz"] {
                    let vol = integral_volume(dtype);
                    let path = dir
                        .path()
                        .join(format!("rt_{dtype}_{version:?}_{order:?}.{ext}"));
                    WriteOptions::new()
                        .datatype(dtype)
                        .version(version)
                        .byte_order(order)
                        .write(&vol, &path)
                        .unwrap();
                    let back = read(&path).unwrap();
                    let what = format!("{dtype} {version:?} {order:?} {ext}");
                    assert_eq!(back.data, vol.data, "{what}");
                    assert_eq!(back.affine, vol.affine, "{what}");
                    let h = back.header.unwrap();
                    assert_eq!(
                        (h.version, h.byte_order, h.data_type()),
                        (version, order, Some(dtype))
                    );
                    // Both transforms are set and describe the same affine (qform to f32 precision).
                    assert!(h.sform_code > 0 && h.qform_code > 0, "{what}");
                    let q = brain_ldm_nifti::affine::qform_affine(&h);
                    for r in 0..3 {
                        for c in 0..4 {
                            assert!(
                                (q[r][c] - vol.affine[r][c]).abs() < 1e-5,
                                "{what} qform {q:?}"
                            );
                        }
                    }
                }
            }
        }
    }
    // No temporary files left behind.
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn scaled_u8_and_i16_are_within_half_a_step() {
    let dir = tempfile::tempdir().unwrap();
    let vol = volume(SHAPE, oblique_affine(), |i, j, k| {
        (i as f32 * 0.37 - j as f32 * 1.1 + k as f32 * 0.013).sin() * 1000.0
    });
    let s = vol.stats();
    for (dtype, steps) in [(DataType::U8, 255.0), (DataType::I16, 65535.0)] {
        let path = dir.path().join(format!("scaled_{dtype}.nii.gz"));
        WriteOptions::new()
            .datatype(dtype)
            .write(&vol, &path)
            .unwrap();
        let back = read(&path).unwrap();
        let h = back.header.as_ref().unwrap();
        assert!(h.scl_slope != 1.0, "scaling expected");
        let half_step = (s.max - s.min) / steps / 2.0;
        for (a, b) in back.data.iter().zip(vol.data.iter()) {
            assert!(
                ((a - b) as f64).abs() <= half_step * 1.001 + 1e-4,
                "{dtype}: {a} vs {b}, half step {half_step}"
            );
        }
    }
}

#[test]
fn four_d_files_need_a_volume_and_read_the_chosen_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = RawFile::new(2, true, SHAPE, 4);
    f.dim = [4, 3, 4, 5, 3, 1, 1, 1];
    let n: usize = 3 * 4 * 5 * 3;
    let values: Vec<f64> = (0..n).map(|v| v as f64).collect();
    let path = dir.path().join("four_d.nii");
    fs::write(&path, encode_single(&f, &encode_values(4, &values, true))).unwrap();
    let err = read(&path).unwrap_err();
    assert!(
        matches!(
            err,
            brain_ldm_nifti::Error::VolumeNotChosen { volumes: 3, .. }
        ),
        "{err}"
    );
    let v2 = ReadOptions::new().volume(2).read(&path).unwrap();
    // Voxel (1, 2, 3) of volume 2 is element 2·60 + (3·4 + 2)·3 + 1 of the file.
    assert_eq!(v2.data[[1, 2, 3]], (120 + (3 * 4 + 2) * 3 + 1) as f32);
    let err = ReadOptions::new().volume(3).read(&path).unwrap_err();
    assert!(
        matches!(
            err,
            brain_ldm_nifti::Error::VolumeOutOfRange {
                volume: 3,
                volumes: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(read_header(&path).unwrap().dim[4], 3);
}

#[test]
fn nifti_crate_reads_our_files_and_we_read_its_files() {
    use nifti::{IntoNdArray, NiftiObject, ReaderOptions};
    let dir = tempfile::tempdir().unwrap();
    let vol = integral_volume(DataType::I16);
    let ours = dir.path().join("ours.nii.gz");
    WriteOptions::new()
        .datatype(DataType::I16)
        .write(&vol, &ours)
        .unwrap();
    let obj = ReaderOptions::new().read_file(&ours).unwrap();
    let arr = obj.into_volume().into_ndarray::<f32>().unwrap();
    // nifti-rs returns an array indexed [i, j, k] (Fortran memory order).
    assert_eq!(arr.shape(), &SHAPE);
    for ((i, j, k), v) in vol.data.indexed_iter() {
        assert_eq!(arr[[i, j, k]], *v);
    }

    let theirs = dir.path().join("theirs.nii");
    let data = ndarray::Array3::from_shape_fn(SHAPE, |(i, j, k)| (i * 100 + j * 10 + k) as f32);
    nifti::writer::WriterOptions::new(&theirs)
        .write_nifti(&data)
        .unwrap();
    let back = read(&theirs).unwrap();
    assert_eq!(back.data, data);
}

#[test]
fn writer_refuses_bad_names_and_non_finite_integers() {
    let dir = tempfile::tempdir().unwrap();
    let mut vol = integral_volume(DataType::U8);
    let err = brain_ldm_nifti::write(&vol, dir.path().join("x.img")).unwrap_err();
    assert!(
        matches!(err, brain_ldm_nifti::Error::BadExtension { .. }),
        "{err}"
    );
    vol.data[[0, 0, 0]] = f32::NAN;
    let err = WriteOptions::new()
        .datatype(DataType::U8)
        .write(&vol, dir.path().join("x.nii"))
        .unwrap_err();
    assert!(
        matches!(err, brain_ldm_nifti::Error::NotRepresentable { .. }),
        "{err}"
    );
    assert!(!dir.path().join("x.nii").exists());
}
