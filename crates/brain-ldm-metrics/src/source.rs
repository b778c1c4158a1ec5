//! Sets of volumes that are loaded one at a time ([`VolumeSource`]), feature extractors
//! for FID ([`FeatureExtractor`]) and progress reporting ([`Progress`]).
//!
//! A thousand 160×224×160 f32 volumes take 23 GB, so the set-level functions never ask
//! for a whole set in memory: they load volumes by index as they need them.

use ndarray::{Array2, Array3, ArrayView3, CowArray, Ix3};

use crate::error::{Error, Result};

/// A set of 3D volumes `[D, H, W]` addressed by index, loaded on demand.
///
/// Implemented for in-memory slices of `Array3<f32>` (borrowed, no copy); implement it
/// over files to stream a set from disk (the `brain-ldm eval` command reads NIfTI files).
pub trait VolumeSource: Sync {
    /// Number of volumes.
    fn len(&self) -> usize;

    /// Whether the set is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A name for volume `index` in messages and reports (e.g. its file name).
    fn name(&self, index: usize) -> String {
        format!("#{index}")
    }

    /// Volume `index` (`index < len()`).
    ///
    /// # Errors
    /// [`Error::Load`] (or any other variant) when it cannot be produced.
    fn load(&self, index: usize) -> Result<CowArray<'_, f32, Ix3>>;
}

impl VolumeSource for [Array3<f32>] {
    fn len(&self) -> usize {
        <[Array3<f32>]>::len(self)
    }

    fn load(&self, index: usize) -> Result<CowArray<'_, f32, Ix3>> {
        match self.get(index) {
            Some(v) => Ok(CowArray::from(v.view())),
            None => Err(Error::Load {
                index,
                name: format!("#{index}"),
                source: format!("index out of range for a set of {}", self.len()).into(),
            }),
        }
    }
}

impl VolumeSource for Vec<Array3<f32>> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn load(&self, index: usize) -> Result<CowArray<'_, f32, Ix3>> {
        self.as_slice().load(index)
    }
}

/// A network (or any function) mapping a volume to a feature vector, for FID.
///
/// The paper (Pinaya et al. 2022) computed FID on features of a pretrained Med3D
/// network (Chen et al. 2019, "Med3D: Transfer learning for 3D medical image analysis",
/// the MedicalNet ResNets); MONAI's `FIDMetric` likewise takes features from any
/// pretrained network, globally average-pooled to a vector. FID values are only
/// comparable between runs that use the same network, weights and input preprocessing.
///
/// # Example
/// ```
/// use brain_ldm_metrics::{FeatureExtractor, Result};
/// use ndarray::ArrayView3;
///
/// /// Mean intensity per depth half: a toy 2-feature "network".
/// struct Halves;
/// impl FeatureExtractor for Halves {
///     fn feature_dim(&self) -> usize { 2 }
///     fn extract(&self, v: ArrayView3<'_, f32>) -> Result<Vec<f32>> {
///         let d = v.shape()[0] / 2;
///         let m = |a: ArrayView3<'_, f32>| a.mean().unwrap_or(0.0);
///         Ok(vec![m(v.slice(ndarray::s![..d, .., ..])), m(v.slice(ndarray::s![d.., .., ..]))])
///     }
/// }
/// let f = Halves.extract(ndarray::Array3::<f32>::ones((4, 2, 2)).view())?;
/// assert_eq!(f, vec![1.0, 1.0]);
/// # Ok::<(), brain_ldm_metrics::Error>(())
/// ```
pub trait FeatureExtractor: Sync {
    /// Length of the feature vectors [`FeatureExtractor::extract`] returns.
    fn feature_dim(&self) -> usize;

    /// The feature vector of one volume `[D, H, W]`.
    ///
    /// # Errors
    /// Any; wrap foreign errors in [`Error::Extractor`].
    fn extract(&self, volume: ArrayView3<'_, f32>) -> Result<Vec<f32>>;
}

/// Where a long computation stands, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// What is being computed (e.g. `"diversity real"`).
    pub stage: &'static str,
    /// Items finished.
    pub done: usize,
    /// Items in this stage.
    pub total: usize,
}

/// Runs `extractor` over every volume of `set`: the `[N, F]` feature matrix for
/// [`crate::fid`]. `progress` is called after each volume.
///
/// # Errors
/// Errors of [`VolumeSource::load`] and [`FeatureExtractor::extract`], and
/// [`Error::ShapeMismatch`] when a feature vector's length is not `feature_dim()`.
pub fn extract_features<V, E>(
    set: &V,
    extractor: &E,
    stage: &'static str,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Array2<f32>>
where
    V: VolumeSource + ?Sized,
    E: FeatureExtractor + ?Sized,
{
    let (n, f) = (set.len(), extractor.feature_dim());
    let mut out = Array2::<f32>::zeros((n, f));
    for i in 0..n {
        let vol = set.load(i)?;
        let feat = extractor.extract(vol.view())?;
        if feat.len() != f {
            return Err(Error::ShapeMismatch {
                what: format!("feature vector of {}", set.name(i)),
                expected: vec![f],
                got: vec![feat.len()],
            });
        }
        out.row_mut(i)
            .iter_mut()
            .zip(feat)
            .for_each(|(o, v)| *o = v);
        progress(Progress {
            stage,
            done: i + 1,
            total: n,
        });
    }
    Ok(out)
}
