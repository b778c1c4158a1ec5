//! Voxel-to-world affines: choosing one from a header as nibabel does, the qform quaternion in
//! both directions, and small 4×4 / 3×3 helpers.
//!
//! An affine maps a voxel index `(i, j, k, 1)` to world millimetres `(x, y, z, 1)`; world axes
//! follow NIfTI's RAS+ convention (x to the Right, y to the Anterior, z to the Superior).

use crate::header::NiftiHeader;

/// A 4×4 voxel-to-world affine, row-major (`a[row][col]`), last row `[0, 0, 0, 1]`.
pub type Affine = [[f64; 4]; 4];

/// The identity affine.
pub const IDENTITY: Affine = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// Which header fields the affine came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AffineSource {
    /// `srow_x/y/z` (`sform_code` nonzero).
    Sform,
    /// The quaternion, `qoffset` and `pixdim` (`qform_code` nonzero, `sform_code` zero).
    Qform,
    /// Neither code set: `pixdim` only, centred, x flipped (nibabel's `get_base_affine`).
    Pixdim,
}

impl AffineSource {
    /// `"sform"`, `"qform"` or `"pixdim"`.
    pub fn name(self) -> &'static str {
        match self {
            AffineSource::Sform => "sform",
            AffineSource::Qform => "qform",
            AffineSource::Pixdim => "pixdim",
        }
    }
}

/// The affine nibabel's `img.affine` gives (`Nifti1Header.get_best_affine`): the sform if
/// `sform_code != 0`, else the qform if `qform_code != 0`, else the pixdim-only affine.
pub fn header_affine(h: &NiftiHeader) -> (Affine, AffineSource) {
    if h.sform_code != 0 {
        (sform_affine(h), AffineSource::Sform)
    } else if h.qform_code != 0 {
        (qform_affine(h), AffineSource::Qform)
    } else {
        (pixdim_affine(h), AffineSource::Pixdim)
    }
}

/// The affine stored in `srow_x/y/z`.
pub fn sform_affine(h: &NiftiHeader) -> Affine {
    [h.srow[0], h.srow[1], h.srow[2], [0.0, 0.0, 0.0, 1.0]]
}

/// The qform affine as nibabel's `get_qform`: `R(quaternion) · diag(pixdim[1], pixdim[2],
/// qfac·pixdim[3])` plus `qoffset`, where the quaternion's `a = sqrt(1 − b² − c² − d²)`
/// (0 if that is negative) and qfac = `pixdim[0]`, taken as 1 unless it is −1 (nibabel fixes
/// other values to 1 on load).
pub fn qform_affine(h: &NiftiHeader) -> Affine {
    let [b, c, d] = h.quatern;
    let w = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
    let r = quat_to_mat([w, b, c, d]);
    let qfac = if h.pixdim[0] == -1.0 { -1.0 } else { 1.0 };
    let zooms = [h.pixdim[1], h.pixdim[2], h.pixdim[3] * qfac];
    let mut a = IDENTITY;
    for row in 0..3 {
        for col in 0..3 {
            a[row][col] = r[row][col] * zooms[col];
        }
        a[row][3] = h.qoffset[row];
    }
    a
}

/// nibabel's `get_base_affine` (`shape_zoom_affine(shape, zooms, x_flip=True)`):
/// `diag(−pixdim[1], pixdim[2], pixdim[3])` with the centre voxel `(shape − 1) / 2` at the origin.
pub fn pixdim_affine(h: &NiftiHeader) -> Affine {
    let ndim = h.dim[0].clamp(0, 3) as usize;
    let mut shape = [1.0f64; 3];
    let mut zooms = [1.0f64; 3];
    for n in 0..ndim {
        shape[n] = h.dim[n + 1] as f64;
        zooms[n] = h.pixdim[n + 1];
    }
    zooms[0] = -zooms[0];
    let mut a = IDENTITY;
    for n in 0..3 {
        a[n][n] = zooms[n];
        a[n][3] = -(shape[n] - 1.0) / 2.0 * zooms[n];
    }
    a
}

/// The qform fields nibabel's `set_qform` stores for `affine`: `(quatern [b, c, d], qoffset,
/// qfac, zooms)`. Shears are stripped: the rotation is the orthogonal polar factor of the
/// column-normalised 3×3 part, with its last column negated (qfac = −1) when its determinant
/// is negative.
pub fn qform_params(affine: &Affine) -> ([f64; 3], [f64; 3], f64, [f64; 3]) {
    let zooms = voxel_sizes(affine);
    let mut r = [[0.0; 3]; 3];
    for row in 0..3 {
        for col in 0..3 {
            let z = if zooms[col] == 0.0 { 1.0 } else { zooms[col] };
            r[row][col] = affine[row][col] / z;
        }
    }
    let qfac = if det3(&r) > 0.0 { 1.0 } else { -1.0 };
    if qfac < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
    }
    let q = mat_to_quat(&polar_orthogonal(&r));
    let offset = [affine[0][3], affine[1][3], affine[2][3]];
    ([q[1], q[2], q[3]], offset, qfac, zooms)
}

/// Rotation matrix of the quaternion `[w, x, y, z]` (nibabel's `quat2mat`; normalised first;
/// identity for a zero quaternion).
pub fn quat_to_mat(q: [f64; 4]) -> [[f64; 3]; 3] {
    let [w, x, y, z] = q;
    let nq = w * w + x * x + y * y + z * z;
    if nq < f64::EPSILON {
        return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    }
    let s = 2.0 / nq;
    let (xs, ys, zs) = (x * s, y * s, z * s);
    let (wx, wy, wz) = (w * xs, w * ys, w * zs);
    let (xx, xy, xz) = (x * xs, x * ys, x * zs);
    let (yy, yz, zz) = (y * ys, y * zs, z * zs);
    [
        [1.0 - (yy + zz), xy - wz, xz + wy],
        [xy + wz, 1.0 - (xx + zz), yz - wx],
        [xz - wy, yz + wx, 1.0 - (xx + yy)],
    ]
}

/// Unit quaternion `[w, x, y, z]` with `w ≥ 0` of a rotation matrix (Shepperd's method; for a
/// rotation it equals nibabel's `mat2quat`).
pub fn mat_to_quat(m: &[[f64; 3]; 3]) -> [f64; 4] {
    let tr = m[0][0] + m[1][1] + m[2][2];
    let q = if tr > 0.0 {
        let s = (tr + 1.0).sqrt() * 2.0;
        [
            0.25 * s,
            (m[2][1] - m[1][2]) / s,
            (m[0][2] - m[2][0]) / s,
            (m[1][0] - m[0][1]) / s,
        ]
    } else if m[0][0] > m[1][1] && m[0][0] > m[2][2] {
        let s = (1.0 + m[0][0] - m[1][1] - m[2][2]).sqrt() * 2.0;
        [
            (m[2][1] - m[1][2]) / s,
            0.25 * s,
            (m[0][1] + m[1][0]) / s,
            (m[0][2] + m[2][0]) / s,
        ]
    } else if m[1][1] > m[2][2] {
        let s = (1.0 + m[1][1] - m[0][0] - m[2][2]).sqrt() * 2.0;
        [
            (m[0][2] - m[2][0]) / s,
            (m[0][1] + m[1][0]) / s,
            0.25 * s,
            (m[1][2] + m[2][1]) / s,
        ]
    } else {
        let s = (1.0 + m[2][2] - m[0][0] - m[1][1]).sqrt() * 2.0;
        [
            (m[1][0] - m[0][1]) / s,
            (m[0][2] + m[2][0]) / s,
            (m[1][2] + m[2][1]) / s,
            0.25 * s,
        ]
    };
    let n = q.iter().map(|v| v * v).sum::<f64>().sqrt();
    let sign = if q[0] < 0.0 { -1.0 } else { 1.0 };
    [
        sign * q[0] / n,
        sign * q[1] / n,
        sign * q[2] / n,
        sign * q[3] / n,
    ]
}

/// Voxel sizes of an affine: the norms of the 3×3 part's columns (nibabel's
/// `affines.voxel_sizes`).
pub fn voxel_sizes(a: &Affine) -> [f64; 3] {
    let mut z = [0.0; 3];
    for (col, zc) in z.iter_mut().enumerate() {
        *zc = (0..3)
            .map(|row| a[row][col] * a[row][col])
            .sum::<f64>()
            .sqrt();
    }
    z
}

/// Matrix product `a · b`.
pub fn matmul(a: &Affine, b: &Affine) -> Affine {
    let mut c = [[0.0; 4]; 4];
    for (row, c_row) in c.iter_mut().enumerate() {
        for (col, c_val) in c_row.iter_mut().enumerate() {
            *c_val = (0..4).map(|n| a[row][n] * b[n][col]).sum();
        }
    }
    c
}

/// World coordinates (mm) of a (possibly fractional) voxel index.
pub fn voxel_to_world(a: &Affine, ijk: [f64; 3]) -> [f64; 3] {
    let mut xyz = [0.0; 3];
    for (row, v) in xyz.iter_mut().enumerate() {
        *v = a[row][0] * ijk[0] + a[row][1] * ijk[1] + a[row][2] * ijk[2] + a[row][3];
    }
    xyz
}

/// The affine of the grid whose voxel `o` is voxel `start + o·step` of the grid of `a`
/// (per axis, no mixing of axes): `a · [diag(step) | start]`.
pub fn sub_grid(a: &Affine, start: [f64; 3], step: [f64; 3]) -> Affine {
    let mut m = IDENTITY;
    for n in 0..3 {
        m[n][n] = step[n];
        m[n][3] = start[n];
    }
    matmul(a, &m)
}

pub(crate) fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// The orthogonal polar factor `P[:, keep] · Qᵀ[keep]` of `m = P S Qᵀ` (SVD), keeping singular
/// values above `max(S) · 3 · eps` (nibabel's thresholds), computed from the eigenvectors of
/// `mᵀm`. For a rank-deficient `m` the dropped directions are zero.
pub(crate) fn polar_orthogonal(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut mtm = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            mtm[r][c] = (0..3).map(|n| m[n][r] * m[n][c]).sum();
        }
    }
    let (vals, vecs) = symmetric_eigen(mtm);
    let s: Vec<f64> = vals.iter().map(|v| v.max(0.0).sqrt()).collect();
    let smax = s.iter().cloned().fold(0.0, f64::max);
    let tol = smax * 3.0 * f64::EPSILON;
    let mut out = [[0.0; 3]; 3];
    for k in 0..3 {
        if s[k] <= tol {
            continue;
        }
        let v = [vecs[0][k], vecs[1][k], vecs[2][k]];
        let u: Vec<f64> = (0..3)
            .map(|r| (0..3).map(|n| m[r][n] * v[n]).sum::<f64>() / s[k])
            .collect();
        for r in 0..3 {
            for c in 0..3 {
                out[r][c] += u[r] * v[c];
            }
        }
    }
    out
}

/// Eigenvalues and eigenvectors (as columns) of a symmetric 3×3 matrix, by cyclic Jacobi
/// rotations.
fn symmetric_eigen(mut a: [[f64; 3]; 3]) -> ([f64; 3], [[f64; 3]; 3]) {
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _sweep in 0..64 {
        let off = a[0][1] * a[0][1] + a[0][2] * a[0][2] + a[1][2] * a[1][2];
        let diag = a[0][0] * a[0][0] + a[1][1] * a[1][1] + a[2][2] * a[2][2];
        if off <= f64::EPSILON * f64::EPSILON * diag || off == 0.0 {
            break;
        }
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            if a[p][q] == 0.0 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            // a <- Jᵀ a J with J the rotation in the (p, q) plane.
            for row in a.iter_mut() {
                let (akp, akq) = (row[p], row[q]);
                row[p] = c * akp - s * akq;
                row[q] = s * akp + c * akq;
            }
            let (row_p, row_q) = (a[p], a[q]);
            for (k, (apk, aqk)) in row_p.iter().zip(row_q).enumerate() {
                a[p][k] = c * apk - s * aqk;
                a[q][k] = s * apk + c * aqk;
            }
            for row in v.iter_mut() {
                let vkp = row[p];
                let vkq = row[q];
                row[p] = c * vkp - s * vkq;
                row[q] = s * vkp + c * vkq;
            }
        }
    }
    ([a[0][0], a[1][1], a[2][2]], v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rot(axis: usize, angle: f64) -> [[f64; 3]; 3] {
        let (s, c) = angle.sin_cos();
        let mut m = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let (p, q) = [(1, 2), (0, 2), (0, 1)][axis];
        m[p][p] = c;
        m[q][q] = c;
        m[p][q] = -s;
        m[q][p] = s;
        m
    }

    fn mul3(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
        let mut c = [[0.0; 3]; 3];
        for r in 0..3 {
            for col in 0..3 {
                c[r][col] = (0..3).map(|n| a[r][n] * b[n][col]).sum();
            }
        }
        c
    }

    #[test]
    fn quaternion_round_trip_for_rotations() {
        for (a, b, c) in [
            (0.3, -1.2, 2.5),
            (3.1, 0.0, 0.0),
            (0.0, 3.0, 0.2),
            (0.0, 0.0, 0.0),
        ] {
            let r = mul3(&mul3(&rot(0, a), &rot(1, b)), &rot(2, c));
            let q = mat_to_quat(&r);
            assert!(q[0] >= 0.0);
            let back = quat_to_mat(q);
            for i in 0..3 {
                for j in 0..3 {
                    assert!((back[i][j] - r[i][j]).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn polar_factor_of_scaled_rotation_is_the_rotation() {
        let r = mul3(&rot(0, 0.4), &rot(2, -0.7));
        let mut m = r;
        for row in m.iter_mut() {
            row[0] *= 2.0;
            row[1] *= 0.5;
            row[2] *= 3.0;
        }
        // polar(R·D) = R for positive diagonal D only when D ∝ I; normalise columns first.
        let z = [2.0, 0.5, 3.0];
        for row in m.iter_mut() {
            for c in 0..3 {
                row[c] /= z[c];
            }
        }
        let p = polar_orthogonal(&m);
        for i in 0..3 {
            for j in 0..3 {
                assert!((p[i][j] - r[i][j]).abs() < 1e-12);
            }
        }
    }
}
