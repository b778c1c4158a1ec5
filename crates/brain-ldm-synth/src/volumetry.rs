//! Label-free volumetry of a T1 in MNI space (the stand-in for SynthSeg).
//!
//! 1. Tissue means: a 3-class Gaussian mixture (CSF, GM, WM) with the template's tissue
//!    fractions as spatial prior is fitted by EM to the brain's pure-tissue voxels (six
//!    neighbours within [`PURE_RANGE`] of each other; at 4 mm, where hardly a voxel is
//!    pure, the whole brain interior). At 1 mm the classes share one variance (the noise).
//! 2. Bias field (1 and 2 mm): the ratio of pure GM and WM voxels to their means, averaged
//!    over 8 mm blocks, smoothed and divided out; then the means are fitted again.
//! 3. Partial volume: every voxel above zero is pure background, CSF, GM or WM, or a mix
//!    of two (background/CSF, background/GM, CSF/GM, GM/WM, CSF/WM) with a uniform
//!    fraction; a class's prior is the share of the voxel's 26 neighbours nearest each
//!    tissue's mean plus a little of the template's fraction (mixtures: the geometric mean
//!    of their two tissues'; near the ventricles GM's comes from the template alone, so
//!    ventricle walls mix CSF with WM). EM refines means, noise (at 1 mm one SD for every
//!    tissue) and class weights. Each voxel's probability that each tissue is its largest
//!    part (the rule the ground-truth labels follow) is then computed in closed form
//!    (normal distribution functions).
//! 4. Volumes are these probabilities summed (brain: GM + WM; ICV: all but background).
//!    Ventricles: the 6-connected components of voxels with CSF probability above
//!    [`VENTRICLE_CSF`] inside a region around the template's ventricles (smoothed
//!    ventricle mask > [`VENTRICLE_REGION`]) that touch the template's ventricles; their
//!    volume is the CSF probability summed over them and the voxels next to them.
//!
//! The labels returned take each voxel's most probable tissue (ventricles: the
//! components). Sums are made in a fixed order, so results do not depend on the number of
//! threads. The image's labels are never used.

use std::path::Path;

use ndarray::ArrayView3;
use rayon::prelude::*;

use crate::error::{Result, SynthError};
use crate::grid::flat;
use crate::labels::{Volumes, BACKGROUND, CSF, GM, VENTRICLES, WM};
use crate::ops::{components, gaussian_kernel, separable_filter, trilinear};
use crate::template::{template, CH_G, CH_M, CH_W, TEMPLATE_ORIGIN};

/// Threshold on the smoothed, peak-normalised template ventricle mask (σ = 6 mm) that
/// bounds where ventricles are looked for.
pub const VENTRICLE_REGION: f32 = 0.05;
/// Voxels near the ventricles where CSF dominates with at least this probability join
/// the ventricle components (thin ventricles are partial volume throughout).
pub const VENTRICLE_CSF: f32 = 0.1;
/// Number of histogram bins the mixture is fitted to.
const BINS: usize = 512;
/// EM iterations (the fit converges long before).
const EM_ITERS: usize = 30;
/// At most this many voxels enter the mixture fit (an even subsample beyond it).
const MAX_FIT_VOXELS: usize = 200_000;
/// Voxels whose six-neighbourhood spans less than this fraction of the WM peak are taken
/// as pure tissue when the tissue means are estimated.
pub const PURE_RANGE: f64 = 0.12;
/// Added to every prior fraction before it weighs a class.
const PRIOR_FLOOR: f64 = 0.1;

/// The result of segmenting a T1: labels as in `_dseg` images, the volumes and the
/// fitted class means.
#[derive(Debug, Clone)]
pub struct Segmentation {
    /// One label per voxel (x fastest), values as in [`crate::labels`].
    pub labels: Vec<u8>,
    /// Volumes in mm³: the partial-volume probabilities summed (not the counts of
    /// `labels`, which are the most probable tissue per voxel).
    pub volumes: Volumes,
    /// Mixture means of CSF, GM and WM, in image units after bias correction.
    pub means: [f64; 3],
}

/// Segments a T1 in MNI space into background, CSF, GM, WM and ventricles.
///
/// `affine` maps voxel indices `[i, j, k]` to world mm; it must be axis-aligned with
/// positive voxel sizes.
///
/// # Errors
/// [`SynthError::BadAffine`] for a rotated or flipped affine, [`SynthError::BadImage`]
/// for non-finite values or an image without positive voxels.
///
/// ```
/// use brain_ldm_synth::{generate_subject, volumetry::segment, SynthConfig, VoxelSize};
/// let s = generate_subject(&SynthConfig { seed: 0, voxel_size: VoxelSize::Mm4 }, 0)?;
/// let seg = segment(s.t1.view(), &s.affine)?;
/// let rel = seg.volumes.brain_volume / s.volumes.brain_volume;
/// assert!((rel - 1.0).abs() < 0.1);
/// # Ok::<(), brain_ldm_synth::SynthError>(())
/// ```
pub fn segment(t1: ArrayView3<'_, f32>, affine: &[[f64; 4]; 4]) -> Result<Segmentation> {
    let mut size = [0f64; 3];
    for (r, s) in size.iter_mut().enumerate() {
        *s = affine[r][r];
        let off = (0..3).any(|c| c != r && affine[r][c].abs() > 1e-6 * affine[r][r].abs());
        if off || *s <= 0.0 {
            return Err(SynthError::BadAffine {
                got: [affine[0][0], affine[1][1], affine[2][2]],
            });
        }
    }
    let (nx, ny, nz) = t1.dim();
    let dims = [nx, ny, nz];
    let mut vals = Vec::with_capacity(t1.len());
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                vals.push(t1[[i, j, k]]);
            }
        }
    }
    if let Some(bad) = vals.iter().find(|v| !v.is_finite()) {
        return Err(SynthError::BadImage {
            reason: format!("with a non-finite value ({bad})"),
        });
    }
    let max = vals.iter().cloned().fold(0f32, f32::max);
    if max <= 0.0 {
        return Err(SynthError::BadImage {
            reason: "without positive voxels".into(),
        });
    }
    // Fit on the brain without its rim: voxels whose neighbours are all above a quarter of
    // the WM peak (pure CSF is near half of it).
    let peak = wm_peak(&vals, max);
    let tpl = template()?;
    let level = level_for(size[0] * size[1] * size[2]);
    let centre = |idx: usize| -> [f32; 3] {
        let (i, j, k) = (idx % nx, (idx / nx) % ny, idx / (nx * ny));
        std::array::from_fn(|r| {
            (affine[r][0] * i as f64
                + affine[r][1] * j as f64
                + affine[r][2] * k as f64
                + affine[r][3]
                - TEMPLATE_ORIGIN[r]) as f32
        })
    };
    let prior3 = |idx: usize| {
        let s = tpl.levels[level].sample(tpl.crop_lo, centre(idx));
        let c = (s[CH_M] - s[CH_G] - s[CH_W]).max(0.0) as f64;
        [c, s[CH_G] as f64, s[CH_W] as f64]
    };
    // At 4 mm hardly a voxel is one tissue: the means are then fitted to the whole brain
    // interior and no bias field is estimated.
    let coarse = level == 2;
    // At 1 mm the pure voxels' spread is the noise, the same in every tissue; at 2 and
    // 4 mm even the "pure" voxels hold sub-voxel mixtures, which widen each tissue by its
    // own amount (thin CSF most), so each class keeps its own variance there.
    let shared_noise = level == 0;
    let pure_means = |vals: &[f32]| {
        let range = if coarse {
            f32::INFINITY
        } else {
            (PURE_RANGE * peak) as f32
        };
        let interior = interior_voxels(vals, dims, 0.25 * peak as f32, range);
        let stride = (interior.len() / MAX_FIT_VOXELS).max(1);
        let samples: Vec<(f64, [f64; 3])> = interior
            .iter()
            .step_by(stride)
            .map(|&idx| (vals[idx] as f64, prior3(idx)))
            .collect();
        (fit_mixture(&samples, peak, shared_noise), interior)
    };
    // Bias field: the smooth ratio of pure GM and WM voxels to their class means.
    let (first, interior) = pure_means(&vals);
    let (init, vals) = if !coarse {
        let field = bias_field(&vals, dims, &interior, &first, size[0]);
        let vals: Vec<f32> = vals.iter().zip(&field).map(|(&v, &b)| v / b).collect();
        (pure_means(&vals).0, vals)
    } else {
        (first, vals)
    };

    // Partial-volume model: every voxel above zero is pure background, CSF, GM or WM, or a
    // mix of two of them; its chance of each tissue dominating follows from the fit.
    let tissue = |idx: usize| {
        let s = tpl.levels[level].sample(tpl.crop_lo, centre(idx));
        [
            1.0 - s[CH_M],
            (s[CH_M] - s[CH_G] - s[CH_W]).max(0.0),
            s[CH_G],
            s[CH_W],
        ]
    };
    let hard = nearest_mean_labels(&vals, &init);
    let near_ventricles = |idx: usize| tpl.ventricle_prior(centre(idx)) > VENTRICLE_REGION;
    let voxels = pv_voxels(&vals, dims, &hard, &tissue, &near_ventricles);
    let model = PvModel::fit(&voxels, init, shared_noise);
    let dominance: Vec<[f32; 4]> = voxels.iter().map(|v| model.dominance(v)).collect();
    let mut labels = vec![BACKGROUND; vals.len()];
    let mut csf_p = vec![0f32; vals.len()];
    let mut sums = [0f64; 4];
    for (v, d) in voxels.iter().zip(&dominance) {
        for (s, &x) in sums.iter_mut().zip(d) {
            *s += x as f64;
        }
        csf_p[v.idx] = d[TC];
        labels[v.idx] = [BACKGROUND, CSF, GM, WM][argmax(d)];
    }

    // Ventricles: CSF components near, and touching, the template's ventricles; their
    // volume is the CSF dominance summed over them and the voxels next to them.
    let candidate: Vec<bool> = labels
        .iter()
        .enumerate()
        .map(|(idx, &l)| {
            (l == CSF || csf_p[idx] > VENTRICLE_CSF)
                && tpl.ventricle_prior(centre(idx)) > VENTRICLE_REGION
        })
        .collect();
    let (comp, sizes) = components(&candidate, dims);
    let mut keep = vec![false; sizes.len()];
    for (idx, &c) in comp.iter().enumerate() {
        if c > 0 && !keep[c as usize] && tpl.in_ventricles(centre(idx)) {
            keep[c as usize] = true;
        }
    }
    let in_vent: Vec<bool> = comp.iter().map(|&c| c > 0 && keep[c as usize]).collect();
    let zone = dilate(&in_vent, dims);
    let mut vent = 0f64;
    for (idx, l) in labels.iter_mut().enumerate() {
        if in_vent[idx] {
            *l = VENTRICLES;
        }
        if zone[idx] {
            vent += csf_p[idx] as f64;
        }
    }
    let h3 = size[0] * size[1] * size[2];
    let volumes = Volumes {
        ventricular_volume: vent * h3,
        brain_volume: (sums[TG] + sums[TW]) * h3,
        icv: (sums[TC] + sums[TG] + sums[TW]) * h3,
    };
    let means = [model.mu[TC], model.mu[TG], model.mu[TW]];
    Ok(Segmentation {
        labels,
        volumes,
        means,
    })
}

/// Measures the ventricular, brain and intracranial volume of a T1 in MNI space
/// (see [`segment`]).
///
/// # Errors
/// As [`segment`].
pub fn measure_volumes(t1: ArrayView3<'_, f32>, affine: &[[f64; 4]; 4]) -> Result<Volumes> {
    Ok(segment(t1, affine)?.volumes)
}

/// Reads a NIfTI T1 (`.nii` or `.nii.gz`) and measures its volumes.
///
/// # Errors
/// As [`read_t1`] and [`segment`].
pub fn measure_file(path: &Path) -> Result<Volumes> {
    let t1 = read_t1(path)?;
    measure_volumes(t1.data.view(), &t1.affine)
}

/// Checks from the header alone, without reading the data, that `path` is a readable
/// NIfTI image with three dimensions: `dim[0]` is 3, or higher with every extent past
/// the third 1.
///
/// # Errors
/// [`SynthError::Nifti`] if the header cannot be read or is invalid,
/// [`SynthError::NotThreeD`] for an image of fewer or more than three dimensions.
pub fn check_t1(path: &Path) -> Result<()> {
    let header = brain_ldm_nifti::read_header(path)?;
    let ndim = header.ndim().clamp(0, 7) as usize;
    let shape: Vec<usize> = header.dim[1..=ndim].iter().map(|&d| d as usize).collect();
    if ndim < 3 || shape[3..].iter().any(|&d| d != 1) {
        return Err(SynthError::NotThreeD {
            path: path.to_path_buf(),
            shape,
        });
    }
    Ok(())
}

/// Reads a 3D NIfTI image through `brain-ldm-nifti` (voxels as f32 after `scl_slope` and
/// `scl_inter`, nibabel's affine) after [`check_t1`].
///
/// # Errors
/// As [`check_t1`], and [`SynthError::Nifti`] if the data cannot be read.
pub fn read_t1(path: &Path) -> Result<brain_ldm_nifti::Volume> {
    check_t1(path)?;
    Ok(brain_ldm_nifti::read(path)?)
}

/// The template level whose voxel volume is nearest `voxel_volume` (mm³).
fn level_for(voxel_volume: f64) -> usize {
    match voxel_volume {
        v if v < 2.8 => 0,
        v if v < 22.6 => 1,
        _ => 2,
    }
}

/// The indices of voxels above `floor` whose six neighbours are all above it too (the
/// brain without its partial-volume rim) and differ from each other and from the voxel by
/// less than `range` (inside one tissue, away from partial-volume boundaries).
fn interior_voxels(vals: &[f32], dims: [usize; 3], floor: f32, range: f32) -> Vec<usize> {
    let (nx, plane) = (dims[0], dims[0] * dims[1]);
    let mut out = Vec::new();
    for k in 1..dims[2].saturating_sub(1) {
        for j in 1..dims[1].saturating_sub(1) {
            for i in 1..nx.saturating_sub(1) {
                let p = i + nx * j + plane * k;
                let nb = [p, p - 1, p + 1, p - nx, p + nx, p - plane, p + plane].map(|q| vals[q]);
                let lo = nb.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = nb.iter().copied().fold(0f32, f32::max);
                if lo > floor && hi - lo < range {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Fits a 3-class (CSF, GM, WM) 1D Gaussian mixture by EM to `(intensity, prior)`
/// samples; returns the class means. With `shared_noise` the classes share one variance
/// (the noise does not depend on the tissue): with a variance of its own, a class with
/// few pure voxels (CSF in a brain that fills its skull) widens over the dark tail of GM
/// and its mean drifts towards GM's.
///
/// Each voxel's mixing weights are the template's tissue fractions at its MNI position
/// (a spatial prior, as in SPM's and FAST's segmentation), flattened towards uniform so
/// that head-size and pose differences do not pin a voxel to the template's class. The
/// fit starts from T1 contrast: WM at the histogram's WM peak, GM at 0.75 and CSF at 0.45
/// of it (the template's tissue means).
fn fit_mixture(samples: &[(f64, [f64; 3])], peak: f64, shared_noise: bool) -> [f64; 3] {
    let mut mu = [0.45 * peak, 0.75 * peak, peak];
    let mut var = [(0.05 * peak).powi(2); 3];
    let floor = (0.005 * peak).powi(2);
    for _ in 0..EM_ITERS {
        let mut s0 = [0f64; 3];
        let mut s1 = [0f64; 3];
        let mut s2 = [0f64; 3];
        for (x, prior) in samples {
            let mut p = [0f64; 3];
            for c in 0..3 {
                let d = x - mu[c];
                p[c] = (PRIOR_FLOOR + prior[c]) * (-0.5 * d * d / var[c]).exp() / var[c].sqrt();
            }
            let z: f64 = p.iter().sum();
            if z <= 0.0 {
                continue;
            }
            for c in 0..3 {
                let r = p[c] / z;
                s0[c] += r;
                s1[c] += r * x;
                s2[c] += r * x * x;
            }
        }
        for c in 0..3 {
            if s0[c] > 0.0 {
                mu[c] = s1[c] / s0[c];
                var[c] = (s2[c] / s0[c] - mu[c] * mu[c]).max(floor);
            }
        }
        if shared_noise {
            var = [pooled(&s0, &var).max(floor); 3];
        }
    }
    mu
}

/// The variance pooled over classes with weights `n` and variances `var` (0 without
/// weight).
fn pooled<const N: usize>(n: &[f64; N], var: &[f64; N]) -> f64 {
    let total: f64 = n.iter().sum();
    if total > 0.0 {
        n.iter().zip(var).map(|(n, v)| n * v).sum::<f64>() / total
    } else {
        0.0
    }
}

/// The WM peak: the mode of the upper half of the histogram of voxels above 5 % of `max`.
fn wm_peak(vals: &[f32], max: f32) -> f64 {
    let lo = 0.05 * max as f64;
    let width = (max as f64 - lo) / BINS as f64;
    let mut hist = vec![0f64; BINS];
    for &v in vals {
        let v = v as f64;
        if v > lo {
            hist[(((v - lo) / width) as usize).min(BINS - 1)] += 1.0;
        }
    }
    let smooth: Vec<f64> = (0..BINS)
        .map(|b| hist[b.saturating_sub(4)..(b + 5).min(BINS)].iter().sum())
        .collect();
    (BINS / 2..BINS)
        .max_by(|&a, &b| smooth[a].total_cmp(&smooth[b]).then(b.cmp(&a)))
        .map_or(max as f64, |b| lo + (b as f64 + 0.5) * width)
}

/// Tissue indices of the partial-volume model: background, CSF, GM, WM.
const TB: usize = 0;
const TC: usize = 1;
const TG: usize = 2;
const TW: usize = 3;
/// The two-tissue mixtures of the model (darker tissue first), after the four pure classes.
const PAIRS: [(usize, usize); 5] = [(TB, TC), (TB, TG), (TC, TG), (TG, TW), (TC, TW)];
/// Classes: four pure tissues, then [`PAIRS`].
const CLASSES: usize = 4 + PAIRS.len();
/// EM iterations of the partial-volume fit.
const PV_ITERS: usize = 12;
/// Weight of the template's tissue fraction against the neighbours' labels in a voxel's
/// prior, and the floor added to both.
const TEMPLATE_WEIGHT: f32 = 0.2;
const SUPPORT_FLOOR: f32 = 0.02;

/// A voxel of the partial-volume model: its index, intensity and class priors.
struct PvVoxel {
    idx: usize,
    x: f64,
    prior: [f32; CLASSES],
}

/// Labels by nearest mean among background (0), CSF, GM and WM: thresholds half-way.
fn nearest_mean_labels(vals: &[f32], means: &[f64; 3]) -> Vec<u8> {
    let t = [
        means[0] / 2.0,
        (means[0] + means[1]) / 2.0,
        (means[1] + means[2]) / 2.0,
    ];
    vals.iter()
        .map(|&v| t.iter().filter(|&&t| v as f64 >= t).count() as u8)
        .collect()
}

/// The voxels above zero with their class priors: a tissue's support is the share of the
/// 26 neighbours with that nearest-mean label plus a little of the template's fraction at
/// the voxel; a pure class's prior is its support, a mixture's the geometric mean of its
/// two tissues' supports (a voxel mixes the tissues found on either side of it).
fn pv_voxels(
    vals: &[f32],
    dims: [usize; 3],
    hard: &[u8],
    tissue: &(dyn Fn(usize) -> [f32; 4] + Sync),
    near_ventricles: &(dyn Fn(usize) -> bool + Sync),
) -> Vec<PvVoxel> {
    let (nx, ny, nz) = (dims[0], dims[1], dims[2]);
    let plane = nx * ny;
    (0..vals.len())
        .into_par_iter()
        .filter(|&idx| vals[idx] > 0.0)
        .map(|idx| {
            let (i, j, k) = (idx % nx, (idx / nx) % ny, idx / plane);
            let mut count = [0f32; 4];
            let mut n = 0f32;
            for dk in k.saturating_sub(1)..(k + 2).min(nz) {
                for dj in j.saturating_sub(1)..(j + 2).min(ny) {
                    for di in i.saturating_sub(1)..(i + 2).min(nx) {
                        let q = di + nx * dj + plane * dk;
                        if q != idx {
                            count[hard[q] as usize] += 1.0;
                            n += 1.0;
                        }
                    }
                }
            }
            let t = tissue(idx);
            let mut support: [f32; 4] =
                std::array::from_fn(|c| count[c] / n + TEMPLATE_WEIGHT * t[c] + SUPPORT_FLOOR);
            if near_ventricles(idx) {
                // Ventricle walls are voxels mixing CSF and WM that look like GM, so GM's
                // support there comes from the template alone.
                support[TG] = t[TG] + SUPPORT_FLOOR;
            }
            let mut prior = [0f32; CLASSES];
            prior[..4].copy_from_slice(&support);
            for (p, &(a, b)) in prior[4..].iter_mut().zip(&PAIRS) {
                *p = (support[a] * support[b]).sqrt();
            }
            PvVoxel {
                idx,
                x: vals[idx] as f64,
                prior,
            }
        })
        .collect()
}

/// The fitted partial-volume model: tissue means and noise SDs (background's mean is 0
/// and its SD CSF's, or all SDs one shared value) and a global weight per class.
struct PvModel {
    mu: [f64; 4],
    sigma: [f64; 4],
    weight: [f64; CLASSES],
}

impl PvModel {
    /// Fits means, SDs and class weights by EM, starting from the pure-tissue mixture's
    /// means `init` (CSF, GM, WM). Mixtures take a uniform fraction in [0, 1] of their
    /// darker tissue; only pure voxels update the means and SDs. With `shared_noise` the
    /// tissues share one SD, so a tissue with few pure voxels cannot widen over the
    /// mixtures next to it.
    fn fit(voxels: &[PvVoxel], init: [f64; 3], shared_noise: bool) -> PvModel {
        let mut m = PvModel {
            mu: [0.0, init[0], init[1], init[2]],
            sigma: [0.03 * init[2]; 4],
            weight: [1.0; CLASSES],
        };
        let floor = 0.005 * init[2];
        let stride = (voxels.len() / MAX_FIT_VOXELS).max(1);
        let fit: Vec<&PvVoxel> = voxels.iter().step_by(stride).collect();
        type Sums = ([f64; CLASSES], [f64; 4], [f64; 4], [f64; CLASSES]);
        for _ in 0..PV_ITERS {
            // Fixed chunks summed in order: the same sums on any number of threads.
            let partial: Vec<Sums> = fit
                .par_chunks(4096)
                .map(|chunk| {
                    let mut acc: Sums = Default::default();
                    for v in chunk {
                        let (r, z_prior) = m.responsibilities(v);
                        for (c, &rc) in r.iter().enumerate() {
                            acc.0[c] += rc;
                            acc.3[c] += v.prior[c] as f64 / z_prior;
                            if c < 4 {
                                acc.1[c] += rc * v.x;
                                acc.2[c] += rc * v.x * v.x;
                            }
                        }
                    }
                    acc
                })
                .collect();
            let (mut s0, mut s1, mut s2, mut denom): Sums = Default::default();
            for p in &partial {
                for c in 0..CLASSES {
                    s0[c] += p.0[c];
                    denom[c] += p.3[c];
                }
                for c in 0..4 {
                    s1[c] += p.1[c];
                    s2[c] += p.2[c];
                }
            }
            for c in [TC, TG, TW] {
                if s0[c] > 1.0 {
                    m.mu[c] = s1[c] / s0[c];
                    m.sigma[c] = (s2[c] / s0[c] - m.mu[c] * m.mu[c])
                        .max(floor * floor)
                        .sqrt();
                }
            }
            m.sigma[TB] = m.sigma[TC];
            if shared_noise {
                let n = [TC, TG, TW].map(|c| if s0[c] > 1.0 { s0[c] } else { 0.0 });
                let var = [TC, TG, TW].map(|c| m.sigma[c] * m.sigma[c]);
                m.sigma = [pooled(&n, &var).max(floor * floor).sqrt(); 4];
            }
            for c in 0..CLASSES {
                if denom[c] > 0.0 {
                    m.weight[c] = (s0[c] / denom[c]).max(1e-6);
                }
            }
        }
        m
    }

    /// Class posteriors of a voxel, and the weighted prior's normaliser `Σ w·π`.
    fn responsibilities(&self, v: &PvVoxel) -> ([f64; CLASSES], f64) {
        let mut p = [0f64; CLASSES];
        let mut z_prior = 0.0;
        for (c, pc) in p.iter_mut().enumerate() {
            let w = self.weight[c] * v.prior[c] as f64;
            z_prior += w;
            *pc = w * self.likelihood(c, v.x);
        }
        let z: f64 = p.iter().sum();
        if z > 0.0 {
            p.iter_mut().for_each(|q| *q /= z);
        } else {
            // Far outside every class: the nearest tissue mean takes it.
            let nearest = (0..4)
                .min_by(|&a, &b| {
                    (v.x - self.mu[a])
                        .abs()
                        .total_cmp(&(v.x - self.mu[b]).abs())
                })
                .unwrap_or(TW);
            p[nearest] = 1.0;
        }
        (p, z_prior.max(f64::MIN_POSITIVE))
    }

    /// Density of intensity `x` under class `c`.
    fn likelihood(&self, c: usize, x: f64) -> f64 {
        if c < 4 {
            let s = self.sigma[c];
            let d = (x - self.mu[c]) / s;
            (-0.5 * d * d).exp() / (s * (2.0 * std::f64::consts::PI).sqrt())
        } else {
            let (a, b) = PAIRS[c - 4];
            let (lo, hi) = (self.mu[a], self.mu[b]);
            let s = 0.5 * (self.sigma[a] + self.sigma[b]);
            (phi((x - lo) / s) - phi((x - hi) / s)) / (hi - lo).max(1e-12)
        }
    }

    /// The probability that each tissue (background, CSF, GM, WM) is the largest part of
    /// the voxel, as the ground-truth labels are made.
    fn dominance(&self, v: &PvVoxel) -> [f32; 4] {
        let (r, _) = self.responsibilities(v);
        let mut d = [0f64; 4];
        d.copy_from_slice(&r[..4]);
        for (k, &(a, b)) in PAIRS.iter().enumerate() {
            let rk = r[4 + k];
            if rk == 0.0 {
                continue;
            }
            // Fraction t of `b` uniform on [0, 1], x ~ N(lo + t·(hi − lo), s²):
            // P(t > ½ | x) = (Φ((x − mid)/s) − Φ((x − hi)/s)) / (Φ((x − lo)/s) − Φ((x − hi)/s)).
            let (lo, hi) = (self.mu[a], self.mu[b]);
            let s = 0.5 * (self.sigma[a] + self.sigma[b]);
            let mid = 0.5 * (lo + hi);
            let top = phi((v.x - mid) / s) - phi((v.x - hi) / s);
            let all = phi((v.x - lo) / s) - phi((v.x - hi) / s);
            let pb = if all > 1e-12 {
                (top / all).clamp(0.0, 1.0)
            } else if v.x > mid {
                1.0
            } else {
                0.0
            };
            d[b] += rk * pb;
            d[a] += rk * (1.0 - pb);
        }
        d.map(|x| x as f32)
    }
}

/// The standard normal distribution function, from [`erf`].
fn phi(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// The error function (Abramowitz & Stegun 7.1.26; absolute error below 1.5e-7).
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    if x >= 0.0 {
        y
    } else {
        -y
    }
}

/// Index of the largest of four values (the first on ties).
fn argmax(d: &[f32; 4]) -> usize {
    (1..4).fold(0, |best, c| if d[c] > d[best] { c } else { best })
}

/// `mask` grown by one voxel in its 26-neighbourhood.
fn dilate(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let (nx, ny, nz) = (dims[0], dims[1], dims[2]);
    let plane = nx * ny;
    let mut out = mask.to_vec();
    for (idx, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
        let (i, j, k) = (idx % nx, (idx / nx) % ny, idx / plane);
        for dk in k.saturating_sub(1)..(k + 2).min(nz) {
            for dj in j.saturating_sub(1)..(j + 2).min(ny) {
                for di in i.saturating_sub(1)..(i + 2).min(nx) {
                    out[di + nx * dj + plane * dk] = true;
                }
            }
        }
    }
    out
}

/// Block edge (mm) of the grid the bias field is estimated on, and the field's smoothing
/// (in blocks).
const BIAS_BLOCK_MM: f64 = 8.0;
const BIAS_SIGMA_BLOCKS: f32 = 1.5;

/// A smooth multiplicative bias field: the ratio of the `interior` voxels nearest the GM
/// or WM mean (`means` are CSF, GM, WM) to that mean, averaged over blocks of
/// [`BIAS_BLOCK_MM`], smoothed (normalised convolution) and interpolated back to every
/// voxel; 1 where no block is near.
fn bias_field(
    vals: &[f32],
    dims: [usize; 3],
    interior: &[usize],
    means: &[f64; 3],
    voxel_mm: f64,
) -> Vec<f32> {
    let b = (BIAS_BLOCK_MM / voxel_mm).round().max(1.0) as usize;
    let cd: [usize; 3] = std::array::from_fn(|a| dims[a].div_ceil(b));
    let (nx, ny) = (dims[0], dims[1]);
    let mut num = vec![0f32; cd[0] * cd[1] * cd[2]];
    let mut den = vec![0f32; num.len()];
    let t_cg = (means[0] + means[1]) / 2.0;
    let t_gw = (means[1] + means[2]) / 2.0;
    for &idx in interior {
        let v = vals[idx] as f64;
        let mu = match v {
            v if v < t_cg => continue,
            v if v < t_gw => means[1],
            _ => means[2],
        };
        let (i, j, k) = (idx % nx, (idx / nx) % ny, idx / (nx * ny));
        let c = flat(cd, i / b, j / b, k / b);
        num[c] += (v / mu) as f32;
        den[c] += 1.0;
    }
    let kernel = gaussian_kernel(BIAS_SIGMA_BLOCKS);
    separable_filter(&mut num, cd, &kernel);
    separable_filter(&mut den, cd, &kernel);
    let ratio: Vec<[f32; 1]> = num
        .iter()
        .zip(&den)
        .map(|(&n, &d)| if d > 0.5 { [n / d] } else { [1.0] })
        .collect();
    let coord =
        |x: usize, a: usize| ((x as f32 + 0.5) / b as f32 - 0.5).clamp(0.0, (cd[a] - 1) as f32);
    (0..vals.len())
        .into_par_iter()
        .map(|idx| {
            let (i, j, k) = (idx % nx, (idx / nx) % ny, idx / (nx * ny));
            let r = trilinear(&ratio, cd, [coord(i, 0), coord(j, 1), coord(k, 2)])[0];
            if r > 0.0 {
                r
            } else {
                1.0
            }
        })
        .collect()
}
