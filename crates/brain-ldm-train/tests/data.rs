//! The data layer: CSV/TSV manifests (paths relative to the manifest, covariate columns by
//! name) read as the BIDS folder they list, and the validation split (by subject,
//! deterministic per seed, disjoint, sized by `validation_fraction`).

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use brain_ldm_train::config::DataConfig;
use brain_ldm_train::data::{Dataset, Subject};

#[test]
fn manifests_resolve_paths_against_their_folder_and_read_named_columns() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_cohort(&data, 4, [8, 8, 8]);
    let bids = Dataset::open(&data, &DataConfig::default(), true).unwrap();
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap();
    let same_as_bids = |ds: &Dataset| {
        assert_eq!(ds.subjects.len(), 4);
        assert_eq!(ds.image_shape, [8, 8, 8]);
        for (s, b) in ds.subjects.iter().zip(&bids.subjects) {
            assert_eq!(canonical(&s.image), canonical(&b.image), "{}", s.id);
            assert_eq!(s.covariates, b.covariates, "{}", s.id);
        }
    };

    // A CSV in another folder, other column names, paths relative to the CSV's folder.
    let cfg = DataConfig {
        sex_column: "Sex".into(),
        age_column: "AgeYears".into(),
        ventricular_volume_column: "VV".into(),
        brain_volume_column: "BV".into(),
        image_column: "t1".into(),
        ..DataConfig::default()
    };
    let csv = dir.path().join("lists").join("cohort.csv");
    common::write_manifest(&csv, &data, ",", "../data/", &cfg);
    let ds = Dataset::open(&csv, &cfg, true).unwrap();
    same_as_bids(&ds);
    assert_eq!(ds.root, csv);
    // Relative rows are joined to the manifest's folder; the id is the path as written.
    assert_eq!(
        ds.subjects[0].image,
        dir.path()
            .join("lists")
            .join("../data/sub-000000/anat/sub-000000_T1w.nii.gz")
    );
    assert_eq!(
        ds.subjects[0].id,
        "../data/sub-000000/anat/sub-000000_T1w.nii.gz"
    );
    // The absolute row is taken as it is.
    assert_eq!(
        ds.subjects[3].image,
        data.join("sub-000003/anat/sub-000003_T1w.nii.gz")
    );
    // Without covariates the columns are not needed.
    let bare = DataConfig {
        image_column: "t1".into(),
        ..DataConfig::default()
    };
    let ds = Dataset::open(&csv, &bare, false).unwrap();
    assert!(ds.subjects.iter().all(|s| s.covariates.is_none()));
    // With them, a missing column is named.
    let err = Dataset::open(&csv, &bare, true).unwrap_err().to_string();
    assert!(
        err.contains("cohort.csv") && err.contains("no column `sex`"),
        "{err}"
    );

    // A TSV (any extension other than .csv) beside the images, the default column names.
    let tsv = data.join("manifest.tsv");
    common::write_manifest(&tsv, &data, "\t", "", &DataConfig::default());
    same_as_bids(&Dataset::open(&tsv, &DataConfig::default(), true).unwrap());

    // A row naming a missing image is an error naming that image.
    let text = std::fs::read_to_string(&tsv).unwrap();
    std::fs::write(&tsv, text.replace("sub-000001/anat/", "sub-000001/gone/")).unwrap();
    let err = Dataset::open(&tsv, &DataConfig::default(), true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sub-000001/gone/sub-000001_T1w.nii.gz"),
        "{err}"
    );
}

/// `n` subjects whose images need not exist (the split reads no file).
fn dataset(n: usize) -> Dataset {
    Dataset {
        root: PathBuf::from("participants.tsv"),
        subjects: (0..n)
            .map(|i| Subject {
                id: format!("sub-{i:03}"),
                image: PathBuf::from(format!("sub-{i:03}.nii.gz")),
                covariates: Some([(i % 2) as f64, 50.0 + i as f64, 1e4, 1.2e6]),
            })
            .collect(),
        image_shape: [8, 8, 8],
        affine: brain_ldm_nifti::affine::IDENTITY,
    }
}

fn ids(subjects: &[Subject]) -> Vec<&str> {
    subjects.iter().map(|s| s.id.as_str()).collect()
}

#[test]
fn the_validation_split_is_by_subject_seeded_disjoint_and_sized() {
    let ds = dataset(50);
    for (fraction, expected) in [(0.0, 0), (0.001, 1), (0.1, 5), (0.25, 13), (0.5, 25)] {
        let (train, val) = ds.split(fraction, 7).unwrap();
        assert_eq!(val.len(), expected, "fraction {fraction}");
        assert_eq!(train.len(), 50 - expected, "fraction {fraction}");
        // Disjoint by subject and together every subject once.
        let t: HashSet<&str> = ids(&train).into_iter().collect();
        let v: HashSet<&str> = ids(&val).into_iter().collect();
        assert!(t.is_disjoint(&v), "fraction {fraction}");
        assert_eq!(t.len() + v.len(), 50);
        // Both in the table's order.
        let mut sorted = ids(&train);
        sorted.sort_unstable();
        assert_eq!(ids(&train), sorted);
        let mut sorted = ids(&val);
        sorted.sort_unstable();
        assert_eq!(ids(&val), sorted);
        // The indices name the same subjects.
        let (ti, vi) = ds.split_indices(fraction, 7).unwrap();
        assert_eq!(
            ti.iter().map(|&i| &ds.subjects[i]).collect::<Vec<_>>(),
            train.iter().collect::<Vec<_>>()
        );
        assert_eq!(
            vi.iter().map(|&i| &ds.subjects[i]).collect::<Vec<_>>(),
            val.iter().collect::<Vec<_>>()
        );
    }
    // Deterministic per seed; another seed holds out other subjects.
    let (_, a) = ds.split(0.2, 7).unwrap();
    assert_eq!(ids(&a), ids(&ds.split(0.2, 7).unwrap().1));
    let (_, b) = ds.split(0.2, 8).unwrap();
    assert_ne!(ids(&a), ids(&b));
    // Not simply the first or last rows.
    assert_ne!(ids(&a), ids(&ds.subjects[..10]));
    assert_ne!(ids(&a), ids(&ds.subjects[40..]));
    // Holding out every subject is refused, naming the dataset.
    let err = ds.split(0.99, 7).unwrap_err().to_string();
    assert!(
        err.contains("participants.tsv") && err.contains("50 subjects leave none"),
        "{err}"
    );
}
