//! Symmetric eigendecomposition in f64: Householder reduction to tridiagonal form and the
//! implicit QL algorithm (the EISPACK `tred2`/`tql2` pair, in the form published with
//! JAMA). Backward stable; O(n³).
//!
//! The matrix is kept column-major so every inner loop runs over contiguous memory:
//! `v[c * n + r]` is row `r`, column `c`.

use crate::error::{Error, Result};

/// Eigenvalues (unsorted) and, when asked for, eigenvectors of a symmetric matrix.
#[derive(Debug, Clone)]
pub(crate) struct SymmetricEigen {
    /// The eigenvalues.
    pub(crate) values: Vec<f64>,
    /// Column-major `n×n`: column `j` is the unit eigenvector of `values[j]`. Empty when
    /// vectors were not requested.
    pub(crate) vectors: Vec<f64>,
}

/// Decomposes the symmetric `n×n` matrix `a` (row-major; only its symmetric part
/// matters, as it is read through both triangles).
///
/// # Errors
/// [`Error::Numerical`] if the QL iteration does not converge (30 sweeps per eigenvalue).
pub(crate) fn symmetric_eigen(a: &[f64], n: usize, vectors: bool) -> Result<SymmetricEigen> {
    // Row-major symmetric == column-major symmetric; symmetrise to be safe.
    let mut v = vec![0.0; n * n];
    for r in 0..n {
        for c in 0..n {
            v[c * n + r] = 0.5 * (a[r * n + c] + a[c * n + r]);
        }
    }
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    if n == 0 {
        return Ok(SymmetricEigen {
            values: d,
            vectors: Vec::new(),
        });
    }
    tred2(&mut v, &mut d, &mut e, n, vectors);
    tql2(&mut v, &mut d, &mut e, n, vectors)?;
    Ok(SymmetricEigen {
        values: d,
        vectors: if vectors { v } else { Vec::new() },
    })
}

/// Householder tridiagonalisation: on return `d` is the diagonal, `e[1..]` the
/// sub-diagonal, and (if `vectors`) `v` the orthogonal transformation.
fn tred2(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize, vectors: bool) {
    // at(r, c) = v[c * n + r]
    for j in 0..n {
        d[j] = v[j * n + (n - 1)];
    }
    for i in (1..n).rev() {
        let scale: f64 = d[..i].iter().map(|x| x.abs()).sum();
        let mut h = 0.0;
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[j * n + (i - 1)];
                v[j * n + i] = 0.0;
                v[i * n + j] = 0.0;
            }
        } else {
            for dk in &mut d[..i] {
                *dk /= scale;
                h += *dk * *dk;
            }
            let f = d[i - 1];
            let mut g = h.sqrt();
            if f > 0.0 {
                g = -g;
            }
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            e[..i].fill(0.0);
            for j in 0..i {
                let f = d[j];
                v[i * n + j] = f; // at(j, i)
                let col = &v[j * n..j * n + i]; // at(0..i, j)
                let mut g = e[j] + col[j] * f;
                for k in j + 1..i {
                    g += col[k] * d[k];
                    e[k] += col[k] * f;
                }
                e[j] = g;
            }
            let mut f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                let (f, g) = (d[j], e[j]);
                let col = &mut v[j * n..j * n + i];
                for k in j..i {
                    col[k] -= f * e[k] + g * d[k];
                }
                d[j] = col[i - 1];
                v[j * n + i] = 0.0; // at(i, j)
            }
        }
        d[i] = h;
    }
    if !vectors {
        for (i, di) in d.iter_mut().enumerate() {
            *di = v[i * n + i];
        }
        e[0] = 0.0;
        return;
    }
    // Accumulate the transformations.
    for i in 0..n - 1 {
        v[i * n + (n - 1)] = v[i * n + i]; // at(n-1, i) = at(i, i)
        v[i * n + i] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = v[(i + 1) * n + k] / h;
            }
            for j in 0..=i {
                let g: f64 = (0..=i).map(|k| v[(i + 1) * n + k] * v[j * n + k]).sum();
                let col = &mut v[j * n..j * n + i + 1];
                for (k, c) in col.iter_mut().enumerate() {
                    *c -= g * d[k];
                }
            }
        }
        for k in 0..=i {
            v[(i + 1) * n + k] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = v[j * n + (n - 1)];
        v[j * n + (n - 1)] = 0.0;
    }
    v[(n - 1) * n + (n - 1)] = 1.0;
    e[0] = 0.0;
}

/// Implicit QL on the tridiagonal `(d, e)`; on return `d` holds the eigenvalues and (if
/// `vectors`) `v` the eigenvectors.
fn tql2(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize, vectors: bool) -> Result<()> {
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0f64;
    let mut tst1 = 0.0f64;
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            let mut iter = 0;
            loop {
                iter += 1;
                if iter > 30 {
                    return Err(Error::Numerical {
                        what: "symmetric eigendecomposition (QL)",
                        detail: format!("eigenvalue {l} of {n} did not converge in 30 iterations"),
                    });
                }
                let g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let h = g - d[l];
                for di in &mut d[l + 2..n] {
                    *di -= h;
                }
                f += h;
                p = d[m];
                let (mut c, mut c2, mut c3) = (1.0f64, 1.0f64, 1.0f64);
                let el1 = e[l + 1];
                let (mut s, mut s2) = (0.0f64, 0.0f64);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    let g = c * e[i];
                    let h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    if vectors {
                        let (lo, hi) = v.split_at_mut((i + 1) * n);
                        let col_i = &mut lo[i * n..];
                        let col_i1 = &mut hi[..n];
                        for (a, b) in col_i.iter_mut().zip(col_i1.iter_mut()) {
                            let h = *b;
                            *b = s * *a + c * h;
                            *a = c * *a - s * h;
                        }
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic symmetric test matrix.
    fn test_matrix(n: usize) -> Vec<f64> {
        let mut a = vec![0.0; n * n];
        for r in 0..n {
            for c in 0..=r {
                let x = (((r * 31 + c * 17) % 23) as f64 - 11.0) / 7.0;
                a[r * n + c] = x;
                a[c * n + r] = x;
            }
        }
        a
    }

    #[test]
    fn decomposition_reconstructs_the_matrix() {
        for n in [1, 2, 5, 17] {
            let a = test_matrix(n);
            let eig = symmetric_eigen(&a, n, true).unwrap();
            let vals = symmetric_eigen(&a, n, false).unwrap().values;
            // A·v_j = λ_j·v_j for every column, and ‖v_j‖ = 1.
            for j in 0..n {
                let vj = &eig.vectors[j * n..(j + 1) * n];
                let norm: f64 = vj.iter().map(|x| x * x).sum();
                assert!((norm - 1.0).abs() < 1e-12);
                for r in 0..n {
                    let av: f64 = (0..n).map(|c| a[r * n + c] * vj[c]).sum();
                    assert!((av - eig.values[j] * vj[r]).abs() < 1e-10, "n={n} j={j}");
                }
            }
            // Values-only run gives the same spectrum.
            let mut x = eig.values.clone();
            let mut y = vals;
            x.sort_by(f64::total_cmp);
            y.sort_by(f64::total_cmp);
            for (p, q) in x.iter().zip(&y) {
                assert!((p - q).abs() < 1e-10);
            }
        }
    }
}
