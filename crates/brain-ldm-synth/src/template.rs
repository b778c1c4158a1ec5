//! The embedded MNI152 template (ICBM 2009a symmetric; T1, GM and WM maps), decoded once,
//! and what the generator and the volumetry derive from it: a three-level pyramid of
//! tissue fractions, the lateral-ventricle component, the ventricle flow field and the
//! cortical-atrophy score.

use std::io::Read;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use brain_ldm_nifti::{DataType, NiftiHeader};

use rayon::prelude::*;

use crate::error::{Result, SynthError};
use crate::grid::flat;
use crate::labels::{classify, GM, VENTRICLES, WM};
use crate::ops::{box_down, components, gaussian_kernel, half_dims, separable_filter, trilinear};

const T1_FILE: &str = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz";
const GM_FILE: &str = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz";
const WM_FILE: &str = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz";
static T1_GZ: &[u8] =
    include_bytes!("../../../data/mni152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz");
static GM_GZ: &[u8] =
    include_bytes!("../../../data/mni152/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz");
static WM_GZ: &[u8] =
    include_bytes!("../../../data/mni152/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz");

/// World (MNI) coordinates of template voxel (0, 0, 0); the template is 1 mm, RAS.
pub(crate) const TEMPLATE_ORIGIN: [f64; 3] = [-98.0, -134.0, -72.0];
/// The template's shape.
const TEMPLATE_DIMS: [usize; 3] = [197, 233, 189];
/// The lateral ventricles are the CSF component whose centre of mass is nearest this point.
const VENTRICLE_CENTRE_MNI: [f64; 3] = [0.0, -15.0, 14.0];
/// Margin kept around the brain when the template is cropped, in voxels.
const CROP_MARGIN: usize = 3;
/// Margin of the ventricle flow field around the ventricles, in mm.
const FLOW_MARGIN: usize = 24;
/// Smoothing of the ventricle mask whose gradient is the flow's velocity, in mm.
const FLOW_SIGMA_MM: f32 = 6.0;
/// Smoothing of the CSF and WM maps behind the atrophy score, in mm.
const SCORE_SIGMA_MM: f32 = 3.0;

/// Channel order of a template voxel: brain mask, GM, WM, ventricle CSF, atrophy score.
pub(crate) const CH_M: usize = 0;
pub(crate) const CH_G: usize = 1;
pub(crate) const CH_W: usize = 2;
pub(crate) const CH_V: usize = 3;
pub(crate) const CH_S: usize = 4;

/// One level of the tissue pyramid: 2^level mm voxels, channels as bytes (value / 255).
pub(crate) struct Level {
    dims: [usize; 3],
    step: f32,
    data: Vec<[u8; 5]>,
}

impl Level {
    /// The channels at template index coordinates `p` (1 mm voxels of the full template),
    /// trilinearly interpolated, as fractions in [0, 1]; zero outside.
    #[inline]
    pub(crate) fn sample(&self, crop_lo: [f32; 3], p: [f32; 3]) -> [f32; 5] {
        let h = (self.step - 1.0) / 2.0;
        let q = [
            (p[0] - crop_lo[0] - h) / self.step,
            (p[1] - crop_lo[1] - h) / self.step,
            (p[2] - crop_lo[2] - h) / self.step,
        ];
        let mut v = trilinear(&self.data, self.dims, q);
        v.iter_mut().for_each(|x| *x *= 1.0 / 255.0);
        v
    }
}

/// The velocity field that enlarges (positive time) or shrinks (negative time) the
/// ventricles: the gradient of the Gaussian-smoothed ventricle mask, normalised to a
/// largest speed of 1 mm per unit time, on a 2 mm grid around the ventricles.
pub(crate) struct Flow {
    /// Template index coordinates of node (0, 0, 0).
    origin: [f32; 3],
    dims: [usize; 3],
    vel: Vec<[f32; 3]>,
}

/// A displacement field on the flow's grid (mm, template index coordinates).
pub(crate) struct Displacement {
    origin: [f32; 3],
    dims: [usize; 3],
    u: Vec<[f32; 3]>,
}

impl Displacement {
    /// The displacement at template index coordinates `p` (zero outside the grid).
    #[inline]
    pub(crate) fn at(&self, p: [f32; 3]) -> [f32; 3] {
        trilinear(&self.u, self.dims, grid_coords(self.origin, p))
    }

    /// Whether `p` lies inside the grid, where the displacement may be non-zero.
    #[inline]
    pub(crate) fn contains(&self, p: [f32; 3]) -> bool {
        let q = grid_coords(self.origin, p);
        (0..3).all(|a| q[a] > -1.0 && q[a] < self.dims[a] as f32)
    }

    /// The template index box `[lo, hi]` outside which the displacement is zero.
    pub(crate) fn bounds(&self) -> ([f32; 3], [f32; 3]) {
        let mut hi = [0f32; 3];
        let mut lo = [0f32; 3];
        for a in 0..3 {
            lo[a] = self.origin[a] - 2.0;
            hi[a] = self.origin[a] + 2.0 * self.dims[a] as f32;
        }
        (lo, hi)
    }
}

#[inline]
fn grid_coords(origin: [f32; 3], p: [f32; 3]) -> [f32; 3] {
    [
        (p[0] - origin[0]) * 0.5,
        (p[1] - origin[1]) * 0.5,
        (p[2] - origin[2]) * 0.5,
    ]
}

impl Flow {
    /// The backward map of flowing for time `alpha` as a displacement field, by scaling
    /// and squaring (steps of at most 0.5 mm).
    pub(crate) fn displacement(&self, alpha: f32) -> Displacement {
        let n = (2.0 * alpha.abs()).max(1.0).log2().ceil() as i32;
        let scale = alpha / 2f32.powi(n);
        let mut u: Vec<[f32; 3]> = self
            .vel
            .iter()
            .map(|v| [v[0] * scale, v[1] * scale, v[2] * scale])
            .collect();
        let dims = self.dims;
        for _ in 0..n {
            let prev = u;
            u = (0..prev.len())
                .into_par_iter()
                .map(|idx| {
                    let i = idx % dims[0];
                    let j = (idx / dims[0]) % dims[1];
                    let k = idx / (dims[0] * dims[1]);
                    let d = prev[idx];
                    let q = [
                        i as f32 + d[0] * 0.5,
                        j as f32 + d[1] * 0.5,
                        k as f32 + d[2] * 0.5,
                    ];
                    let e = trilinear(&prev, dims, q);
                    [d[0] + e[0], d[1] + e[1], d[2] + e[2]]
                })
                .collect();
        }
        Displacement {
            origin: self.origin,
            dims,
            u,
        }
    }
}

/// Label volumes of the template itself at 1 mm, in mm³.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TemplateStats {
    /// Voxels with label > 0.
    pub mask: f64,
    /// GM + WM labels.
    pub brain: f64,
    /// Ventricle labels.
    pub ventricles: f64,
}

/// The decoded template and everything derived from it.
pub(crate) struct Template {
    /// Template index coordinates of the crop's voxel (0, 0, 0).
    pub crop_lo: [f32; 3],
    /// The tissue pyramid at 1, 2 and 4 mm.
    pub levels: [Level; 3],
    /// The ventricle flow.
    pub flow: Flow,
    /// (flow time, ln of the ventricle volume relative to time 0) at 2 mm, increasing.
    pub vent_table: Vec<(f32, f32)>,
    /// Label volumes of the template at 1 mm.
    pub stats: TemplateStats,
    /// The lateral-ventricle component on the 1 mm crop.
    vent_mask: Vec<bool>,
    /// The smoothed ventricle mask on the flow grid (volumetry's search region).
    psi: Vec<[f32; 1]>,
}

static TEMPLATE: OnceLock<Template> = OnceLock::new();
static BUILD: Mutex<()> = Mutex::new(());

/// Decodes an embedded gzip'ed NIfTI file of unsigned bytes into its shape and an x-fastest
/// buffer (NIfTI's on-disk order, kept as is).
///
/// The header is parsed and checked by `brain-ldm-nifti`; the checks here are what this
/// reader relies on: 3D, uint8, no scaling, the data present after `vox_offset`.
fn decode_u8_gz(bytes: &[u8], file: &'static str) -> Result<([usize; 3], Vec<u8>)> {
    let bad = |reason: String| SynthError::Template { file, reason };
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut raw)
        .map_err(|e| bad(e.to_string()))?;
    let h = NiftiHeader::parse(&raw, Path::new(file))?;
    if h.ndim() != 3 {
        return Err(bad(format!("expected 3 dimensions, got dim {:?}", h.dim)));
    }
    if h.data_type() != Some(DataType::U8) {
        return Err(bad(format!("expected uint8, got datatype {}", h.datatype)));
    }
    if h.slope_inter().is_some_and(|s| s != (1.0, 0.0)) {
        return Err(bad(format!(
            "unexpected scaling {} {}",
            h.scl_slope, h.scl_inter
        )));
    }
    let dims: [usize; 3] = std::array::from_fn(|a| h.dim[a + 1].max(0) as usize);
    let n = dims[0] * dims[1] * dims[2];
    let offset = h.vox_offset as usize;
    let data = raw.get(offset..offset + n).ok_or_else(|| {
        bad(format!(
            "data shorter than {n} voxels after offset {offset}"
        ))
    })?;
    Ok((dims, data.to_vec()))
}

/// The template, decoded and prepared on first use (about a second), shared afterwards.
///
/// # Errors
/// [`SynthError::Template`] if the embedded files do not decode as expected.
pub(crate) fn template() -> Result<&'static Template> {
    if let Some(t) = TEMPLATE.get() {
        return Ok(t);
    }
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = TEMPLATE.get() {
        return Ok(t);
    }
    let t = Template::build()?;
    Ok(TEMPLATE.get_or_init(|| t))
}

impl Template {
    fn build() -> Result<Self> {
        let (t1d, t1) = decode_u8_gz(T1_GZ, T1_FILE)?;
        let (gmd, gm) = decode_u8_gz(GM_GZ, GM_FILE)?;
        let (wmd, wm) = decode_u8_gz(WM_GZ, WM_FILE)?;
        for (file, d) in [(T1_FILE, t1d), (GM_FILE, gmd), (WM_FILE, wmd)] {
            if d != TEMPLATE_DIMS {
                return Err(SynthError::Template {
                    file,
                    reason: format!("shape {d:?}, expected {TEMPLATE_DIMS:?}"),
                });
            }
        }
        let full = TEMPLATE_DIMS;
        // Crop to the brain's bounding box plus a margin.
        let mut lo = full;
        let mut hi = [0usize; 3];
        for k in 0..full[2] {
            for j in 0..full[1] {
                for i in 0..full[0] {
                    if t1[flat(full, i, j, k)] > 0 {
                        for (a, x) in [i, j, k].into_iter().enumerate() {
                            lo[a] = lo[a].min(x);
                            hi[a] = hi[a].max(x);
                        }
                    }
                }
            }
        }
        if hi[0] < lo[0] {
            return Err(SynthError::Template {
                file: T1_FILE,
                reason: "no brain voxel".into(),
            });
        }
        let lo: [usize; 3] = std::array::from_fn(|a| lo[a].saturating_sub(CROP_MARGIN));
        let hi: [usize; 3] = std::array::from_fn(|a| (hi[a] + CROP_MARGIN).min(full[a] - 1));
        let dims: [usize; 3] = std::array::from_fn(|a| hi[a] - lo[a] + 1);
        let n = dims[0] * dims[1] * dims[2];

        // Level 0 channels: mask, GM, WM (GM + WM ≤ mask), CSF in bytes.
        let mut l0 = vec![[0u8; 5]; n];
        let mut csf = vec![0u8; n];
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let s = flat(full, i + lo[0], j + lo[1], k + lo[2]);
                    if t1[s] == 0 {
                        continue;
                    }
                    let (mut g, mut w) = (gm[s] as u32, wm[s] as u32);
                    if g + w > 255 {
                        let t = g + w;
                        g = (g * 255 + t / 2) / t;
                        w = 255 - g;
                    }
                    let d = flat(dims, i, j, k);
                    l0[d] = [255, g as u8, w as u8, 0, 0];
                    csf[d] = (255 - g - w) as u8;
                }
            }
        }

        // The lateral ventricles: the component of CSF > 0.5 nearest the expected centre.
        let is_csf: Vec<bool> = csf.iter().map(|&c| c >= 128).collect();
        let (comp, sizes) = components(&is_csf, dims);
        let mut sums = vec![[0f64; 3]; sizes.len()];
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let c = comp[flat(dims, i, j, k)] as usize;
                    if c > 0 {
                        sums[c][0] += i as f64;
                        sums[c][1] += j as f64;
                        sums[c][2] += k as f64;
                    }
                }
            }
        }
        let mut best = (f64::INFINITY, 0usize);
        for (c, &size) in sizes.iter().enumerate().skip(1) {
            if size < 1000 {
                continue;
            }
            let d2: f64 = (0..3)
                .map(|a| {
                    let w = sums[c][a] / size as f64 + (lo[a] as f64) + TEMPLATE_ORIGIN[a];
                    (w - VENTRICLE_CENTRE_MNI[a]).powi(2)
                })
                .sum();
            if d2 < best.0 {
                best = (d2, c);
            }
        }
        if best.1 == 0 {
            return Err(SynthError::Template {
                file: T1_FILE,
                reason: "no ventricle component found".into(),
            });
        }
        let vent_mask: Vec<bool> = comp.iter().map(|&c| c as usize == best.1).collect();
        for (d, v) in l0.iter_mut().enumerate() {
            if vent_mask[d] {
                v[CH_V] = csf[d];
            }
        }

        // Atrophy score at 2 mm: smoothed (CSF outside the ventricles + background) over
        // smoothed (that + WM); high next to sulci and the brain's surface, low near WM.
        let d1 = half_dims(dims);
        let l1 = box_down(&l0, dims);
        let sig = SCORE_SIGMA_MM / 2.0;
        let mut outside: Vec<f32> = l1
            .iter()
            .map(|v| (255.0 - v[CH_G] - v[CH_W] - v[CH_V]) / 255.0)
            .collect();
        let mut white: Vec<f32> = l1.iter().map(|v| v[CH_W] / 255.0).collect();
        let kern = gaussian_kernel(sig);
        separable_filter(&mut outside, d1, &kern);
        separable_filter(&mut white, d1, &kern);
        let score: Vec<[f32; 1]> = outside
            .iter()
            .zip(&white)
            .map(|(&o, &w)| [o / (o + w + 1e-6)])
            .collect();
        l0.par_chunks_mut(dims[0] * dims[1])
            .enumerate()
            .for_each(|(k, slice)| {
                for j in 0..dims[1] {
                    for i in 0..dims[0] {
                        let v = &mut slice[i + dims[0] * j];
                        if v[CH_M] == 0 {
                            continue;
                        }
                        let q = [
                            (i as f32 - 0.5) / 2.0,
                            (j as f32 - 0.5) / 2.0,
                            (k as f32 - 0.5) / 2.0,
                        ];
                        v[CH_S] = quantise(trilinear(&score, d1, q)[0]);
                    }
                }
            });
        let l1 = box_down(&l0, dims);
        let d2 = half_dims(d1);
        let l2 = box_down(&l1, d1);
        let levels = [
            Level {
                dims,
                step: 1.0,
                data: l0,
            },
            Level {
                dims: d1,
                step: 2.0,
                data: l1.iter().map(|v| v.map(|x| x.round() as u8)).collect(),
            },
            Level {
                dims: d2,
                step: 4.0,
                data: l2.iter().map(|v| v.map(|x| x.round() as u8)).collect(),
            },
        ];
        let crop_lo = lo.map(|x| x as f32);
        let (flow, psi) = build_flow(&vent_mask, dims, crop_lo)?;

        // Template label volumes at 1 mm.
        let mut stats = TemplateStats {
            mask: 0.0,
            brain: 0.0,
            ventricles: 0.0,
        };
        for v in &levels[0].data {
            let f = v.map(|x| x as f32 / 255.0);
            let c = (f[CH_M] - f[CH_G] - f[CH_W] - f[CH_V]).max(0.0);
            match classify(f[CH_M], c, f[CH_G], f[CH_W], f[CH_V]) {
                0 => continue,
                GM | WM => stats.brain += 1.0,
                VENTRICLES => stats.ventricles += 1.0,
                _ => {}
            }
            stats.mask += 1.0;
        }
        let mut t = Template {
            crop_lo,
            levels,
            flow,
            vent_table: Vec::new(),
            stats,
            vent_mask,
            psi,
        };
        t.vent_table = t.ventricle_table();
        Ok(t)
    }

    /// Ventricle volume against flow time, counted at 2 mm in template space.
    fn ventricle_table(&self) -> Vec<(f32, f32)> {
        const TIMES: [f32; 17] = [
            -24.0, -16.0, -12.0, -8.0, -6.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0,
            24.0, 32.0,
        ];
        let lvl = &self.levels[1];
        let d = lvl.dims;
        let counts: Vec<f32> = TIMES
            .iter()
            .map(|&alpha| {
                let disp = self.flow.displacement(alpha);
                let (blo, bhi) = disp.bounds();
                let n: usize = (0..d[2])
                    .into_par_iter()
                    .map(|k| {
                        let mut n = 0usize;
                        for j in 0..d[1] {
                            for i in 0..d[0] {
                                let p = [
                                    self.crop_lo[0] + 2.0 * i as f32 + 0.5,
                                    self.crop_lo[1] + 2.0 * j as f32 + 0.5,
                                    self.crop_lo[2] + 2.0 * k as f32 + 0.5,
                                ];
                                if (0..3).any(|a| p[a] < blo[a] || p[a] > bhi[a]) {
                                    continue;
                                }
                                let u = disp.at(p);
                                let s = lvl
                                    .sample(self.crop_lo, [p[0] + u[0], p[1] + u[1], p[2] + u[2]]);
                                if label_of(&s, f32::INFINITY) == VENTRICLES {
                                    n += 1;
                                }
                            }
                        }
                        n
                    })
                    .sum();
                (n as f32).max(0.5)
            })
            .collect();
        let base = counts[8];
        let mut table: Vec<(f32, f32)> = TIMES
            .iter()
            .zip(&counts)
            .map(|(&t, &c)| (t, (c / base).ln()))
            .collect();
        // Keep it strictly increasing so that it can be inverted.
        for i in 1..table.len() {
            if table[i].1 <= table[i - 1].1 {
                table[i].1 = table[i - 1].1 + 1e-4;
            }
        }
        table
    }

    /// Whether template index coordinates `p` are inside the template's ventricles
    /// (nearest 1 mm voxel).
    pub(crate) fn in_ventricles(&self, p: [f32; 3]) -> bool {
        let d = self.levels[0].dims;
        let q: [f32; 3] = std::array::from_fn(|a| (p[a] - self.crop_lo[a]).round());
        if (0..3).any(|a| q[a] < 0.0 || q[a] >= d[a] as f32) {
            return false;
        }
        self.vent_mask[flat(d, q[0] as usize, q[1] as usize, q[2] as usize)]
    }

    /// The smoothed ventricle mask (σ = 6 mm, peak-normalised to 1) at template index
    /// coordinates `p`; zero far from the ventricles.
    pub(crate) fn ventricle_prior(&self, p: [f32; 3]) -> f32 {
        trilinear(&self.psi, self.flow.dims, grid_coords(self.flow.origin, p))[0]
    }
}

/// Builds the ventricle flow field and the smoothed ventricle mask it derives from.
fn build_flow(vent: &[bool], dims: [usize; 3], crop_lo: [f32; 3]) -> Result<(Flow, Vec<[f32; 1]>)> {
    let mut lo = dims;
    let mut hi = [0usize; 3];
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                if vent[flat(dims, i, j, k)] {
                    for (a, x) in [i, j, k].into_iter().enumerate() {
                        lo[a] = lo[a].min(x);
                        hi[a] = hi[a].max(x);
                    }
                }
            }
        }
    }
    let lo: [usize; 3] = std::array::from_fn(|a| lo[a].saturating_sub(FLOW_MARGIN));
    let hi: [usize; 3] = std::array::from_fn(|a| (hi[a] + FLOW_MARGIN).min(dims[a] - 1));
    let gd: [usize; 3] = std::array::from_fn(|a| (hi[a] - lo[a] + 1).div_ceil(2));
    let mut psi = vec![0f32; gd[0] * gd[1] * gd[2]];
    for k in 0..gd[2] {
        for j in 0..gd[1] {
            for i in 0..gd[0] {
                let mut acc = 0f32;
                for dz in 0..2 {
                    for dy in 0..2 {
                        for dx in 0..2 {
                            let (x, y, z) =
                                (lo[0] + 2 * i + dx, lo[1] + 2 * j + dy, lo[2] + 2 * k + dz);
                            if x < dims[0]
                                && y < dims[1]
                                && z < dims[2]
                                && vent[flat(dims, x, y, z)]
                            {
                                acc += 0.125;
                            }
                        }
                    }
                }
                psi[flat(gd, i, j, k)] = acc;
            }
        }
    }
    separable_filter(&mut psi, gd, &gaussian_kernel(FLOW_SIGMA_MM / 2.0));
    let peak = psi.iter().cloned().fold(0f32, f32::max);
    if peak <= 0.0 {
        return Err(SynthError::Template {
            file: T1_FILE,
            reason: "empty ventricle mask".into(),
        });
    }
    psi.iter_mut().for_each(|v| *v /= peak);
    let mut vel = vec![[0f32; 3]; psi.len()];
    let mut vmax = 0f32;
    for k in 1..gd[2].saturating_sub(1) {
        for j in 1..gd[1].saturating_sub(1) {
            for i in 1..gd[0].saturating_sub(1) {
                let g = [
                    psi[flat(gd, i + 1, j, k)] - psi[flat(gd, i - 1, j, k)],
                    psi[flat(gd, i, j + 1, k)] - psi[flat(gd, i, j - 1, k)],
                    psi[flat(gd, i, j, k + 1)] - psi[flat(gd, i, j, k - 1)],
                ];
                vmax = vmax.max((g[0] * g[0] + g[1] * g[1] + g[2] * g[2]).sqrt());
                vel[flat(gd, i, j, k)] = g;
            }
        }
    }
    vel.iter_mut()
        .for_each(|v| v.iter_mut().for_each(|x| *x /= vmax));
    let origin = std::array::from_fn(|a| crop_lo[a] + lo[a] as f32 + 0.5);
    Ok((
        Flow {
            origin,
            dims: gd,
            vel,
        },
        psi.into_iter().map(|v| [v]).collect(),
    ))
}

/// Rounds a fraction in [0, 1] to a byte.
fn quantise(x: f32) -> u8 {
    (x.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// The label of sampled template channels `s` under cortical atrophy with threshold `tau`
/// (see [`atrophy_fraction`]).
#[inline]
pub(crate) fn label_of(s: &[f32; 5], tau: f32) -> u8 {
    let (c, g) = atrophied(s, tau);
    classify(s[CH_M], c, g, s[CH_W], s[CH_V])
}

/// Width of the atrophy ramp in score units.
pub(crate) const ATROPHY_RAMP: f32 = 0.15;

/// The fraction of GM turned into CSF at score `score` for threshold `tau`: 0 below
/// `tau`, rising linearly to 1 over [`ATROPHY_RAMP`].
#[inline]
pub(crate) fn atrophy_fraction(score: f32, tau: f32) -> f32 {
    ((score - tau) / ATROPHY_RAMP).clamp(0.0, 1.0)
}

/// (CSF outside the ventricles, GM) after atrophy; voxels touching the ventricles are
/// left alone.
#[inline]
pub(crate) fn atrophied(s: &[f32; 5], tau: f32) -> (f32, f32) {
    let c = (s[CH_M] - s[CH_G] - s[CH_W] - s[CH_V]).max(0.0);
    if s[CH_V] > 0.0 {
        return (c, s[CH_G]);
    }
    let a = atrophy_fraction(s[CH_S], tau);
    (c + s[CH_G] * a, s[CH_G] * (1.0 - a))
}
