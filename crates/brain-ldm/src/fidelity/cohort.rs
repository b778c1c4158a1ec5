//! A folder of real images to compare diversity with: a BIDS dataset as `brain-ldm synth`
//! writes it, or a plain folder of NIfTI files.

use crate::error::{Error, Result};
use brain_ldm_metrics::VolumeSource;
use ndarray::{Array3, CowArray, Ix3};
use std::path::{Path, PathBuf};

/// The T1 images of a cohort folder, read one at a time.
#[derive(Debug, Clone)]
pub struct Cohort {
    dir: PathBuf,
    files: Vec<PathBuf>,
    shape: [usize; 3],
}

/// Whether `name` ends in a NIfTI extension; `t1w` also asks for BIDS's `_T1w` suffix.
fn is_nifti(name: &str, t1w: bool) -> bool {
    let lower = name.to_ascii_lowercase();
    [".nii", ".nii.gz"].iter().any(|ext| {
        lower
            .strip_suffix(ext)
            .is_some_and(|stem| !t1w || stem.ends_with("_t1w"))
    })
}

/// The files of `dir` (sorted) whose names satisfy `keep`; an unreadable folder is empty.
fn files_in(dir: &Path, keep: impl Fn(&str, &Path) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| keep(n, p))
        })
        .collect();
    out.sort();
    out
}

impl Cohort {
    /// Lists the images of `dir`: `sub-*/anat/*_T1w.nii[.gz]` and
    /// `sub-*/ses-*/anat/*_T1w.nii[.gz]` (BIDS), or else the `.nii[.gz]` files directly in
    /// it; reads every header to check that the images are 3D and share one shape.
    ///
    /// # Errors
    /// [`Error::Cohort`] for a folder that cannot be read, without images, with an
    /// unreadable header, a non-3D image or images of different shapes.
    pub fn open(dir: impl AsRef<Path>) -> Result<Cohort> {
        let dir = dir.as_ref().to_path_buf();
        let fail = |path: &Path, reason: String| Error::Cohort {
            path: path.to_path_buf(),
            reason,
        };
        if !dir.is_dir() {
            return Err(fail(&dir, "not a folder".into()));
        }
        let subjects = files_in(&dir, |n, p| n.starts_with("sub-") && p.is_dir());
        let mut files = Vec::new();
        for subject in &subjects {
            let sessions = files_in(subject, |n, p| n.starts_with("ses-") && p.is_dir());
            for base in std::iter::once(subject).chain(&sessions) {
                files.extend(files_in(&base.join("anat"), |n, p| {
                    is_nifti(n, true) && p.is_file()
                }));
            }
        }
        if files.is_empty() {
            files = files_in(&dir, |n, p| is_nifti(n, false) && p.is_file());
        }
        if files.is_empty() {
            return Err(fail(
                &dir,
                "no images: expected sub-*/anat/*_T1w.nii[.gz] (BIDS, as brain-ldm synth \
                 writes) or .nii[.gz] files in the folder"
                    .into(),
            ));
        }
        let mut shape = None;
        for file in &files {
            let header =
                brain_ldm_nifti::read_header(file).map_err(|e| fail(file, e.to_string()))?;
            let ndim = header.ndim().clamp(0, 7) as usize;
            let dims: Vec<usize> = header.dim[1..=ndim].iter().map(|&d| d as usize).collect();
            if ndim < 3 || dims[3..].iter().any(|&d| d != 1) {
                return Err(fail(
                    file,
                    format!("expected a 3D image, got shape {dims:?}"),
                ));
            }
            let this = [dims[0], dims[1], dims[2]];
            match shape {
                None => shape = Some((this, file.clone())),
                Some((first, ref first_file)) if first != this => {
                    return Err(fail(
                        file,
                        format!(
                            "shape {this:?} differs from {first:?} of {}",
                            first_file.display()
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        let shape = shape.map_or([0; 3], |(s, _)| s);
        Ok(Cohort { dir, files, shape })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The images, in name order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The images' shape `[ni, nj, nk]`.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }
}

/// The name of the `index`-th of `files` for a [`VolumeSource`] over a list of NIfTI files:
/// its path, or `#index` past the end of the list.
pub fn listed_name(files: &[PathBuf], index: usize) -> String {
    files
        .get(index)
        .map_or_else(|| format!("#{index}"), |p| p.display().to_string())
}

/// Reads the `index`-th of `files`, for [`VolumeSource::load`] over a list of NIfTI files.
///
/// # Errors
/// [`brain_ldm_metrics::Error::Load`], named by [`listed_name`], for an index past the end
/// of the list or a file that cannot be read.
pub fn read_listed(files: &[PathBuf], index: usize) -> brain_ldm_metrics::Result<Array3<f32>> {
    let load_error =
        |source: Box<dyn std::error::Error + Send + Sync>| brain_ldm_metrics::Error::Load {
            index,
            name: listed_name(files, index),
            source,
        };
    let path = files
        .get(index)
        .ok_or_else(|| load_error("index out of range".into()))?;
    let volume = brain_ldm_nifti::read(path).map_err(|e| load_error(Box::new(e)))?;
    Ok(volume.data)
}

impl VolumeSource for Cohort {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn name(&self, index: usize) -> String {
        listed_name(&self.files, index)
    }

    fn load(&self, index: usize) -> brain_ldm_metrics::Result<CowArray<'_, f32, Ix3>> {
        read_listed(&self.files, index).map(CowArray::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brain_ldm_nifti::{affine::IDENTITY, Volume};

    fn write(path: &Path, shape: (usize, usize, usize)) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        brain_ldm_nifti::write(&Volume::new(Array3::zeros(shape), IDENTITY), path).unwrap();
    }

    #[test]
    fn read_listed_names_the_file_or_the_index_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("a.nii.gz");
        write(&good, (2, 3, 4));
        let missing = dir.path().join("missing.nii.gz");
        let files = [good, missing.clone()];
        assert_eq!(read_listed(&files, 0).unwrap().shape(), [2, 3, 4]);
        assert_eq!(listed_name(&files, 1), missing.display().to_string());
        let err = read_listed(&files, 1).unwrap_err().to_string();
        assert!(err.contains("missing.nii.gz"), "{err}");
        assert_eq!(listed_name(&files, 2), "#2");
        let err = read_listed(&files, 2).unwrap_err().to_string();
        assert!(err.contains("#2") && err.contains("out of range"), "{err}");
    }

    #[test]
    fn lists_bids_t1w_images_and_rejects_bad_folders() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            &root.join("sub-000001/anat/sub-000001_T1w.nii.gz"),
            (4, 5, 6),
        );
        write(
            &root.join("sub-000000/anat/sub-000000_T1w.nii.gz"),
            (4, 5, 6),
        );
        // Labels and files outside anat/ are not images of the cohort.
        write(
            &root.join("sub-000000/anat/sub-000000_dseg.nii.gz"),
            (4, 5, 6),
        );
        write(&root.join("extra.nii.gz"), (4, 5, 6));
        let cohort = Cohort::open(root).unwrap();
        assert_eq!(cohort.len(), 2);
        assert!(cohort.files()[0].ends_with("sub-000000/anat/sub-000000_T1w.nii.gz"));
        assert_eq!(cohort.shape(), [4, 5, 6]);
        assert_eq!(cohort.load(1).unwrap().shape(), [4, 5, 6]);

        // A flat folder of NIfTI files.
        let flat = Cohort::open(root.join("sub-000000/anat")).unwrap();
        assert_eq!(flat.len(), 2);

        let empty = tempfile::tempdir().unwrap();
        let err = Cohort::open(empty.path()).unwrap_err().to_string();
        assert!(err.contains("no images"), "{err}");
        write(
            &root.join("sub-000002/anat/sub-000002_T1w.nii.gz"),
            (4, 5, 7),
        );
        let err = Cohort::open(root).unwrap_err().to_string();
        assert!(
            err.contains("sub-000002") && err.contains("differs"),
            "{err}"
        );
    }
}
