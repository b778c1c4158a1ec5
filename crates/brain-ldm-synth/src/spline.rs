//! Smooth random fields: cubic B-splines on a coarse control grid, evaluated on a
//! regular node grid by three separable 1D passes.

/// The cubic B-spline weights of fractional position `f` for controls `i..i + 4`.
#[inline]
fn weights(f: f32) -> [f32; 4] {
    let f2 = f * f;
    let f3 = f2 * f;
    [
        (1.0 - f).powi(3) / 6.0,
        (3.0 * f3 - 6.0 * f2 + 4.0) / 6.0,
        (-3.0 * f3 + 3.0 * f2 + 3.0 * f + 1.0) / 6.0,
        f3 / 6.0,
    ]
}

/// The number of controls along an axis of `nodes` nodes spaced `ratio` control spacings
/// apart (control `j` sits at position `j − 1`).
pub(crate) fn control_count(nodes: usize, ratio: f32) -> usize {
    ((nodes.saturating_sub(1)) as f32 * ratio).floor() as usize + 4
}

/// Evaluates a `C`-component spline with controls `ctrl` (shape `cdims`, x fastest) at
/// nodes `n · ratio` (in control spacings) for the node grid `ndims`.
pub(crate) fn evaluate<const C: usize>(
    ctrl: &[[f32; C]],
    cdims: [usize; 3],
    ndims: [usize; 3],
    ratio: f32,
) -> Vec<[f32; C]> {
    // Per axis: for each node, the first control and its four weights.
    let basis = |n: usize| -> Vec<(usize, [f32; 4])> {
        (0..n)
            .map(|i| {
                let t = i as f32 * ratio;
                let b = t.floor();
                (b as usize, weights(t - b))
            })
            .collect()
    };
    let (bx, by, bz) = (basis(ndims[0]), basis(ndims[1]), basis(ndims[2]));
    // Along x: (nx, cy, cz).
    let mut a = vec![[0f32; C]; ndims[0] * cdims[1] * cdims[2]];
    for k in 0..cdims[2] {
        for j in 0..cdims[1] {
            for (i, &(s, w)) in bx.iter().enumerate() {
                let out = &mut a[i + ndims[0] * (j + cdims[1] * k)];
                for (t, &wt) in w.iter().enumerate() {
                    let v = &ctrl[(s + t) + cdims[0] * (j + cdims[1] * k)];
                    for c in 0..C {
                        out[c] += wt * v[c];
                    }
                }
            }
        }
    }
    // Along y: (nx, ny, cz).
    let mut b = vec![[0f32; C]; ndims[0] * ndims[1] * cdims[2]];
    for k in 0..cdims[2] {
        for (j, &(s, w)) in by.iter().enumerate() {
            for i in 0..ndims[0] {
                let out = &mut b[i + ndims[0] * (j + ndims[1] * k)];
                for (t, &wt) in w.iter().enumerate() {
                    let v = &a[i + ndims[0] * ((s + t) + cdims[1] * k)];
                    for c in 0..C {
                        out[c] += wt * v[c];
                    }
                }
            }
        }
    }
    // Along z: (nx, ny, nz).
    let mut out = vec![[0f32; C]; ndims[0] * ndims[1] * ndims[2]];
    for (k, &(s, w)) in bz.iter().enumerate() {
        for j in 0..ndims[1] {
            for i in 0..ndims[0] {
                let o = &mut out[i + ndims[0] * (j + ndims[1] * k)];
                for (t, &wt) in w.iter().enumerate() {
                    let v = &b[i + ndims[0] * (j + ndims[1] * (s + t))];
                    for c in 0..C {
                        o[c] += wt * v[c];
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_controls_give_a_constant_field() {
        let ratio = 0.25;
        let nd = [9, 5, 3];
        let cd = [
            control_count(9, ratio),
            control_count(5, ratio),
            control_count(3, ratio),
        ];
        let ctrl = vec![[2.0f32]; cd[0] * cd[1] * cd[2]];
        let f = evaluate(&ctrl, cd, nd, ratio);
        assert!(f.iter().all(|v| (v[0] - 2.0).abs() < 1e-5));
    }
}
