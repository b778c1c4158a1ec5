//! Separable valid-mode filtering fused with the SSIM formula.
//!
//! MONAI convolves `x`, `y`, `x²`, `y²` and `x·y` with a full 2D/3D kernel (`F.conv3d`,
//! no padding) and then evaluates the SSIM and contrast-sensitivity maps voxel by voxel.
//! Both of its kernels are outer products of 1D kernels, so the same five maps come from
//! three 1D passes. Here each output plane is one rayon task: the depth pass combines the
//! `kd` input planes into five planes, then each output row gets its height pass, its
//! width pass and the formula, and the maps are summed without ever being stored.
//!
//! Everything after reading the f32 voxels is f64, with the 1D kernels normalised in f64.
//! That matters: `σxy = E[xy] − μxμy` cancels, so a kernel whose weights sum to `1 + δ`
//! shifts σxy by about `−δ·μxμy`. MONAI's f32 Gaussian 11³ kernel sums to `1 − 1.4·10⁻⁷`,
//! which moves the SSIM of two unrelated noise volumes (≈ 0.007) by ≈ 10⁻⁴ relative; the
//! values here are those of the exactly normalised kernel.

use rayon::prelude::*;

use crate::grid::Grid;

/// A separable window: one 1D kernel per axis `[d, h, w]` (the depth kernel is `[1.0]`
/// for 2D images).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Window {
    /// The 1D kernels along `d`, `h`, `w`.
    pub(crate) taps: [Vec<f64>; 3],
}

impl Window {
    /// The kernel lengths `[kd, kh, kw]`.
    pub(crate) fn sizes(&self) -> [usize; 3] {
        [self.taps[0].len(), self.taps[1].len(), self.taps[2].len()]
    }
}

/// MONAI's 1D Gaussian: `exp(−(t/σ)²/2)` at `t = (1−k)/2, …, (k−1)/2`, normalised to sum 1.
pub(crate) fn gaussian_1d(size: usize, sigma: f64) -> Vec<f64> {
    let half = (size as f64 - 1.0) / 2.0;
    let g: Vec<f64> = (0..size)
        .map(|i| {
            let t = (i as f64 - half) / sigma;
            (-0.5 * t * t).exp()
        })
        .collect();
    let sum: f64 = g.iter().sum();
    g.iter().map(|v| v / sum).collect()
}

/// A 1D box kernel of `size` taps `1/size` (MONAI's uniform kernel, `ones / prod(size)`,
/// factorised per axis).
pub(crate) fn uniform_1d(size: usize) -> Vec<f64> {
    vec![1.0 / size as f64; size]
}

/// Sums of the SSIM map and of the contrast-sensitivity map over the valid region, and
/// the number of voxels in it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct SsimSums {
    /// Σ SSIM(voxel).
    pub(crate) ssim: f64,
    /// Σ CS(voxel).
    pub(crate) cs: f64,
    /// Voxels in the valid region.
    pub(crate) count: usize,
}

impl SsimSums {
    /// Mean SSIM over the valid region.
    pub(crate) fn ssim_mean(&self) -> f64 {
        self.ssim / self.count as f64
    }

    /// Mean contrast sensitivity over the valid region.
    pub(crate) fn cs_mean(&self) -> f64 {
        self.cs / self.count as f64
    }
}

/// Per-thread buffers for [`ssim_sums`].
struct Scratch {
    /// Depth-filtered planes of x, y, x², y², x·y (`5·h·w`).
    planes: Vec<f64>,
    /// Height-filtered rows (`5·w`).
    rows: Vec<f64>,
    /// Width-filtered rows (`5·ow`).
    out: Vec<f64>,
}

/// Length of the column blocks of the depth pass (five f64 accumulators of this length
/// stay in L1/L2 while `kd` planes stream through).
const BLOCK: usize = 1024;

/// Valid-mode SSIM and CS sums of `x` and `y` (same dims, each axis ≥ its window size).
///
/// `c1 = (k1·L)²`, `c2 = (k2·L)²`. Per voxel, with μ and σ from the filtered maps:
/// `cs = (2σxy + c2)/(σx² + σy² + c2)`, `ssim = (2μxμy + c1)/(μx² + μy² + c1)·cs`.
pub(crate) fn ssim_sums(x: &Grid<'_>, y: &Grid<'_>, win: &Window, c1: f64, c2: f64) -> SsimSums {
    let [d, h, w] = x.dims;
    let [kd, kh, kw] = win.sizes();
    let (od, oh, ow) = (d + 1 - kd, h + 1 - kh, w + 1 - kw);
    let plane = h * w;
    let (xs, ys) = (&x.data[..], &y.data[..]);
    let [td, th, tw] = &win.taps;

    let (ssim, cs) = (0..od)
        .into_par_iter()
        .map_init(
            || Scratch {
                planes: vec![0.0; 5 * plane],
                rows: vec![0.0; 5 * w],
                out: vec![0.0; 5 * ow],
            },
            |s, z| {
                depth_pass(xs, ys, z, plane, td, &mut s.planes);
                let mut acc_ssim = 0.0f64;
                let mut acc_cs = 0.0f64;
                for r in 0..oh {
                    // Height pass: rows r..r+kh of each of the five planes.
                    for (q, row) in s.rows.chunks_exact_mut(w).enumerate() {
                        let src = &s.planes[q * plane..(q + 1) * plane];
                        row.fill(0.0);
                        for (t, &g) in th.iter().enumerate() {
                            let line = &src[(r + t) * w..(r + t + 1) * w];
                            row.iter_mut().zip(line).for_each(|(o, v)| *o += g * v);
                        }
                    }
                    // Width pass.
                    for (q, o) in s.out.chunks_exact_mut(ow).enumerate() {
                        let row = &s.rows[q * w..(q + 1) * w];
                        o.fill(0.0);
                        for (t, &g) in tw.iter().enumerate() {
                            o.iter_mut()
                                .zip(&row[t..t + ow])
                                .for_each(|(o, v)| *o += g * v);
                        }
                    }
                    let (ss, cc) = formula_row(&s.out, ow, c1, c2);
                    acc_ssim += ss;
                    acc_cs += cc;
                }
                (acc_ssim, acc_cs)
            },
        )
        .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    SsimSums {
        ssim,
        cs,
        count: od * oh * ow,
    }
}

/// Depth pass for output plane `z`: `planes[q] = Σ_t td[t] · f_q(plane z+t)` for
/// `f = (x, y, x², y², x·y)`, in column blocks of [`BLOCK`].
fn depth_pass(xs: &[f32], ys: &[f32], z: usize, plane: usize, td: &[f64], planes: &mut [f64]) {
    let (mx, rest) = planes.split_at_mut(plane);
    let (my, rest) = rest.split_at_mut(plane);
    let (mxx, rest) = rest.split_at_mut(plane);
    let (myy, mxy) = rest.split_at_mut(plane);
    let mut start = 0;
    while start < plane {
        let end = (start + BLOCK).min(plane);
        let n = end - start;
        let (ax, ay) = (&mut mx[start..end], &mut my[start..end]);
        let (axx, ayy, axy) = (
            &mut mxx[start..end],
            &mut myy[start..end],
            &mut mxy[start..end],
        );
        for (t, &g) in td.iter().enumerate() {
            let off = (z + t) * plane + start;
            let (px, py) = (&xs[off..off + n], &ys[off..off + n]);
            if t == 0 {
                for i in 0..n {
                    let (a, b) = (f64::from(px[i]), f64::from(py[i]));
                    ax[i] = g * a;
                    ay[i] = g * b;
                    axx[i] = g * (a * a);
                    ayy[i] = g * (b * b);
                    axy[i] = g * (a * b);
                }
            } else {
                for i in 0..n {
                    let (a, b) = (f64::from(px[i]), f64::from(py[i]));
                    ax[i] += g * a;
                    ay[i] += g * b;
                    axx[i] += g * (a * a);
                    ayy[i] += g * (b * b);
                    axy[i] += g * (a * b);
                }
            }
        }
        start = end;
    }
}

/// Sums of SSIM and CS over one output row; `maps` holds the five filtered rows
/// (μx, μy, E[x²], E[y²], E[xy]) of length `n` each.
fn formula_row(maps: &[f64], n: usize, c1: f64, c2: f64) -> (f64, f64) {
    let (mx, rest) = maps.split_at(n);
    let (my, rest) = rest.split_at(n);
    let (mxx, rest) = rest.split_at(n);
    let (myy, mxy) = rest.split_at(n);
    // Four independent f64 lanes so the sums need not wait on one another.
    let mut ss = [0.0f64; 4];
    let mut cc = [0.0f64; 4];
    for i in 0..n {
        let (ux, uy) = (mx[i], my[i]);
        let sx = mxx[i] - ux * ux;
        let sy = myy[i] - uy * uy;
        let sxy = mxy[i] - ux * uy;
        let cs = (2.0 * sxy + c2) / (sx + sy + c2);
        let ssim = (2.0 * ux * uy + c1) / (ux * ux + uy * uy + c1) * cs;
        ss[i % 4] += ssim;
        cc[i % 4] += cs;
    }
    (ss.iter().sum(), cc.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_matches_monai_formula() {
        // MONAI: dist = arange((1-k)/2, (1+k)/2); exp(-(dist/σ)²/2) / sum. For k = 4,
        // σ = 1.5: t = ±0.5, ±1.5 → weights ∝ exp(-1/18), exp(-1/2).
        let g = gaussian_1d(4, 1.5);
        let (a, b) = ((-1.0f64 / 18.0).exp(), (-0.5f64).exp());
        let s = 2.0 * (a + b);
        assert!((g[0] - b / s).abs() < 1e-15);
        assert!((g[1] - a / s).abs() < 1e-15);
        assert_eq!(g[0], g[3]);
        assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-15);
    }
}
