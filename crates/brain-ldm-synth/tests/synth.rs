//! End-to-end checks of the generator, the BIDS writer and the volumetry on small (4 mm,
//! a few 2 mm) cohorts.

use std::fs;

use brain_ldm_synth::bids::{subject_paths, write_dataset, DatasetOptions};
use brain_ldm_synth::labels::label_volumes;
use brain_ldm_synth::volumetry::{measure_file, measure_volumes};
use brain_ldm_synth::{generate_subject, SynthConfig, SynthError, VoxelSize};

fn opts(out: &std::path::Path, n: usize) -> DatasetOptions {
    DatasetOptions {
        n,
        voxel_size: VoxelSize::Mm4,
        seed: 11,
        out: out.to_path_buf(),
        resume: false,
    }
}

#[test]
fn subjects_are_identical_whatever_the_thread_count() {
    let cfg = SynthConfig {
        seed: 3,
        voxel_size: VoxelSize::Mm4,
    };
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let three = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let a = one.install(|| generate_subject(&cfg, 5).unwrap());
    let b = three.install(|| generate_subject(&cfg, 5).unwrap());
    assert_eq!(a.t1.as_slice_memory_order(), b.t1.as_slice_memory_order());
    assert_eq!(a.labels, b.labels);
    assert_eq!(a.covariates, b.covariates);
    let c = generate_subject(&cfg, 6).unwrap();
    assert_ne!(a.t1, c.t1);
}

#[test]
fn files_are_byte_identical_whatever_the_order_and_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x"), dir.path().join("y"));
    // x: subjects 0..3 on one thread; y: subject 2 first (resume), then all on three.
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| write_dataset(&opts(&x, 3), &|_| {}).unwrap());
    let three = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    three.install(|| {
        write_dataset(&opts(&y, 1), &|_| {}).unwrap();
        let (t1, dseg) = subject_paths(&y, 0);
        fs::remove_file(t1).unwrap();
        fs::remove_file(dseg).unwrap();
        let mut o = opts(&y, 3);
        o.resume = true;
        write_dataset(&o, &|_| {}).unwrap();
    });
    for i in 0..3 {
        let (a1, a2) = subject_paths(&x, i);
        let (b1, b2) = subject_paths(&y, i);
        assert_eq!(fs::read(a1).unwrap(), fs::read(b1).unwrap());
        assert_eq!(fs::read(a2).unwrap(), fs::read(b2).unwrap());
    }
    assert_eq!(
        fs::read(x.join("participants.tsv")).unwrap(),
        fs::read(y.join("participants.tsv")).unwrap()
    );
}

#[test]
fn drawn_volumes_are_hit_within_two_percent_at_2mm() {
    let cfg = SynthConfig {
        seed: 0,
        voxel_size: VoxelSize::Mm2,
    };
    for i in 0..3 {
        let s = generate_subject(&cfg, i).unwrap();
        let c = s.covariates;
        let dv = s.volumes.ventricular_volume / c.ventricular_volume - 1.0;
        let db = s.volumes.brain_volume / c.brain_volume - 1.0;
        assert!(dv.abs() <= 0.02, "subject {i}: ventricles off by {dv}");
        assert!(db.abs() <= 0.02, "subject {i}: brain off by {db}");
        assert_eq!(s.volumes, label_volumes(s.labels.iter(), 8.0));
    }
}

#[test]
fn dataset_layout_tsv_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let first = write_dataset(&opts(&out, 2), &|_| {
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!(calls.into_inner(), 2);
    assert_eq!(first.generated, 2);
    assert!(out.join("dataset_description.json").is_file());
    let desc: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("dataset_description.json")).unwrap())
            .unwrap();
    assert_eq!(desc["Seed"], 11);
    assert_eq!(desc["VoxelSizeMm"], 4.0);
    let (t1, dseg) = subject_paths(&out, 1);
    assert!(t1.ends_with("sub-000001/anat/sub-000001_T1w.nii.gz"));
    assert!(dseg.is_file());
    // No temporary file is left behind.
    for entry in fs::read_dir(t1.parent().unwrap()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(!name.contains(".tmp"), "{name}");
    }
    // participants.tsv volumes are the label counts of the written files, exactly.
    let tsv = fs::read_to_string(out.join("participants.tsv")).unwrap();
    let lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(
        lines[0],
        "participant_id\tsex\tage\tventricular_volume\tbrain_volume\ticv"
    );
    let cfg = SynthConfig {
        seed: 11,
        voxel_size: VoxelSize::Mm4,
    };
    for (i, line) in lines[1..].iter().enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        let s = generate_subject(&cfg, i as u64).unwrap();
        let v = s.volumes;
        assert_eq!(f[0], format!("sub-{i:06}"));
        assert_eq!(f[3].parse::<f64>().unwrap(), v.ventricular_volume);
        assert_eq!(f[4].parse::<f64>().unwrap(), v.brain_volume);
        assert_eq!(f[5].parse::<f64>().unwrap(), v.icv);
    }
    // Resume: the two complete subjects are skipped, one more is made.
    let mut o = opts(&out, 3);
    o.resume = true;
    let second = write_dataset(&o, &|_| {}).unwrap();
    assert_eq!((second.generated, second.skipped), (1, 2));
    assert_eq!(second.participants[..2], first.participants[..]);
    // The volumetry reads the written T1.
    let m = measure_file(&t1).unwrap();
    assert!(m.brain_volume > 0.0);
    // The files hold the in-memory subject, on its grid, in MNI152 space (code 4).
    let s = generate_subject(&cfg, 1).unwrap();
    let t1_read = brain_ldm_nifti::read(&t1).unwrap();
    let dseg_read = brain_ldm_nifti::read(&dseg).unwrap();
    assert_eq!(t1_read.affine, VoxelSize::Mm4.affine());
    assert_eq!(t1_read.data, s.t1);
    assert_eq!(dseg_read.data, s.labels.mapv(f32::from));
    for h in [t1_read.header.unwrap(), dseg_read.header.unwrap()] {
        assert_eq!((h.sform_code, h.qform_code), (4, 4));
    }
}

#[test]
fn bad_input_fails_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    assert!(matches!(
        write_dataset(&opts(&out, 0), &|_| {}),
        Err(SynthError::ZeroSubjects { .. })
    ));
    assert!(!out.exists(), "nothing may be written for n = 0");
    assert!(matches!(
        VoxelSize::from_mm(3.0),
        Err(SynthError::UnknownVoxelSize { got }) if got == 3.0
    ));
    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    assert!(matches!(
        write_dataset(&opts(&file, 1), &|_| {}),
        Err(SynthError::OutputIsFile { .. })
    ));
    let under_file = file.join("sub");
    assert!(matches!(
        write_dataset(&opts(&under_file, 1), &|_| {}),
        Err(SynthError::NotWritable { .. })
    ));
    let busy = dir.path().join("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("other.txt"), b"x").unwrap();
    assert!(matches!(
        write_dataset(&opts(&busy, 1), &|_| {}),
        Err(SynthError::OutputNotEmpty { .. })
    ));
    assert_eq!(fs::read_dir(&busy).unwrap().count(), 1);
    // Resuming with another seed is refused.
    write_dataset(&opts(&out, 1), &|_| {}).unwrap();
    let mut o = opts(&out, 1);
    o.resume = true;
    o.seed = 12;
    assert!(matches!(
        write_dataset(&o, &|_| {}),
        Err(SynthError::ResumeMismatch { .. })
    ));
}

#[test]
fn volumetry_rejects_a_4d_image_and_a_bad_affine() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("4d.nii");
    // A 4×4×4×2 float32 NIfTI-1: header from brain-ldm-nifti, then 128 ones.
    let mut header = brain_ldm_nifti::NiftiHeader::default();
    header.dim = [4, 4, 4, 4, 2, 1, 1, 1];
    let mut bytes = header.to_bytes();
    assert_eq!(bytes.len(), header.vox_offset as usize);
    bytes.extend((0..128).flat_map(|_| 1f32.to_le_bytes()));
    fs::write(&path, bytes).unwrap();
    assert!(matches!(
        measure_file(&path),
        Err(SynthError::NotThreeD { shape, .. }) if shape == vec![4, 4, 4, 2]
    ));
    let t1 = ndarray::Array3::<f32>::ones((4, 4, 4));
    let mut affine = VoxelSize::Mm4.affine();
    affine[0][1] = 1.0;
    assert!(matches!(
        measure_volumes(t1.view(), &affine),
        Err(SynthError::BadAffine { .. })
    ));
}

#[test]
fn volumetry_tracks_ground_truth_at_2mm() {
    let cfg = SynthConfig {
        seed: 1,
        voxel_size: VoxelSize::Mm2,
    };
    for i in 0..2 {
        let s = generate_subject(&cfg, i).unwrap();
        let m = measure_volumes(s.t1.view(), &s.affine).unwrap();
        let rb = m.brain_volume / s.volumes.brain_volume - 1.0;
        let ri = m.icv / s.volumes.icv - 1.0;
        let rv = m.ventricular_volume / s.volumes.ventricular_volume - 1.0;
        // Bounds about three times the median errors measured on 200 subjects (docs/synth.md).
        assert!(rb.abs() < 0.1, "brain volume off by {rb}");
        assert!(ri.abs() < 0.05, "icv off by {ri}");
        assert!(rv.abs() < 0.15, "ventricular volume off by {rv}");
    }
}

#[test]
fn volumetry_counts_a_brain_that_fills_its_skull_at_1mm() {
    // Subject 57 of seed 0: a large brain with little CSF, whose CSF mean drifted towards
    // GM's (brain under-counted by 13 %) before the tissues shared one noise variance.
    let cfg = SynthConfig {
        seed: 0,
        voxel_size: VoxelSize::Mm1,
    };
    let s = generate_subject(&cfg, 57).unwrap();
    let m = measure_volumes(s.t1.view(), &s.affine).unwrap();
    let rb = m.brain_volume / s.volumes.brain_volume - 1.0;
    assert!(rb.abs() < 0.08, "brain volume off by {rb}");
}

#[test]
fn volumetry_is_the_same_on_any_number_of_threads() {
    let s = generate_subject(
        &SynthConfig {
            seed: 2,
            voxel_size: VoxelSize::Mm2,
        },
        0,
    )
    .unwrap();
    let measure = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| measure_volumes(s.t1.view(), &s.affine).unwrap())
    };
    assert_eq!(measure(1), measure(3));
}
