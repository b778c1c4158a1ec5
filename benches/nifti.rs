//! Reading the 1 mm MNI152 template (.nii.gz, 197×233×189 uint8) and preprocessing it to the
//! brain LDM's input (RAS, 1 mm, 160×224×160, [0, 1]); plus the individual steps.
//!
//! One core: `RAYON_NUM_THREADS=1 cargo bench -p brain-ldm-nifti --bench nifti`
//! Results: docs/benchmarks.md, section "NIfTI I/O and preprocessing".

use std::time::Duration;

use brain_ldm_nifti::preprocess::{
    crop_or_pad, resample, scale_min_max, Interpolation, PreprocessOptions,
};
use brain_ldm_nifti::{read, AxisCodes, WriteOptions};
use criterion::{criterion_group, criterion_main, Criterion};

const TEMPLATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../data/mni152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
);

fn bench(c: &mut Criterion) {
    let vol = read(TEMPLATE).expect("template");
    let model = PreprocessOptions::brain_ldm();
    let input = model.apply(&vol).expect("preprocess");
    let mut g = c.benchmark_group("nifti");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("read_template_nii_gz", |b| {
        b.iter(|| read(TEMPLATE).expect("read"))
    });
    g.bench_function("preprocess_to_model_input", |b| {
        b.iter(|| model.apply(&vol).expect("apply"))
    });
    g.bench_function("read_and_preprocess", |b| {
        b.iter(|| model.apply(&read(TEMPLATE).expect("read")).expect("apply"))
    });
    let las = {
        let mut v = vol.clone();
        v.data.invert_axis(ndarray::Axis(0));
        v.data = v.data.as_standard_layout().into_owned();
        v.affine[0][0] = -1.0;
        v
    };
    g.bench_function("reorient_las_to_ras", |b| {
        b.iter(|| brain_ldm_nifti::preprocess::reorient(&las, AxisCodes::RAS).expect("reorient"))
    });
    g.bench_function("resample_to_2mm", |b| {
        b.iter(|| resample(&vol, [2.0; 3], Interpolation::Linear).expect("resample"))
    });
    g.bench_function("crop_or_pad_160_224_160", |b| {
        b.iter(|| crop_or_pad(&vol, [160, 224, 160], 0.0).expect("crop"))
    });
    g.bench_function("scale_min_max", |b| b.iter(|| scale_min_max(&vol)));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("input.nii.gz");
    g.bench_function("write_model_input_f32_nii_gz", |b| {
        b.iter(|| WriteOptions::new().write(&input, &out).expect("write"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
