//! Making one subject: covariates, then anatomy by warping the template to match them,
//! then the T1 image from the warped tissue maps.
//!
//! The backward map from an output voxel to the template is one composition evaluated
//! per voxel: a low-frequency random deformation (B-spline, 32 mm controls), the inverse
//! of the head scale and rigid pose about the brain's centre, then the ventricle flow.
//! Cortical atrophy moves GM into CSF where the atrophy score is high; its threshold is
//! chosen so the GM + WM label count equals the drawn brain volume.

use ndarray::Array3;
use rand::Rng;
use rayon::prelude::*;

use crate::covariates::{draw_covariates, Covariates};
use crate::error::Result;
use crate::grid::{flat, fortran_array, VoxelSize, FOV_CORNER, FOV_MM};
use crate::labels::{classify, label_volumes, Volumes, VENTRICLES};
use crate::ops::{separable_filter, trilinear};
use crate::rng::{hash_normal, key, normal, stream, truncated, Stream};
use crate::spline::{control_count, evaluate};
use crate::template::{
    atrophied, atrophy_fraction, label_of, template, Displacement, Template, ATROPHY_RAMP, CH_G,
    CH_M, CH_S, CH_V, CH_W, TEMPLATE_ORIGIN,
};

/// World coordinates of the centre that head scaling and rotation act about (the
/// template brain's bounding-box centre).
const BRAIN_CENTRE: [f32; 3] = [0.0, -17.0, 5.0];
/// Spacing of the nodes on which the deformation and bias field are evaluated, in mm.
const NODE_MM: usize = 4;
/// Control spacing and deviation (mm) of the random deformation.
const DEFORM: (f32, f64) = (32.0, 2.5);
/// Control spacing (mm) and deviation (log scale) of the bias field.
const BIAS: (f32, f64) = (64.0, 0.08);
/// Deviations of the rigid pose: rotation (degrees) and translation (mm), truncated at 2σ.
const POSE: (f64, f64) = (1.5, 1.5);
/// Mean tissue intensities (CSF, GM, WM) of the template, and their per-subject relative
/// deviations (truncated at 2σ).
const INTENSITY: [(f64, f64); 3] = [(99.0, 0.10), (166.0, 0.04), (222.0, 0.03)];
/// Range of the noise deviation relative to the WM intensity.
const NOISE: (f64, f64) = (0.01, 0.03);
/// Relative tolerance of the ventricular volume search.
const VENT_TOL: f64 = 0.005;

/// What a cohort is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SynthConfig {
    /// The cohort's seed; subject `i` is a pure function of `(seed, i)`.
    pub seed: u64,
    /// The voxel size of the images.
    pub voxel_size: VoxelSize,
}

/// One generated subject.
#[derive(Debug, Clone)]
pub struct Subject {
    /// Its index in the cohort.
    pub index: u64,
    /// What was drawn for it.
    pub covariates: Covariates,
    /// The T1 image in [0, 1], shape [`VoxelSize::shape`], indexed `[i, j, k]` (RAS).
    pub t1: Array3<f32>,
    /// The labels (see [`crate::labels`]), same shape.
    pub labels: Array3<u8>,
    /// The voxel-to-world affine of both images (MNI152 space, mm).
    pub affine: [[f64; 4]; 4],
    /// Volumes counted from `labels`, in mm³.
    pub volumes: Volumes,
}

/// Generates subject `index` of the cohort `config`.
///
/// The same `(seed, index, voxel size)` gives the same subject, bit for bit, on any
/// number of threads.
///
/// # Errors
/// [`crate::SynthError::Template`] if the embedded template cannot be decoded.
///
/// ```
/// use brain_ldm_synth::{generate_subject, SynthConfig, VoxelSize};
/// let s = generate_subject(&SynthConfig { seed: 0, voxel_size: VoxelSize::Mm4 }, 0)?;
/// assert_eq!(s.t1.shape(), &[40, 56, 40]);
/// assert!(s.volumes.ventricular_volume > 0.0);
/// # Ok::<(), brain_ldm_synth::SynthError>(())
/// ```
pub fn generate_subject(config: &SynthConfig, index: u64) -> Result<Subject> {
    let tpl = template()?;
    let covariates = draw_covariates(config.seed, index)?;
    let vs = config.voxel_size;
    let mut rng = stream(config.seed, index, Stream::Anatomy);
    let geo = Geometry::draw(&mut rng, vs, covariates.head_scale as f32);
    let look = Look::draw(&mut rng, &geo);
    let lvl = &tpl.levels[vs.level()];
    let h3 = vs.voxel_volume() as f64;

    // Ventricles: find the flow time whose ventricle count matches the drawn volume.
    let roi = geo.ventricle_region(tpl);
    let count = |alpha: f32| -> usize {
        let disp = tpl.flow.displacement(alpha);
        roi.par_chunks(4096)
            .map(|chunk| {
                chunk
                    .iter()
                    .filter(|(_, p)| {
                        let s = lvl.sample(tpl.crop_lo, warp(&disp, *p));
                        label_of(&s, f32::INFINITY) == VENTRICLES
                    })
                    .count()
            })
            .sum()
    };
    let expected0 = tpl.stats.ventricles * (covariates.head_scale.powi(3)) / h3;
    let alpha = solve_flow_time(tpl, covariates.ventricular_volume / h3, expected0, count);
    let disp = tpl.flow.displacement(alpha);

    // Atrophy: per voxel, the threshold below which it stops being brain.
    let dims = geo.dims;
    let plane = dims[0] * dims[1];
    let parts: Vec<(usize, Vec<f32>)> = (0..dims[2])
        .into_par_iter()
        .map(|k| {
            let mut fixed = 0usize;
            let mut crit = Vec::new();
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let s = lvl.sample(tpl.crop_lo, warp(&disp, geo.pre(i, j, k)));
                    match critical_threshold(&s) {
                        Critical::Never => {}
                        Critical::Always => fixed += 1,
                        Critical::Below(t) => crit.push(t),
                    }
                }
            }
            (fixed, crit)
        })
        .collect();
    let fixed: usize = parts.iter().map(|p| p.0).sum();
    let mut crit: Vec<f32> = parts.into_iter().flat_map(|p| p.1).collect();
    let target = (covariates.brain_volume / h3).round() as i64 - fixed as i64;
    let tau = if target <= 0 {
        f32::NEG_INFINITY
    } else if target as usize >= crit.len() {
        f32::INFINITY
    } else {
        let k = target as usize;
        let (_, &mut hi, _) = crit.select_nth_unstable_by(k, f32::total_cmp);
        let lo = crit[..k].iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        0.5 * (lo + hi)
    };

    // Tissue maps, labels and the noise-free image.
    let mut t1 = vec![0f32; plane * dims[2]];
    let mut labels = vec![0u8; plane * dims[2]];
    t1.par_chunks_mut(plane)
        .zip(labels.par_chunks_mut(plane))
        .enumerate()
        .for_each(|(k, (ts, ls))| {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let s = lvl.sample(tpl.crop_lo, warp(&disp, geo.pre(i, j, k)));
                    let (c, g) = atrophied(&s, tau);
                    let o = i + dims[0] * j;
                    ls[o] = classify(s[CH_M], c, g, s[CH_W], s[CH_V]);
                    let v = look.mu[0] * (c + s[CH_V]) + look.mu[1] * g + look.mu[2] * s[CH_W];
                    ts[o] = v * look.bias_at(&geo, geo.world(i, j, k));
                }
            }
        });
    look.finish(&mut t1, dims, key(config.seed, index, Stream::Noise));
    let volumes = label_volumes(labels.iter(), h3);
    Ok(Subject {
        index,
        covariates,
        t1: fortran_array(dims, t1),
        labels: fortran_array(dims, labels),
        affine: vs.affine(),
        volumes,
    })
}

/// Applies the ventricle flow to template coordinates `p`.
#[inline]
fn warp(disp: &Displacement, p: [f32; 3]) -> [f32; 3] {
    if !disp.contains(p) {
        return p;
    }
    let u = disp.at(p);
    [p[0] + u[0], p[1] + u[1], p[2] + u[2]]
}

/// How a voxel's brain label depends on the atrophy threshold τ.
enum Critical {
    /// Not brain at any τ.
    Never,
    /// Brain at every τ.
    Always,
    /// Brain exactly when τ is above this value.
    Below(f32),
}

/// A voxel is brain when max(GM, WM) > CSF after a fraction `a` of its GM has become
/// CSF, i.e. when `a < a*` with `a* = max((g − c) / 2g, (w − c) / g)`; `a` falls as τ
/// rises, so it is brain exactly when τ > score − ramp · a*.
fn critical_threshold(s: &[f32; 5]) -> Critical {
    let base = label_of(s, f32::INFINITY);
    let brain = base == crate::labels::GM || base == crate::labels::WM;
    if !brain {
        return Critical::Never;
    }
    let g = s[CH_G];
    let c = (s[CH_M] - g - s[CH_W] - s[CH_V]).max(0.0);
    if s[CH_V] > 0.0 || g <= 0.0 {
        return Critical::Always;
    }
    let a_star = ((g - c) / (2.0 * g)).max((s[CH_W] - c) / g);
    if a_star > 1.0 {
        return Critical::Always;
    }
    let t = s[CH_S] - ATROPHY_RAMP * a_star;
    // Guard against rounding: the label at the threshold itself must agree.
    if atrophy_fraction(s[CH_S], t) >= a_star {
        Critical::Below(t)
    } else {
        Critical::Below(t - t.abs() * f32::EPSILON - f32::MIN_POSITIVE)
    }
}

/// Finds the flow time whose ventricle count is `target` voxels; `expected0` is the
/// count expected at time 0. Uses the template's volume-against-time table as the
/// model and corrects by the measured count (a Newton step in log volume), bisecting
/// once the root is bracketed and a step leaves the bracket.
fn solve_flow_time(
    tpl: &Template,
    target: f64,
    expected0: f64,
    count: impl Fn(f32) -> usize,
) -> f32 {
    let table = &tpl.vent_table;
    let fwd = |a: f32| interp(table.iter().map(|&(t, y)| (t, y)), a);
    let inv = |y: f32| interp(table.iter().map(|&(t, y)| (y, t)), y);
    let tol = (VENT_TOL * target).max(1.0);
    let mut alpha = inv((target / expected0.max(0.5)).ln() as f32);
    let mut best = (f64::INFINITY, alpha);
    let (mut lo, mut hi) = (f32::NEG_INFINITY, f32::INFINITY);
    for _ in 0..24 {
        let n = count(alpha) as f64;
        let err = n - target;
        if err.abs() < best.0 {
            best = (err.abs(), alpha);
        }
        if err.abs() <= tol {
            break;
        }
        if err < 0.0 {
            lo = lo.max(alpha);
        } else {
            hi = hi.min(alpha);
        }
        let mut next = inv(fwd(alpha) + (target / n.max(0.5)).ln() as f32);
        if lo.is_finite() && hi.is_finite() && !(next > lo && next < hi) {
            next = 0.5 * (lo + hi);
        }
        if (next - alpha).abs() < 1e-4 {
            break;
        }
        alpha = next;
    }
    best.1
}

/// Piecewise-linear interpolation through increasing `(x, y)` points, extrapolating the
/// end segments.
fn interp(points: impl Iterator<Item = (f32, f32)>, x: f32) -> f32 {
    let pts: Vec<(f32, f32)> = points.collect();
    let n = pts.len();
    let seg = pts
        .windows(2)
        .position(|w| x <= w[1].0)
        .unwrap_or(n.saturating_sub(2));
    let (a, b) = (pts[seg], pts[(seg + 1).min(n - 1)]);
    if b.0 == a.0 {
        return a.1;
    }
    a.1 + (x - a.0) * (b.1 - a.1) / (b.0 - a.0)
}

/// The subject's geometry: output grid, random deformation, head scale and pose.
struct Geometry {
    dims: [usize; 3],
    step: f32,
    first: [f32; 3],
    /// Node grid of the deformation and bias field.
    ndims: [usize; 3],
    deform: Vec<[f32; 3]>,
    /// Transposed rotation, inverse scale and translation of the pose.
    rt: [[f32; 3]; 3],
    rot: [[f32; 3]; 3],
    scale: f32,
    shift: [f32; 3],
}

impl Geometry {
    fn draw(rng: &mut impl Rng, vs: VoxelSize, scale: f32) -> Self {
        let ang: [f64; 3] = std::array::from_fn(|_| {
            truncated(rng, 0.0, POSE.0, -2.0 * POSE.0, 2.0 * POSE.0).to_radians()
        });
        let shift: [f32; 3] = std::array::from_fn(|_| {
            truncated(rng, 0.0, POSE.1, -2.0 * POSE.1, 2.0 * POSE.1) as f32
        });
        let rot = rotation(ang);
        let rt = std::array::from_fn(|r| std::array::from_fn(|c| rot[c][r]));
        let ndims = node_dims();
        let deform = random_field::<3>(rng, ndims, DEFORM.0, DEFORM.1);
        let f = vs.first_centre();
        Geometry {
            dims: vs.shape(),
            step: vs.mm() as f32,
            first: [f[0] as f32, f[1] as f32, f[2] as f32],
            ndims,
            deform,
            rt,
            rot,
            scale,
            shift,
        }
    }

    /// World coordinates of the centre of output voxel (i, j, k).
    #[inline]
    fn world(&self, i: usize, j: usize, k: usize) -> [f32; 3] {
        [
            self.first[0] + self.step * i as f32,
            self.first[1] + self.step * j as f32,
            self.first[2] + self.step * k as f32,
        ]
    }

    /// Template index coordinates that output voxel (i, j, k) comes from, before the
    /// ventricle flow.
    #[inline]
    fn pre(&self, i: usize, j: usize, k: usize) -> [f32; 3] {
        let x = self.world(i, j, k);
        let d = trilinear(&self.deform, self.ndims, node_coords(x));
        let y: [f32; 3] = std::array::from_fn(|a| x[a] + d[a] - BRAIN_CENTRE[a] - self.shift[a]);
        std::array::from_fn(|a| {
            let r = self.rt[a];
            BRAIN_CENTRE[a] + (r[0] * y[0] + r[1] * y[1] + r[2] * y[2]) / self.scale
                - TEMPLATE_ORIGIN[a] as f32
        })
    }

    /// The output voxels (flat index, template coordinates before the flow) that map
    /// into the flow's grid: the only ones whose ventricle label can change.
    fn ventricle_region(&self, tpl: &Template) -> Vec<(usize, [f32; 3])> {
        let (blo, bhi) = tpl.flow.displacement(0.0).bounds();
        // Output box: forward-map the grid's corners, pad by the deformation.
        let dmax = self
            .deform
            .iter()
            .map(|d| d.iter().fold(0f32, |m, x| m.max(x.abs())))
            .fold(0f32, f32::max);
        let mut olo = [f32::INFINITY; 3];
        let mut ohi = [f32::NEG_INFINITY; 3];
        for corner in 0..8 {
            let p: [f32; 3] = std::array::from_fn(|a| {
                let v = if corner >> a & 1 == 0 { blo[a] } else { bhi[a] };
                v + TEMPLATE_ORIGIN[a] as f32 - BRAIN_CENTRE[a]
            });
            for a in 0..3 {
                let r = self.rot[a];
                let x = BRAIN_CENTRE[a]
                    + self.shift[a]
                    + self.scale * (r[0] * p[0] + r[1] * p[1] + r[2] * p[2]);
                olo[a] = olo[a].min(x);
                ohi[a] = ohi[a].max(x);
            }
        }
        let range = |a: usize| {
            let pad = dmax + 2.0 * self.step;
            let lo = ((olo[a] - pad - self.first[a]) / self.step)
                .floor()
                .max(0.0) as usize;
            let hi = (((ohi[a] + pad - self.first[a]) / self.step).ceil().max(0.0) as usize)
                .min(self.dims[a] - 1);
            lo..=hi
        };
        let (rx, ry, rz) = (range(0), range(1), range(2));
        let dims = self.dims;
        let parts: Vec<Vec<(usize, [f32; 3])>> = rz
            .into_par_iter()
            .map(|k| {
                let mut v = Vec::new();
                for j in ry.clone() {
                    for i in rx.clone() {
                        let p = self.pre(i, j, k);
                        if (0..3).all(|a| p[a] >= blo[a] && p[a] <= bhi[a]) {
                            v.push((flat(dims, i, j, k), p));
                        }
                    }
                }
                v
            })
            .collect();
        parts.into_iter().flatten().collect()
    }
}

/// Node coordinates of world point `x` on the 4 mm node grid.
#[inline]
fn node_coords(x: [f32; 3]) -> [f32; 3] {
    std::array::from_fn(|a| (x[a] - FOV_CORNER[a] as f32) / NODE_MM as f32)
}

/// The node grid covering the field of view at [`NODE_MM`] spacing.
fn node_dims() -> [usize; 3] {
    std::array::from_fn(|a| FOV_MM[a] / NODE_MM + 1)
}

/// A random B-spline field on the node grid: controls `spacing` mm apart, each
/// component drawn N(0, sd²).
fn random_field<const C: usize>(
    rng: &mut impl Rng,
    ndims: [usize; 3],
    spacing: f32,
    sd: f64,
) -> Vec<[f32; C]> {
    let ratio = NODE_MM as f32 / spacing;
    let cdims: [usize; 3] = std::array::from_fn(|a| control_count(ndims[a], ratio));
    let ctrl: Vec<[f32; C]> = (0..cdims[0] * cdims[1] * cdims[2])
        .map(|_| std::array::from_fn(|_| (sd * normal(rng)) as f32))
        .collect();
    evaluate(&ctrl, cdims, ndims, ratio)
}

/// Rotation matrix Rz · Ry · Rx for angles (x, y, z) in radians.
fn rotation(a: [f64; 3]) -> [[f32; 3]; 3] {
    let (sx, cx) = a[0].sin_cos();
    let (sy, cy) = a[1].sin_cos();
    let (sz, cz) = a[2].sin_cos();
    let m = [
        [cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx],
        [sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx],
        [-sy, cy * sx, cy * cx],
    ];
    m.map(|r| r.map(|x| x as f32))
}

/// The subject's image appearance: tissue intensities, bias field and noise level.
struct Look {
    /// CSF, GM, WM intensities.
    mu: [f32; 3],
    /// Log bias on the node grid.
    log_bias: Vec<[f32; 1]>,
    /// Noise deviation.
    sigma: f32,
}

impl Look {
    fn draw(rng: &mut impl Rng, geo: &Geometry) -> Self {
        let mu = INTENSITY
            .map(|(m, sd)| (m * (1.0 + truncated(rng, 0.0, sd, -2.0 * sd, 2.0 * sd))) as f32);
        let log_bias = random_field::<1>(rng, geo.ndims, BIAS.0, BIAS.1);
        let rel = NOISE.0 + (NOISE.1 - NOISE.0) * rng.random::<f64>();
        Look {
            mu,
            log_bias,
            sigma: rel as f32 * mu[2],
        }
    }

    /// The multiplicative bias at world point `x`.
    #[inline]
    fn bias_at(&self, geo: &Geometry, x: [f32; 3]) -> f32 {
        trilinear(&self.log_bias, geo.ndims, node_coords(x))[0].exp()
    }

    /// Slight blur, noise inside the head, and scaling to [0, 1].
    fn finish(&self, t1: &mut [f32], dims: [usize; 3], noise_key: u64) {
        separable_filter(t1, dims, &[0.25, 0.5, 0.25]);
        let sigma = self.sigma;
        t1.par_chunks_mut(4096).enumerate().for_each(|(c, chunk)| {
            for (o, v) in chunk.iter_mut().enumerate() {
                if *v > 0.0 {
                    let n = hash_normal(noise_key, (c * 4096 + o) as u64);
                    *v = (*v + sigma * n).max(0.0);
                }
            }
        });
        let max = t1.par_iter().cloned().reduce(|| 0.0, f32::max);
        if max > 0.0 {
            let inv = 1.0 / max;
            t1.par_iter_mut().for_each(|v| *v *= inv);
        }
    }
}
