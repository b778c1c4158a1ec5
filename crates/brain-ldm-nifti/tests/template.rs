//! The MNI152 ICBM 2009c symmetric T1 template (data/mni152, licence beside it): reading
//! against nibabel, and preprocessing to the model's input.
// Index loops read naturally for 4×4 matrices.
#![allow(clippy::needless_range_loop)]

mod common;

use brain_ldm_nifti::affine::{voxel_to_world, IDENTITY};
use brain_ldm_nifti::preprocess::{
    crop_foreground, crop_or_pad, reorient_to_ras, resample, Interpolation, PreprocessOptions,
};
use brain_ldm_nifti::{read, AxisCodes, DataType, Volume};
use common::TEMPLATE;

/// nibabel 5.4.2's view of the template, from
/// `/work/pyenv/bin/python -c "import nibabel as nib; img = nib.load('data/mni152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz'); d = img.get_fdata(); print(img.shape, img.affine.tolist(), img.get_data_dtype(), nib.aff2axcodes(img.affine), repr(d.min()), repr(d.max()), repr(d.mean()))"`:
/// (197, 233, 189), [[1, 0, 0, -98], [0, 1, 0, -134], [0, 0, 1, -72], [0, 0, 0, 1]], uint8,
/// ('R', 'A', 'S'), 0.0, 255.0, 38.438930276559084.
const NIBABEL_SHAPE: [usize; 3] = [197, 233, 189];
const NIBABEL_AFFINE: [[f64; 4]; 4] = [
    [1.0, 0.0, 0.0, -98.0],
    [0.0, 1.0, 0.0, -134.0],
    [0.0, 0.0, 1.0, -72.0],
    [0.0, 0.0, 0.0, 1.0],
];
const NIBABEL_MIN: f64 = 0.0;
const NIBABEL_MAX: f64 = 255.0;
const NIBABEL_MEAN: f64 = 38.438930276559084;

#[test]
fn template_reads_as_nibabel_reads_it() {
    let vol = read(TEMPLATE).unwrap();
    assert_eq!(vol.shape(), NIBABEL_SHAPE);
    for r in 0..4 {
        for c in 0..4 {
            assert!((vol.affine[r][c] - NIBABEL_AFFINE[r][c]).abs() < 1e-6);
        }
    }
    let s = vol.stats();
    assert!((s.min - NIBABEL_MIN).abs() < 1e-4);
    assert!((s.max - NIBABEL_MAX).abs() < 1e-4);
    assert!((s.mean - NIBABEL_MEAN).abs() < 1e-4, "mean {}", s.mean);
    assert_eq!(vol.orientation().unwrap(), AxisCodes::RAS);
    assert_eq!(vol.header.unwrap().data_type(), Some(DataType::U8));
}

/// A copy with voxel axes flipped (`flip[a]`): same world positions, other orientation.
/// Its affine is built here by hand: a flipped axis' column is negated and the translation
/// moves to the old last voxel.
fn flipped(vol: &Volume, flip: [bool; 3]) -> Volume {
    let mut view = vol.data.view();
    let mut affine = vol.affine;
    let shape = vol.shape();
    for a in 0..3 {
        if flip[a] {
            view.invert_axis(ndarray::Axis(a));
            for r in 0..3 {
                affine[r][3] += affine[r][a] * (shape[a] as f64 - 1.0);
                affine[r][a] = -affine[r][a];
            }
        }
    }
    Volume::new(view.as_standard_layout().into_owned(), affine)
}

#[test]
fn ras_reorientation_of_las_and_lpi_copies_gives_back_the_original() {
    let vol = read(TEMPLATE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (codes, flip) in [("LAS", [true, false, false]), ("LPI", [true, true, true])] {
        let copy = flipped(&vol, flip);
        assert_eq!(copy.orientation().unwrap().to_string(), codes);
        // Through a file, as a user would meet it (u8 stores the values exactly).
        let path = dir.path().join(format!("{codes}.nii.gz"));
        brain_ldm_nifti::WriteOptions::new()
            .datatype(DataType::U8)
            .write(&copy, &path)
            .unwrap();
        let copy = read(&path).unwrap();
        assert_eq!(copy.orientation().unwrap().to_string(), codes);
        let back = reorient_to_ras(&copy).unwrap();
        assert_eq!(back.data, vol.data, "{codes}");
        assert_eq!(back.affine, vol.affine, "{codes}");
    }
}

#[test]
fn resampling_to_2mm_and_back_keeps_the_mean_within_1_percent() {
    let vol = read(TEMPLATE).unwrap();
    let coarse = resample(&vol, [2.0; 3], Interpolation::Linear).unwrap();
    // floor((n − 1) / 2) + 1 voxels per axis.
    assert_eq!(coarse.shape(), [99, 117, 95]);
    assert_eq!(coarse.voxel_sizes(), [2.0; 3]);
    let back = resample(&coarse, [1.0; 3], Interpolation::Linear).unwrap();
    assert_eq!(back.shape(), vol.shape());
    assert_eq!(back.affine, vol.affine);
    let (m0, m1) = (vol.stats().mean, back.stats().mean);
    assert!(((m1 - m0) / m0).abs() < 0.01, "mean {m0} -> {m1}");
    // Sample positions are exact: coarse voxel (10, 20, 30) sits on fine voxel (18, 40, 58)
    // (the centred grid starts at fine voxel 0), so the values agree.
    assert_eq!(
        voxel_to_world(&coarse.affine, [10.0, 20.0, 30.0]),
        voxel_to_world(&vol.affine, [20.0, 40.0, 60.0])
    );
    assert_eq!(coarse.data[[10, 20, 30]], vol.data[[20, 40, 60]]);
    // Nearest neighbour makes no new values.
    let labels = resample(&vol, [1.5; 3], Interpolation::Nearest).unwrap();
    assert!(labels.data.iter().all(|v| v.fract() == 0.0));
}

#[test]
fn crop_pad_to_model_shape_keeps_world_coordinates_of_landmarks() {
    let vol = read(TEMPLATE).unwrap();
    let out = crop_or_pad(&vol, [160, 224, 160], 0.0).unwrap();
    assert_eq!(out.shape(), [160, 224, 160]);
    // Landmarks: the voxel at world (0, 0, 0) (98, 134, 72 by the affine) and the brightest voxel.
    let brightest = vol
        .data
        .indexed_iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|((i, j, k), _)| [i, j, k])
        .unwrap();
    // Centred crop: starts n/2 − t/2 = (18, 4, 14).
    for landmark in [[98usize, 134, 72], brightest] {
        let new = [landmark[0] - 18, landmark[1] - 4, landmark[2] - 14];
        let f = |v: [usize; 3]| [v[0] as f64, v[1] as f64, v[2] as f64];
        assert_eq!(
            voxel_to_world(&out.affine, f(new)),
            voxel_to_world(&vol.affine, f(landmark))
        );
        assert_eq!(out.data[new], vol.data[landmark]);
    }
    assert_eq!(
        voxel_to_world(&out.affine, [80.0, 130.0, 58.0]),
        [0.0, 0.0, 0.0]
    );
    // Padding: a 1-voxel border more than the template along i, fill 0.
    let padded = crop_or_pad(&vol, [199, 233, 189], 0.0).unwrap();
    assert_eq!(padded.data[[1, 134, 72]], vol.data[[0, 134, 72]]);
    assert_eq!(
        voxel_to_world(&padded.affine, [99.0, 134.0, 72.0]),
        [0.0, 0.0, 0.0]
    );
    assert!(padded
        .data
        .index_axis(ndarray::Axis(0), 0)
        .iter()
        .all(|&v| v == 0.0));
}

#[test]
fn crop_to_foreground_keeps_every_nonzero_voxel() {
    let vol = read(TEMPLATE).unwrap();
    let fg = crop_foreground(&vol, 0.0, 2).unwrap();
    let sum = |v: &Volume| v.data.iter().map(|&x| x as f64).sum::<f64>();
    assert_eq!(sum(&fg), sum(&vol));
    assert!(fg.data.len() < vol.data.len());
    let empty = Volume::new(ndarray::Array3::zeros((2, 2, 2)), IDENTITY);
    assert!(matches!(
        crop_foreground(&empty, 0.0, 0),
        Err(brain_ldm_nifti::Error::EmptyForeground { .. })
    ));
}

#[test]
fn model_input_pipeline_gives_the_model_space() {
    let vol = read(TEMPLATE).unwrap();
    let input = PreprocessOptions::brain_ldm().apply(&vol).unwrap();
    assert_eq!(input.shape(), [160, 224, 160]);
    assert_eq!(input.orientation().unwrap(), AxisCodes::RAS);
    assert_eq!(input.voxel_sizes(), [1.0; 3]);
    let s = input.stats();
    assert_eq!((s.min, s.max), (0.0, 1.0));
    let t = input.to_tensor(&candle_core::Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[1, 1, 160, 224, 160]);
    let back = Volume::from_tensor(&t, input.affine).unwrap();
    assert_eq!(back.data, input.data);
}
