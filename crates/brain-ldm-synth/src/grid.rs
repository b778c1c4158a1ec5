//! The output grid: voxel sizes, the field of view and the affine of generated images.
//!
//! Arrays are stored with x fastest (NIfTI's on-disk order): the flat index of voxel
//! `(i, j, k)` is `i + nx * (j + ny * k)`; the public arrays are `ndarray` views of that
//! buffer in Fortran order, indexed `[i, j, k]`.

use ndarray::{Array3, ShapeBuilder};

use crate::error::{Result, SynthError};

/// The paper's field of view in mm (160 × 224 × 160 voxels at 1 mm).
pub const FOV_MM: [usize; 3] = [160, 224, 160];

/// World (MNI, RAS) coordinates in mm of the field of view's outer corner (a voxel edge).
///
/// The box spans x −80.5‥79.5, y −129.5‥94.5, z −70.5‥89.5: it is centred on the
/// template's brain left to right and front to back and keeps the vertex of the largest
/// heads, cutting the brainstem below z = −70 as the paper's crop does.
pub const FOV_CORNER: [f64; 3] = [-80.5, -129.5, -70.5];

/// The voxel sizes the generator makes: the same field of view at 1, 2 or 4 mm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VoxelSize {
    /// 1 mm isotropic, 160 × 224 × 160 voxels.
    Mm1,
    /// 2 mm isotropic, 80 × 112 × 80 voxels.
    Mm2,
    /// 4 mm isotropic, 40 × 56 × 40 voxels.
    Mm4,
}

impl VoxelSize {
    /// Parses a voxel size in mm (1, 2 or 4).
    ///
    /// # Errors
    /// [`SynthError::UnknownVoxelSize`] for any other value.
    ///
    /// ```
    /// use brain_ldm_synth::VoxelSize;
    /// assert_eq!(VoxelSize::from_mm(2.0)?, VoxelSize::Mm2);
    /// assert!(VoxelSize::from_mm(3.0).is_err());
    /// # Ok::<(), brain_ldm_synth::SynthError>(())
    /// ```
    pub fn from_mm(mm: f64) -> Result<Self> {
        if mm == 1.0 {
            Ok(Self::Mm1)
        } else if mm == 2.0 {
            Ok(Self::Mm2)
        } else if mm == 4.0 {
            Ok(Self::Mm4)
        } else {
            Err(SynthError::UnknownVoxelSize { got: mm })
        }
    }

    /// The edge length of a voxel in mm.
    pub fn mm(self) -> f64 {
        match self {
            Self::Mm1 => 1.0,
            Self::Mm2 => 2.0,
            Self::Mm4 => 4.0,
        }
    }

    /// The volume of one voxel in mm³ (1, 8 or 64).
    pub fn voxel_volume(self) -> u64 {
        match self {
            Self::Mm1 => 1,
            Self::Mm2 => 8,
            Self::Mm4 => 64,
        }
    }

    /// The image shape `[nx, ny, nz]` covering [`FOV_MM`].
    pub fn shape(self) -> [usize; 3] {
        let h = self.step();
        [FOV_MM[0] / h, FOV_MM[1] / h, FOV_MM[2] / h]
    }

    /// The voxel-to-world affine (RAS, mm) of generated images.
    pub fn affine(self) -> [[f64; 4]; 4] {
        let h = self.mm();
        let o = self.first_centre();
        [
            [h, 0.0, 0.0, o[0]],
            [0.0, h, 0.0, o[1]],
            [0.0, 0.0, h, o[2]],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    /// World coordinates of the centre of voxel (0, 0, 0).
    pub(crate) fn first_centre(self) -> [f64; 3] {
        let h = self.mm();
        [
            FOV_CORNER[0] + h / 2.0,
            FOV_CORNER[1] + h / 2.0,
            FOV_CORNER[2] + h / 2.0,
        ]
    }

    /// The voxel size as an integer number of mm.
    pub(crate) fn step(self) -> usize {
        match self {
            Self::Mm1 => 1,
            Self::Mm2 => 2,
            Self::Mm4 => 4,
        }
    }

    /// The template pyramid level sampled at this size (0: 1 mm, 1: 2 mm, 2: 4 mm).
    pub(crate) fn level(self) -> usize {
        match self {
            Self::Mm1 => 0,
            Self::Mm2 => 1,
            Self::Mm4 => 2,
        }
    }
}

/// Flat index of `(i, j, k)` in an x-fastest buffer of shape `dims`.
#[inline]
pub(crate) fn flat(dims: [usize; 3], i: usize, j: usize, k: usize) -> usize {
    i + dims[0] * (j + dims[1] * k)
}

/// Wraps an x-fastest buffer as a Fortran-order array indexed `[i, j, k]`.
pub(crate) fn fortran_array<T>(dims: [usize; 3], data: Vec<T>) -> Array3<T> {
    // The length always matches: every caller builds `data` from `dims`.
    Array3::from_shape_vec((dims[0], dims[1], dims[2]).f(), data)
        .unwrap_or_else(|e| unreachable!("buffer does not match its shape: {e}"))
}
