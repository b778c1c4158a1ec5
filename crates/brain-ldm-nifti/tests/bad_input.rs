//! Bad files: each gives a typed error naming the file and the cause, never a panic.

mod common;

use std::fs;
use std::path::Path;

use brain_ldm_nifti::{read, Error};
use common::*;

const SHAPE: [usize; 3] = [4, 4, 4];

fn good_file(version: u8) -> (RawFile, Vec<u8>) {
    let f = RawFile::new(version, false, SHAPE, 16);
    let values: Vec<f64> = (0..64).map(|v| v as f64).collect();
    let data = encode_values(16, &values, false);
    (f, data)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(raw).unwrap();
    enc.finish().unwrap()
}

/// The error's message names the file.
fn names_file(err: &Error, path: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message {msg:?} does not name {path:?}"
    );
}

#[test]
fn truncated_header_and_truncated_data() {
    let dir = tempfile::tempdir().unwrap();
    for version in [1, 2] {
        let (f, data) = good_file(version);
        let whole = encode_single(&f, &data);
        let p = write(
            dir.path(),
            &format!("short_header_{version}.nii"),
            &whole[..200],
        );
        let err = read(&p).unwrap_err();
        assert!(
            matches!(err, Error::TruncatedHeader { got: 200, .. }),
            "{err}"
        );
        names_file(&err, &p);

        let p = write(
            dir.path(),
            &format!("short_data_{version}.nii"),
            &whole[..whole.len() - 10],
        );
        let err = read(&p).unwrap_err();
        assert!(
            matches!(
                err,
                Error::DataLength {
                    expected: 256,
                    got: 246,
                    ..
                }
            ),
            "{err}"
        );
        names_file(&err, &p);

        // A gzip stream cut in the middle.
        let gz = gzip(&whole);
        let p = write(
            dir.path(),
            &format!("cut_{version}.nii.gz"),
            &gz[..gz.len() / 2],
        );
        let err = read(&p).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Gzip { .. } | Error::DataLength { .. } | Error::TruncatedHeader { .. }
            ),
            "{err}"
        );
        names_file(&err, &p);

        // A complete gzip stream of a file with too little data.
        let p = write(
            dir.path(),
            &format!("short_data_{version}.nii.gz"),
            &gzip(&whole[..whole.len() - 10]),
        );
        let err = read(&p).unwrap_err();
        assert!(
            matches!(
                err,
                Error::DataLength {
                    expected: 256,
                    got: 246,
                    ..
                }
            ),
            "{err}"
        );
        names_file(&err, &p);
    }
    let p = write(dir.path(), "empty.nii", &[]);
    let err = read(&p).unwrap_err();
    assert!(
        matches!(err, Error::TruncatedHeader { got: 0, .. }),
        "{err}"
    );
}

#[test]
fn wrong_magic_and_not_nifti() {
    let dir = tempfile::tempdir().unwrap();
    let (mut f, data) = good_file(1);
    f.magic = "xyz";
    let p = write(dir.path(), "magic.nii", &encode_single(&f, &data));
    let err = read(&p).unwrap_err();
    assert!(
        matches!(&err, Error::WrongMagic { got, expected, .. } if got == "xyz" && expected == "n+1"),
        "{err}"
    );
    names_file(&err, &p);
    // A pair magic in a single file.
    f.magic = "ni1";
    let p = write(dir.path(), "pair_magic.nii", &encode_single(&f, &data));
    assert!(matches!(read(&p).unwrap_err(), Error::WrongMagic { .. }));
    // Not a NIfTI file at all.
    let p = write(dir.path(), "text.nii", &[b'x'; 600]);
    let err = read(&p).unwrap_err();
    assert!(matches!(err, Error::NotNifti { .. }), "{err}");
    names_file(&err, &p);
}

#[test]
fn dimensions_that_disagree_with_the_data_length() {
    let dir = tempfile::tempdir().unwrap();
    for version in [1, 2] {
        let (mut f, data) = good_file(version);
        f.dim = [3, 4, 4, 5, 1, 1, 1, 1]; // 80 voxels claimed, 64 stored
        let p = write(
            dir.path(),
            &format!("dims_{version}.nii"),
            &encode_single(&f, &data),
        );
        let err = read(&p).unwrap_err();
        assert!(
            matches!(&err, Error::DataLength { expected: 320, got: 256, shape, .. } if shape == &vec![4, 4, 5, 1]),
            "{err}"
        );
        names_file(&err, &p);
        // A .hdr/.img pair whose .img is short.
        f.magic = if version == 1 { "ni1" } else { "ni2" };
        f.vox_offset = 0;
        let hdr = write(
            dir.path(),
            &format!("pair_{version}.hdr"),
            &encode_header(&f),
        );
        let img = write(dir.path(), &format!("pair_{version}.img"), &data);
        let err = read(&hdr).unwrap_err();
        assert!(matches!(err, Error::DataLength { .. }), "{err}");
        names_file(&err, &img);
        // Invalid dim fields.
        let (mut f, data) = good_file(version);
        f.dim = [3, 4, 0, 4, 1, 1, 1, 1];
        let p = write(
            dir.path(),
            &format!("zero_{version}.nii"),
            &encode_single(&f, &data),
        );
        assert!(matches!(read(&p).unwrap_err(), Error::BadDimensions { .. }));
        f.dim = [9, 4, 4, 4, 1, 1, 1, 1];
        let p = write(
            dir.path(),
            &format!("ndim_{version}.nii"),
            &encode_single(&f, &data),
        );
        assert!(matches!(read(&p).unwrap_err(), Error::BadDimensions { .. }));
    }
}

#[test]
fn a_header_claiming_2_pow_40_voxels_fails_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    // NIfTI-1: 2^14 · 2^13 · 2^13 = 2^40 voxels of float32 (4 TiB); NIfTI-2: 2^20 · 2^20 · 1.
    for (version, dim) in [
        (1u8, [3i64, 16384, 8192, 8192, 1, 1, 1, 1]),
        (2, [3, 1 << 20, 1 << 20, 1, 1, 1, 1, 1]),
    ] {
        let (mut f, data) = good_file(version);
        f.dim = dim;
        for (name, bytes) in [
            (format!("huge_{version}.nii"), encode_single(&f, &data)),
            (
                format!("huge_{version}.nii.gz"),
                gzip(&encode_single(&f, &data)),
            ),
        ] {
            let p = write(dir.path(), &name, &bytes);
            let err = read(&p).unwrap_err();
            assert!(
                matches!(err, Error::TooManyVoxels { voxels, .. } if voxels == 1u128 << 40),
                "{err}"
            );
            names_file(&err, &p);
            // Even with the limit lifted, only the bytes present are ever read.
            let err = brain_ldm_nifti::ReadOptions::new()
                .max_voxels(u64::MAX)
                .read(&p)
                .unwrap_err();
            assert!(matches!(err, Error::DataLength { got: 256, .. }), "{err}");
        }
    }
}

#[test]
fn nan_and_inf_data() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bad) in [
        ("nan", f64::NAN),
        ("inf", f64::INFINITY),
        ("neg_inf", f64::NEG_INFINITY),
    ] {
        let (f, _) = good_file(1);
        let mut values: Vec<f64> = (0..64).map(|v| v as f64).collect();
        // Element 1 + 2·4 + 3·16 in file order is voxel (1, 2, 3).
        values[1 + 2 * 4 + 3 * 16] = bad;
        let p = write(
            dir.path(),
            &format!("{name}.nii"),
            &encode_single(&f, &encode_values(16, &values, false)),
        );
        let err = read(&p).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NonFinite {
                    index: [1, 2, 3],
                    volume: 0,
                    ..
                }
            ),
            "{err}"
        );
        names_file(&err, &p);
        let vol = brain_ldm_nifti::ReadOptions::new()
            .allow_non_finite(true)
            .read(&p)
            .unwrap();
        assert_eq!(vol.data[[1, 2, 3]].to_bits(), (bad as f32).to_bits());
    }
    // A valid slope with an infinite intercept.
    let (mut f, data) = good_file(1);
    f.scl_slope = 2.0;
    f.scl_inter = f64::INFINITY;
    let p = write(dir.path(), "inter.nii", &encode_single(&f, &data));
    let err = read(&p).unwrap_err();
    assert!(matches!(err, Error::BadScaling { .. }), "{err}");
}

#[test]
fn unknown_and_unsupported_datatypes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut f, data) = good_file(2);
    f.datatype = 3;
    let p = write(dir.path(), "unknown.nii", &encode_single(&f, &data));
    let err = read(&p).unwrap_err();
    assert!(
        matches!(err, Error::UnknownDatatype { code: 3, .. }),
        "{err}"
    );
    names_file(&err, &p);
    f.datatype = 32;
    let p = write(dir.path(), "complex.nii", &encode_single(&f, &data));
    let err = read(&p).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedDatatype {
                code: 32,
                name: "complex64",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn bad_vox_offset_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut f, data) = good_file(1);
    f.vox_offset = 100;
    let mut bytes = encode_header(&f);
    bytes.extend_from_slice(&data);
    let p = write(dir.path(), "offset.nii", &bytes);
    let err = read(&p).unwrap_err();
    assert!(matches!(err, Error::BadVoxOffset { .. }), "{err}");
    let missing = dir.path().join("missing.nii.gz");
    let err = read(&missing).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    names_file(&err, &missing);
}
