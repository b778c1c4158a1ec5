//! Files written by nibabel 5.4.2 and nibabel's own reading of them
//! (tests/fixtures/nifti/nibabel_expected.json, made by scripts/make_nifti_fixtures.py):
//! - `n2_be_int16_scaled_qform.nii`: NIfTI-2, big-endian int16, scl_slope 0.5 / scl_inter −3,
//!   qform only (oblique, permuted and flipped: PSL);
//! - `n1_be_f64_4d_pair.hdr/.img`: NIfTI-1 pair, big-endian float64, 4D (2 volumes), sform
//!   only (code 4);
//! - `n1_le_u8_pixdim.nii.gz`: NIfTI-1, uint8, neither sform nor qform (affine from pixdim).
//!
//! Each must give nibabel's `get_fdata()`, `affine`, `aff2axcodes` and, after
//! `reorient_to_ras`, nibabel's `as_closest_canonical` array and affine.
// Index loops read naturally for 4×4 matrices.
#![allow(clippy::needless_range_loop)]

mod common;

use std::path::Path;

use brain_ldm_nifti::{preprocess::reorient_to_ras, AffineSource, ReadOptions, Volume};
use common::NIBABEL_FIXTURES;
use serde_json::Value;

fn affine(v: &Value) -> [[f64; 4]; 4] {
    let mut a = [[0.0; 4]; 4];
    for r in 0..4 {
        for c in 0..4 {
            a[r][c] = v[r][c].as_f64().unwrap();
        }
    }
    a
}

fn assert_affine(got: &[[f64; 4]; 4], want: &[[f64; 4]; 4], what: &str) {
    for r in 0..4 {
        for c in 0..4 {
            assert!(
                (got[r][c] - want[r][c]).abs() < 1e-6,
                "{what}: {got:?} vs nibabel {want:?}"
            );
        }
    }
}

/// Checks volume `vol` (index `v`) against nibabel's values listed in Fortran order.
fn assert_data(vol: &Volume, fortran: &[Value], v: usize, what: &str) {
    let [ni, nj, nk] = vol.shape();
    for ((i, j, k), &x) in vol.data.indexed_iter() {
        let n = i + ni * (j + nj * (k + nk * v));
        let want = fortran[n].as_f64().unwrap();
        assert_eq!(x as f64, want, "{what} voxel ({i}, {j}, {k}) volume {v}");
    }
}

#[test]
fn nibabel_written_files_read_as_nibabel_reads_them() {
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(NIBABEL_FIXTURES).join("nibabel_expected.json"))
            .unwrap(),
    )
    .unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let name = case["file"].as_str().unwrap();
        let path = Path::new(NIBABEL_FIXTURES).join(name);
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let volumes = shape.get(3).copied().unwrap_or(1);
        for v in 0..volumes {
            let vol = ReadOptions::new().volume(v).read(&path).unwrap();
            assert_eq!(vol.shape(), [shape[0], shape[1], shape[2]], "{name}");
            assert_affine(&vol.affine, &affine(&case["affine"]), name);
            assert_eq!(
                vol.orientation().unwrap().to_string(),
                case["axcodes"].as_str().unwrap(),
                "{name}"
            );
            assert_data(&vol, case["data_fortran"].as_array().unwrap(), v, name);

            let canon = reorient_to_ras(&vol).unwrap();
            let cshape: Vec<usize> = case["canonical_shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(
                canon.shape(),
                [cshape[0], cshape[1], cshape[2]],
                "{name} canonical"
            );
            assert_affine(
                &canon.affine,
                &affine(&case["canonical_affine"]),
                &format!("{name} canonical"),
            );
            assert_data(
                &canon,
                case["canonical_data_fortran"].as_array().unwrap(),
                v,
                &format!("{name} canonical"),
            );
            assert_eq!(canon.orientation().unwrap().to_string(), "RAS");
        }
        let h = brain_ldm_nifti::read_header(&path).unwrap();
        let source = brain_ldm_nifti::header_affine(&h).1;
        let want = match (
            case["sform_code"].as_i64().unwrap(),
            case["qform_code"].as_i64().unwrap(),
        ) {
            (0, 0) => AffineSource::Pixdim,
            (0, _) => AffineSource::Qform,
            _ => AffineSource::Sform,
        };
        assert_eq!(source, want, "{name}");
    }
}
