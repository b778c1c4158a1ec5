//! The label values of `_dseg` images and the rule that makes labels from tissue fractions.

/// Outside the brain.
pub const BACKGROUND: u8 = 0;
/// Cerebrospinal fluid outside the ventricles.
pub const CSF: u8 = 1;
/// Grey matter.
pub const GM: u8 = 2;
/// White matter.
pub const WM: u8 = 3;
/// The lateral ventricles (with the third ventricle where it joins them).
pub const VENTRICLES: u8 = 4;

/// The label of a voxel from its brain-mask fraction `m` and tissue fractions: background
/// when `m < 0.5`, else the largest of CSF `c`, GM `g`, WM `w` and ventricle `v` (a tie
/// goes to the class listed first).
#[inline]
pub(crate) fn classify(m: f32, c: f32, g: f32, w: f32, v: f32) -> u8 {
    if m < 0.5 {
        return BACKGROUND;
    }
    let mut best = c;
    let mut label = CSF;
    if g > best {
        best = g;
        label = GM;
    }
    if w > best {
        best = w;
        label = WM;
    }
    if v > best {
        label = VENTRICLES;
    }
    label
}

/// Volumes in mm³, from labels or measured on a T1.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Volumes {
    /// The lateral ventricles.
    pub ventricular_volume: f64,
    /// Grey plus white matter.
    pub brain_volume: f64,
    /// Everything inside the brain mask (CSF, GM, WM, ventricles).
    pub icv: f64,
}

/// Counts the labels of a `_dseg` image: ventricles, GM + WM and all non-zero labels,
/// times `voxel_volume` (mm³).
///
/// ```
/// use brain_ldm_synth::labels::{label_volumes, CSF, GM, VENTRICLES, WM};
/// let v = label_volumes([0, CSF, GM, WM, VENTRICLES, WM].iter(), 8.0);
/// assert_eq!((v.ventricular_volume, v.brain_volume, v.icv), (8.0, 24.0, 40.0));
/// ```
pub fn label_volumes<'a>(labels: impl IntoIterator<Item = &'a u8>, voxel_volume: f64) -> Volumes {
    let mut n = [0u64; 5];
    for &l in labels {
        if let Some(c) = n.get_mut(l as usize) {
            *c += 1;
        }
    }
    Volumes {
        ventricular_volume: n[VENTRICLES as usize] as f64 * voxel_volume,
        brain_volume: (n[GM as usize] + n[WM as usize]) as f64 * voxel_volume,
        icv: (n[1] + n[2] + n[3] + n[4]) as f64 * voxel_volume,
    }
}
