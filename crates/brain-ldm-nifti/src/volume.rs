//! The [`Volume`] type: a 3D image as f32 voxels with its voxel-to-world affine.

use std::borrow::Cow;

use candle_core::{DType, Device, Tensor};
use ndarray::Array3;
use rayon::prelude::*;

use crate::affine::{voxel_sizes, Affine};
use crate::error::{Error, Result};
use crate::header::NiftiHeader;
use crate::orientation::AxisCodes;

/// A 3D image: f32 voxels, the voxel-to-world affine, and the header it was read from.
///
/// # Array order
/// `data[[i, j, k]]` is voxel `(i, j, k)` of the file: `i` is the first NIfTI axis (the one
/// varying fastest on disk), `k` the third. The array is row-major, so in memory `k` is
/// contiguous; [`Volume::to_tensor`] maps `(i, j, k)` to the tensor's `(D, H, W)`. World
/// coordinates of voxel `(i, j, k)` are `affine · (i, j, k, 1)`.
///
/// # Example
/// ```
/// use brain_ldm_nifti::{Volume, affine::IDENTITY};
/// use ndarray::Array3;
///
/// let vol = Volume::new(Array3::from_elem((4, 5, 6), 1.0), IDENTITY);
/// assert_eq!(vol.shape(), [4, 5, 6]);
/// assert_eq!(vol.orientation()?.to_string(), "RAS");
/// # Ok::<(), brain_ldm_nifti::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// Voxel values indexed `[i, j, k]` (scaled by `scl_slope`/`scl_inter` when read).
    pub data: Array3<f32>,
    /// Voxel-to-world affine (mm).
    pub affine: Affine,
    /// The header of the file this volume was read from; `None` for volumes made in memory.
    /// Preprocessing keeps it unchanged, so after preprocessing it describes the source file,
    /// not this array.
    pub header: Option<NiftiHeader>,
}

/// Minimum, maximum and mean of a volume's voxels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean (summed in f64).
    pub mean: f64,
}

impl Volume {
    /// A volume made in memory (no source header).
    pub fn new(data: Array3<f32>, affine: Affine) -> Volume {
        Volume {
            data,
            affine,
            header: None,
        }
    }

    /// The same volume with other voxels of the same or another shape and a new affine,
    /// keeping the source header.
    pub(crate) fn derive(&self, data: Array3<f32>, affine: Affine) -> Volume {
        Volume {
            data,
            affine,
            header: self.header.clone(),
        }
    }

    /// Shape `[ni, nj, nk]`.
    pub fn shape(&self) -> [usize; 3] {
        let (a, b, c) = self.data.dim();
        [a, b, c]
    }

    /// Voxel sizes in mm (norms of the affine's columns; nibabel's `voxel_sizes(affine)`).
    pub fn voxel_sizes(&self) -> [f64; 3] {
        voxel_sizes(&self.affine)
    }

    /// Orientation codes of the voxel axes (nibabel's `aff2axcodes`).
    ///
    /// # Errors
    /// [`Error::BadAffine`] when the affine has a zero or non-finite column.
    pub fn orientation(&self) -> Result<AxisCodes> {
        AxisCodes::from_affine(&self.affine)
    }

    /// Voxels as a row-major slice (copied only if the array is not in standard layout).
    pub fn values(&self) -> Cow<'_, [f32]> {
        match self.data.as_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(self.data.iter().copied().collect()),
        }
    }

    /// Minimum, maximum and mean (NaN for an empty volume).
    pub fn stats(&self) -> Stats {
        let values = self.values();
        if values.is_empty() {
            return Stats {
                min: f64::NAN,
                max: f64::NAN,
                mean: f64::NAN,
            };
        }
        let (min, max, sum) = values
            .par_chunks(1 << 16)
            .map(|chunk| {
                let mut min = f32::INFINITY;
                let mut max = f32::NEG_INFINITY;
                let mut sum = 0.0f64;
                for &v in chunk {
                    min = min.min(v);
                    max = max.max(v);
                    sum += v as f64;
                }
                (min, max, sum)
            })
            .reduce(
                || (f32::INFINITY, f32::NEG_INFINITY, 0.0),
                |a, b| (a.0.min(b.0), a.1.max(b.1), a.2 + b.2),
            );
        Stats {
            min: min as f64,
            max: max as f64,
            mean: sum / values.len() as f64,
        }
    }

    /// The voxels as an f32 tensor of shape (1, 1, D, H, W) = (1, 1, ni, nj, nk).
    ///
    /// After [`reorient`](crate::preprocess::reorient) to RAS, D runs left→right, H
    /// posterior→anterior and W inferior→superior; the model's 160×224×160 input is in this
    /// order. The affine stays with the volume: rebuild with [`Volume::from_tensor`].
    ///
    /// # Errors
    /// A candle error if the tensor cannot be made on `device`.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let [d, h, w] = self.shape();
        Ok(Tensor::from_vec(
            self.values().into_owned(),
            (1, 1, d, h, w),
            device,
        )?)
    }

    /// A volume from a tensor of shape (1, 1, D, H, W) or (D, H, W) (any float dtype,
    /// converted to f32) and the affine of its grid (usually the affine of the volume the
    /// tensor was made from).
    ///
    /// # Errors
    /// [`Error::TensorShape`] for another shape; candle errors from the copy.
    pub fn from_tensor(tensor: &Tensor, affine: Affine) -> Result<Volume> {
        let dims = tensor.dims().to_vec();
        let (d, h, w) = match dims.as_slice() {
            [1, 1, d, h, w] | [d, h, w] => (*d, *h, *w),
            _ => return Err(Error::TensorShape { got: dims }),
        };
        let flat = tensor
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let data = Array3::from_shape_vec((d, h, w), flat)
            .map_err(|_| Error::TensorShape { got: dims.clone() })?;
        Ok(Volume::new(data, affine))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affine::IDENTITY;

    #[test]
    fn tensor_round_trip_keeps_layout() {
        let data = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (100 * i + 10 * j + k) as f32);
        let mut affine = IDENTITY;
        affine[0][3] = -5.0;
        let vol = Volume::new(data, affine);
        let t = vol.to_tensor(&Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 1, 2, 3, 4]);
        let v: f32 = t
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .get(1)
            .unwrap()
            .get(2)
            .unwrap()
            .get(3)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(v, 123.0);
        let back = Volume::from_tensor(&t, vol.affine).unwrap();
        assert_eq!(back, vol);
        let bad = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            Volume::from_tensor(&bad, IDENTITY),
            Err(Error::TensorShape { .. })
        ));
    }

    #[test]
    fn stats_in_f64() {
        let vol = Volume::new(
            Array3::from_shape_fn((2, 2, 2), |(i, _, _)| i as f32),
            IDENTITY,
        );
        let s = vol.stats();
        assert_eq!((s.min, s.max, s.mean), (0.0, 1.0, 0.5));
    }
}
