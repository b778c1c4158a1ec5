//! Axis orientation codes (`RAS`, `LPI`, ...) from affines, as nibabel's `io_orientation` and
//! `aff2axcodes`.

use std::fmt;
use std::str::FromStr;

use crate::affine::{polar_orthogonal, voxel_sizes, Affine};
use crate::error::{Error, Result};

/// The world direction a voxel axis points to (the direction its index increases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AxisCode {
    /// Towards the left (−x).
    L,
    /// Towards the right (+x).
    R,
    /// Towards the posterior (−y).
    P,
    /// Towards the anterior (+y).
    A,
    /// Towards the inferior (−z).
    I,
    /// Towards the superior (+z).
    S,
}

impl AxisCode {
    /// The world axis (0 = x, 1 = y, 2 = z) and sign (+1 or −1) of this direction.
    pub fn world_axis(self) -> (usize, i8) {
        match self {
            AxisCode::L => (0, -1),
            AxisCode::R => (0, 1),
            AxisCode::P => (1, -1),
            AxisCode::A => (1, 1),
            AxisCode::I => (2, -1),
            AxisCode::S => (2, 1),
        }
    }

    /// The code for a world axis and sign.
    pub fn from_world_axis(axis: usize, sign: i8) -> AxisCode {
        match (axis, sign >= 0) {
            (0, false) => AxisCode::L,
            (0, true) => AxisCode::R,
            (1, false) => AxisCode::P,
            (1, true) => AxisCode::A,
            (_, false) => AxisCode::I,
            (_, true) => AxisCode::S,
        }
    }

    fn letter(self) -> char {
        match self {
            AxisCode::L => 'L',
            AxisCode::R => 'R',
            AxisCode::P => 'P',
            AxisCode::A => 'A',
            AxisCode::I => 'I',
            AxisCode::S => 'S',
        }
    }
}

/// Orientation of the three voxel axes, e.g. `RAS`: axis i points Right, j Anterior, k Superior.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AxisCodes(pub [AxisCode; 3]);

impl AxisCodes {
    /// `RAS`, the canonical NIfTI orientation (nibabel's `as_closest_canonical`).
    pub const RAS: AxisCodes = AxisCodes([AxisCode::R, AxisCode::A, AxisCode::S]);

    /// The orientation closest to `affine` (nibabel's `aff2axcodes`).
    ///
    /// # Errors
    /// [`Error::BadAffine`] when a voxel axis has zero or non-finite size.
    pub fn from_affine(affine: &Affine) -> Result<AxisCodes> {
        let ornt = io_orientation(affine)?;
        Ok(AxisCodes(
            ornt.map(|(axis, sign)| AxisCode::from_world_axis(axis, sign)),
        ))
    }
}

impl FromStr for AxisCodes {
    type Err = Error;

    /// Parses three letters, one from each of L/R, P/A, I/S, in any order (case-insensitive).
    fn from_str(s: &str) -> Result<AxisCodes> {
        let bad = || Error::BadOrientation {
            codes: s.to_string(),
        };
        let letters: Vec<char> = s.trim().to_ascii_uppercase().chars().collect();
        if letters.len() != 3 {
            return Err(bad());
        }
        let mut codes = [AxisCode::R; 3];
        let mut seen = [false; 3];
        for (n, c) in letters.iter().enumerate() {
            let code = match c {
                'L' => AxisCode::L,
                'R' => AxisCode::R,
                'P' => AxisCode::P,
                'A' => AxisCode::A,
                'I' => AxisCode::I,
                'S' => AxisCode::S,
                _ => return Err(bad()),
            };
            let (axis, _) = code.world_axis();
            if seen[axis] {
                return Err(bad());
            }
            seen[axis] = true;
            codes[n] = code;
        }
        Ok(AxisCodes(codes))
    }
}

impl fmt::Display for AxisCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0 {
            write!(f, "{}", c.letter())?;
        }
        Ok(())
    }
}

/// For each voxel axis, the world axis it is closest to and the sign (nibabel's
/// `io_orientation`): the columns of the affine's 3×3 part are normalised, reduced to their
/// orthogonal polar factor, and each voxel axis in turn takes the world axis of its largest
/// absolute entry among those not yet taken.
///
/// # Errors
/// [`Error::BadAffine`] when a column is zero or not finite.
pub fn io_orientation(affine: &Affine) -> Result<[(usize, i8); 3]> {
    let zooms = voxel_sizes(affine);
    if zooms.iter().any(|z| !z.is_finite() || *z == 0.0) {
        return Err(Error::BadAffine { voxel_sizes: zooms });
    }
    let mut rs = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            rs[r][c] = affine[r][c] / zooms[c];
        }
    }
    let mut rot = polar_orthogonal(&rs);
    let mut out = [(0usize, 1i8); 3];
    let mut used = [false; 3];
    for (in_ax, slot) in out.iter_mut().enumerate() {
        let mut best = None;
        let mut best_abs = -1.0;
        for (out_ax, row) in rot.iter().enumerate() {
            if !used[out_ax] && row[in_ax].abs() > best_abs {
                best_abs = row[in_ax].abs();
                best = Some(out_ax);
            }
        }
        let out_ax = best.ok_or(Error::BadAffine { voxel_sizes: zooms })?;
        if best_abs <= 0.0 {
            return Err(Error::BadAffine { voxel_sizes: zooms });
        }
        let sign = if rot[out_ax][in_ax] < 0.0 { -1 } else { 1 };
        *slot = (out_ax, sign);
        used[out_ax] = true;
        rot[out_ax] = [0.0; 3];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let c: AxisCodes = "las".parse().unwrap();
        assert_eq!(c.to_string(), "LAS");
        assert!("RRS".parse::<AxisCodes>().is_err());
        assert!("RA".parse::<AxisCodes>().is_err());
        assert!("RAX".parse::<AxisCodes>().is_err());
    }

    #[test]
    fn axcodes_of_permuted_flipped_affine() {
        // nibabel: aff2axcodes([[0,0,-2,0],[-1,0,0,0],[0,3,0,0],[0,0,0,1]]) == ('P', 'S', 'L')
        let a = [
            [0.0, 0.0, -2.0, 0.0],
            [-1.0, 0.0, 0.0, 0.0],
            [0.0, 3.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert_eq!(AxisCodes::from_affine(&a).unwrap().to_string(), "PSL");
    }
}
