//! Reorientation by axis flips and permutations (nibabel's `as_closest_canonical`).

use ndarray::Axis;

use crate::affine::{matmul, Affine, IDENTITY};
use crate::error::Result;
use crate::orientation::{io_orientation, AxisCodes};
use crate::volume::Volume;

/// Flips and permutes the voxel axes so that they point as `target` says (e.g.
/// [`AxisCodes::RAS`]), updating the affine so every voxel keeps its world position.
///
/// The current orientation is nibabel's `io_orientation` of the affine (the closest
/// axis-aligned one for oblique affines); no interpolation happens. With `target` RAS this is
/// nibabel's `as_closest_canonical`: same array, same affine.
///
/// # Errors
/// [`Error::BadAffine`](crate::Error::BadAffine) when the affine has a zero column.
///
/// # Example
/// ```
/// use brain_ldm_nifti::{preprocess::reorient, AxisCodes, Volume};
/// use ndarray::Array3;
///
/// // LAS: i points left.
/// let las = [[-1.0, 0.0, 0.0, 3.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
/// let vol = Volume::new(Array3::from_shape_fn((4, 1, 1), |(i, _, _)| i as f32), las);
/// let ras = reorient(&vol, AxisCodes::RAS)?;
/// assert_eq!(ras.data.as_slice().unwrap(), &[3.0, 2.0, 1.0, 0.0]);
/// assert_eq!(ras.affine[0], [1.0, 0.0, 0.0, 0.0]);
/// # Ok::<(), brain_ldm_nifti::Error>(())
/// ```
pub fn reorient(volume: &Volume, target: AxisCodes) -> Result<Volume> {
    Ok(reorient_if_needed(volume, target)?.unwrap_or_else(|| volume.clone()))
}

/// [`reorient`], or `None` when the volume already has the target orientation.
pub(crate) fn reorient_if_needed(volume: &Volume, target: AxisCodes) -> Result<Option<Volume>> {
    let ornt = io_orientation(&volume.affine)?;
    let shape = volume.shape();
    // perm[t] = input axis that becomes output axis t; flip[a]: input axis a is reversed.
    let mut perm = [0usize; 3];
    let mut flip = [false; 3];
    for (a, &(world, sign)) in ornt.iter().enumerate() {
        let (t, code) = target
            .0
            .iter()
            .enumerate()
            .find(|(_, c)| c.world_axis().0 == world)
            .map(|(t, c)| (t, *c))
            .unwrap_or((a, target.0[a]));
        perm[t] = a;
        flip[a] = sign != code.world_axis().1;
    }
    if perm == [0, 1, 2] && flip == [false; 3] {
        return Ok(None);
    }
    let mut view = volume.data.view();
    for (a, &f) in flip.iter().enumerate() {
        if f {
            view.invert_axis(Axis(a));
        }
    }
    let data = view.permuted_axes(perm).as_standard_layout().into_owned();
    // Output voxel o comes from input voxel i_a = o_t (or n_a − 1 − o_t when flipped).
    let mut m: Affine = [[0.0; 4]; 4];
    m[3] = IDENTITY[3];
    for (t, &a) in perm.iter().enumerate() {
        if flip[a] {
            m[a][t] = -1.0;
            m[a][3] = shape[a] as f64 - 1.0;
        } else {
            m[a][t] = 1.0;
        }
    }
    Ok(Some(volume.derive(data, matmul(&volume.affine, &m))))
}

/// [`reorient`] to RAS: nibabel's `as_closest_canonical`.
///
/// # Errors
/// As [`reorient`].
pub fn reorient_to_ras(volume: &Volume) -> Result<Volume> {
    reorient(volume, AxisCodes::RAS)
}
