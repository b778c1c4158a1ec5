//! CPU kernels of the 3D convolution: GEMMs over tiles of output voxels, never a full im2col.
//!
//! * Stride 1 on large volumes ("shifted views"): the input is zero-padded once; for an output
//!   tile, every kernel tap `(kd, kh, kw)` reads the padded input shifted by a constant flat
//!   offset. On x86-64 with AVX2+FMA the register-blocked kernel of `direct_x86` runs it;
//!   elsewhere (and for 1×1×1 kernels, a plain GEMM) the tile is `Σ_taps W_tap · X_shifted`,
//!   one GEMM per tap. Outputs are computed on the padded (virtual) grid and the valid ones
//!   are scattered out.
//! * Any stride, and small volumes where the padding columns would waste over 10 % of the
//!   work: each tile's windows are gathered into a small im2col buffer (`c_in·taps × tile`)
//!   that one GEMM multiplies by the weight matrix.
//! * The weight gradient of a 3×3×3 stride-1 convolution with at least 16 input channels and
//!   256 output voxels is Winograd's (`winograd::weight_grad`), whatever its output channels;
//!   of the others, it gathers the same im2col tiles and accumulates `G · colᵀ`.
//! * The input gradient of a strided convolution multiplies each tile's output gradient by
//!   the transposed weights and scatters the columns back onto their windows (col2im), the
//!   forward's work; stride-1 input gradients are convolutions (`super::Conv3dOp`).
//!
//! Tiles run in parallel on rayon's pool; each GEMM is single-threaded unless there are too
//! few tiles to occupy the pool.

use super::geometry::ConvGeometry;
use super::im2col::{col2im_tile, im2col_tile};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;
use std::borrow::Cow;
use std::mem::MaybeUninit;

/// Output voxels per tile: the tile's GEMM operands (`c · TILE` floats each) stay in L2.
const TILE: usize = 512;

/// A raw output pointer shared by tiles that write disjoint elements.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: every tile writes a disjoint set of output elements.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the whole `Send + Sync` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Forward convolution of contiguous `x` `[b, c_in, d, h, w]` with `w` `[c_out, c_in, k…]`.
pub(crate) fn conv3d_forward(x: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let out_len = g.batch * g.c_out * g.output_volume();
    let in_stride = g.c_in * g.input_volume();
    let out_stride = g.c_out * g.output_volume();
    if super::winograd::applicable(g) {
        // Written without being zeroed first (zeroing the full-size slabs was measurable:
        // docs/benchmarks.md, "Autoencoder").
        let mut out = Vec::with_capacity(out_len);
        for (xb, ob) in x
            .chunks_exact(in_stride)
            .zip(out.spare_capacity_mut()[..out_len].chunks_exact_mut(out_stride))
        {
            super::winograd::conv3d(xb, w, g, ob);
        }
        // SAFETY: the chunks cover the first `out_len` elements, and the Winograd convolution
        // writes every element of each.
        unsafe { out.set_len(out_len) };
        return out;
    }
    let mut out = vec![0f32; out_len];
    // Stride-1 convolutions on the virtual grid waste the padding columns; past 10 % extra
    // work (small volumes such as the diffusion latents), gathered tiles are cheaper.
    let shifted = g.stride == [1, 1, 1]
        && g.virtual_grid_positions() as f64 <= 1.1 * g.output_volume() as f64;
    for (xb, ob) in x
        .chunks_exact(in_stride)
        .zip(out.chunks_exact_mut(out_stride))
    {
        #[cfg(target_arch = "x86_64")]
        if shifted && g.taps() > 1 && super::direct_x86::available() {
            super::direct_x86::conv3d_stride1(xb, w, g, ob);
            continue;
        }
        if shifted {
            forward_shifted(xb, w, g, ob);
        } else {
            forward_im2col(xb, w, g, ob);
        }
    }
    out
}

/// Gradient of the convolution with respect to its weight: `[c_out, c_in, k…]`.
pub(crate) fn conv3d_weight_grad(x: &[f32], grad_out: &[f32], g: &ConvGeometry) -> Vec<f32> {
    if super::winograd::weight_grad_applicable(g) {
        return super::winograd::weight_grad(x, grad_out, g);
    }
    let rows = g.c_in * g.taps();
    let ovol = g.output_volume();
    let tiles = ovol.div_ceil(TILE);
    let in_stride = g.c_in * g.input_volume();
    let out_stride = g.c_out * ovol;
    let jobs = g.batch * tiles;
    // Fixed contiguous job ranges, summed in order: the result does not depend on how
    // rayon happens to split the work (a `fold`/`reduce` would make it vary run to run).
    let chunks = jobs.min(rayon::current_num_threads().max(8));
    let partials: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map(|chunk| {
            // Written whole by the chunk's first GEMM (so not zeroed first); each chunk has at
            // least one job.
            let mut acc: Vec<f32> = Vec::with_capacity(g.c_out * rows);
            let first = chunk * jobs / chunks;
            with_columns(rows * TILE.min(ovol), |col| {
                for job in first..(chunk + 1) * jobs / chunks {
                    let (b, t) = (job / tiles, job % tiles);
                    let n0 = t * TILE;
                    let nt = TILE.min(ovol - n0);
                    let xb = &x[b * in_stride..(b + 1) * in_stride];
                    let gb = &grad_out[b * out_stride..(b + 1) * out_stride];
                    im2col_tile(xb, g, 0..g.c_in, n0, nt, col, nt);
                    // acc[c_out × rows] (+)= G[c_out × nt] · colᵀ[nt × rows]
                    // SAFETY: all pointers and strides address in-bounds elements of the
                    // slices above (acc's capacity is c_out·rows); the first GEMM writes every
                    // element of acc before any is read.
                    unsafe {
                        gemm(
                            g.c_out,
                            rows,
                            nt,
                            acc.as_mut_ptr(),
                            1,
                            rows as isize,
                            job > first,
                            gb.as_ptr().add(n0),
                            1,
                            ovol as isize,
                            col.as_ptr(),
                            nt as isize,
                            1,
                            1.0,
                            1.0,
                            false,
                            false,
                            false,
                            Parallelism::None,
                        );
                    }
                }
            });
            // SAFETY: the chunk's first GEMM wrote all c_out·rows elements.
            unsafe { acc.set_len(g.c_out * rows) };
            acc
        })
        .collect();
    let mut parts = partials.into_iter();
    let mut grad_w = parts.next().unwrap_or_else(|| vec![0f32; g.c_out * rows]);
    for part in parts {
        grad_w.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
    }
    grad_w
}

/// Gradient of the convolution with respect to its input, `[b, c_in, d, h, w]`, for any
/// stride: per tile of output voxels, `col = Wᵀ · G` scattered back onto the windows the
/// forward gathered ([`col2im_tile`]). Blocks of input channels run in parallel and write
/// disjoint outputs, each summing its tiles in order, so the result does not depend on the
/// thread count.
pub(crate) fn conv3d_input_grad(grad_out: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let taps = g.taps();
    let (ivol, ovol) = (g.input_volume(), g.output_volume());
    let nt_max = TILE.min(ovol);
    // Channels per job: enough jobs for the pool, and a column block (per_block·taps × TILE
    // floats) that stays in L2.
    let threads = rayon::current_num_threads();
    let per_block = g
        .c_in
        .div_ceil(2 * threads)
        .min((COL2IM_ROWS / taps).max(1))
        .max(1);
    let blocks = g.c_in.div_ceil(per_block);
    let mut grad_x = vec![0f32; g.batch * g.c_in * ivol];
    let grad_ptr = SharedMut(grad_x.as_mut_ptr());
    (0..g.batch * blocks).into_par_iter().for_each_init(
        || vec![0f32; per_block * taps * nt_max],
        |col, job| {
            let (b, block) = (job / blocks, job % blocks);
            let channels = block * per_block..((block + 1) * per_block).min(g.c_in);
            let rows = channels.len() * taps;
            // SAFETY: the job's channels of batch item b, written by no other job.
            let gx = unsafe {
                std::slice::from_raw_parts_mut(
                    grad_ptr.get().add((b * g.c_in + channels.start) * ivol),
                    channels.len() * ivol,
                )
            };
            let gb = &grad_out[b * g.c_out * ovol..(b + 1) * g.c_out * ovol];
            for n0 in (0..ovol).step_by(TILE) {
                let nt = TILE.min(ovol - n0);
                // col[rows × nt] = Wᵀ[rows × c_out] · G[c_out × nt], W row-major
                // [c_out × c_in·taps] read transposed from the block's first column.
                // SAFETY: col holds rows·nt floats; W's and G's extents are those read.
                unsafe {
                    gemm(
                        rows,
                        nt,
                        g.c_out,
                        col.as_mut_ptr(),
                        1,
                        nt as isize,
                        false,
                        w.as_ptr().add(channels.start * taps),
                        (g.c_in * taps) as isize,
                        1,
                        gb.as_ptr().add(n0),
                        1,
                        ovol as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                col2im_tile(gx, g, channels.clone(), n0, nt, col, nt);
            }
        },
    );
    grad_x
}

/// Rows of an input-gradient column block: 256 × [`TILE`] floats, 512 KiB.
const COL2IM_ROWS: usize = 256;

thread_local! {
    /// Each thread's column buffer for [`conv3d_weight_grad`], kept between calls (a fresh
    /// zeroed one per call and chunk was measurable in a training step; docs/benchmarks.md,
    /// "Training step").
    static COLUMNS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's column buffer, grown to at least `len` floats (stale contents:
/// `f` must write what it reads).
fn with_columns<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    COLUMNS.with(|columns| match columns.try_borrow_mut() {
        Ok(mut columns) => {
            if columns.len() < len {
                columns.resize(len, 0.0);
            }
            f(&mut columns[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// Stride-1 convolution of one batch item by per-tap GEMMs over shifted views of the padded input.
fn forward_shifted(x: &[f32], w: &[f32], g: &ConvGeometry, out: &mut [f32]) {
    let [(pdb, pda), (phb, pha), (pwb, pwa)] = g.padding;
    let padded_dims = [
        g.input[0] + pdb + pda,
        g.input[1] + phb + pha,
        g.input[2] + pwb + pwa,
    ];
    let xp: Cow<[f32]> = if padded_dims == g.input {
        Cow::Borrowed(x)
    } else {
        Cow::Owned(pad_input(x, g, padded_dims))
    };
    let [_, hp, wp] = padded_dims;
    let plane = hp * wp;
    let vp = padded_dims.iter().product::<usize>();
    let [_, oh, ow] = g.output;
    let taps = g.taps();
    let offsets: Vec<usize> = (0..g.kernel[0])
        .flat_map(|a| (0..g.kernel[1]).flat_map(move |b| (0..g.kernel[2]).map(move |c| (a, b, c))))
        .map(|(a, b, c)| a * plane + b * wp + c)
        .collect();
    // Weights regrouped tap-major, `[taps][c_out][c_in]`, so each tap's matrix is contiguous.
    let mut w_taps = vec![0f32; w.len()];
    for co in 0..g.c_out {
        for ci in 0..g.c_in {
            for t in 0..taps {
                w_taps[(t * g.c_out + co) * g.c_in + ci] = w[(co * g.c_in + ci) * taps + t];
            }
        }
    }
    // Virtual positions n = z·plane + y·wp + x, up to the last valid output voxel.
    let n_total = g.virtual_grid_positions();
    let tiles = n_total.div_ceil(TILE);
    let ovol = g.output_volume();
    let out_ptr = SharedMut(out.as_mut_ptr());
    let (c_out, c_in) = (g.c_out, g.c_in);
    (0..tiles).into_par_iter().for_each_init(
        || vec![0f32; c_out * TILE],
        |acc, t| {
            let n0 = t * TILE;
            let nt = TILE.min(n_total - n0);
            for (tap, off) in offsets.iter().enumerate() {
                // acc[c_out × nt] (+)= W_tap[c_out × c_in] · Xp[c_in × nt] shifted by `off`.
                // SAFETY: n0 + off + nt - 1 ≤ vp - 1 for every tap, so reads stay in `xp`.
                unsafe {
                    multiply(
                        acc.as_mut_ptr(),
                        nt,
                        tap > 0,
                        w_taps.as_ptr().add(tap * c_out * c_in),
                        xp.as_ptr().add(n0 + off),
                        vp,
                        [c_out, nt, c_in],
                    );
                }
            }
            // Scatter the valid columns: runs of consecutive x inside one output row.
            let mut j = 0;
            while j < nt {
                let n = n0 + j;
                let (z, r) = (n / plane, n % plane);
                let (y, xx) = (r / wp, r % wp);
                let row_left = wp - xx;
                if y >= oh || xx >= ow {
                    j += row_left.min(nt - j);
                    continue;
                }
                let run = (ow - xx).min(nt - j);
                let dst0 = z * oh * ow + y * ow + xx;
                for co in 0..c_out {
                    let src = &acc[co * nt + j..co * nt + j + run];
                    // SAFETY: (co, z, y, xx..xx+run) is a valid output index owned by this tile.
                    unsafe {
                        let dst = out_ptr.get().add(co * ovol + dst0);
                        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, run);
                    }
                }
                j += row_left.min(nt - j);
            }
        },
    );
}

/// Zero-pads one batch item `[c_in, d, h, w]` to `padded_dims`.
fn pad_input(x: &[f32], g: &ConvGeometry, padded_dims: [usize; 3]) -> Vec<f32> {
    let [d, h, w] = g.input;
    let [(pdb, _), (phb, _), (pwb, _)] = g.padding;
    let [dp, hp, wp] = padded_dims;
    let mut xp = vec![0f32; g.c_in * dp * hp * wp];
    xp.par_chunks_mut(dp * hp * wp)
        .zip(x.par_chunks(d * h * w))
        .for_each(|(dst, src)| {
            for z in 0..d {
                for y in 0..h {
                    let s = (z * h + y) * w;
                    let t = ((z + pdb) * hp + y + phb) * wp + pwb;
                    dst[t..t + w].copy_from_slice(&src[s..s + w]);
                }
            }
        });
    xp
}

/// Any-stride convolution of one batch item: gathered im2col tiles, one GEMM per tile.
fn forward_im2col(x: &[f32], w: &[f32], g: &ConvGeometry, out: &mut [f32]) {
    let rows = g.c_in * g.taps();
    let ovol = g.output_volume();
    let tiles = ovol.div_ceil(TILE);
    let threads = rayon::current_num_threads();
    if tiles < 2 * threads {
        return forward_im2col_few_tiles(x, w, g, out);
    }
    let out_ptr = SharedMut(out.as_mut_ptr());
    (0..tiles).into_par_iter().for_each_init(
        || vec![0f32; rows * TILE.min(ovol)],
        |col, t| {
            let n0 = t * TILE;
            let nt = TILE.min(ovol - n0);
            im2col_tile(x, g, 0..g.c_in, n0, nt, col, nt);
            // out[c_out × nt] = W[c_out × rows] · col[rows × nt]
            // SAFETY: the tile writes columns n0..n0+nt of every output channel, its own; W
            // and col hold c_out·rows and rows·nt floats.
            unsafe {
                multiply(
                    out_ptr.get().add(n0),
                    ovol,
                    false,
                    w.as_ptr(),
                    col.as_ptr(),
                    nt,
                    [g.c_out, nt, rows],
                )
            };
        },
    );
}

/// [`forward_im2col`] for small volumes: the windows of every voxel gathered at once (in
/// parallel over input channels), then one GEMM per block of output channels, the blocks
/// shared between the threads. (Letting one GEMM over all channels use every thread left
/// its packing to the calling thread while the others waited: `conv3d_time 768 768 3 1 5 7
/// 5`, docs/benchmarks.md.)
fn forward_im2col_few_tiles(x: &[f32], w: &[f32], g: &ConvGeometry, out: &mut [f32]) {
    let (rows, taps) = (g.c_in * g.taps(), g.taps());
    let ovol = g.output_volume();
    let threads = rayon::current_num_threads();
    let per_block = g.c_in.div_ceil(2 * threads).max(1);
    // Zeroed block by block in the tasks that fill them (one thread zeroing tens of megabytes
    // before the gather was measurable).
    let mut col: Vec<f32> = Vec::with_capacity(rows * ovol);
    col.spare_capacity_mut()[..rows * ovol]
        .par_chunks_mut(per_block * taps * ovol)
        .enumerate()
        .for_each(|(b, dst)| {
            dst.fill(MaybeUninit::new(0.0));
            // SAFETY: every element was initialised just above.
            let dst = unsafe { &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]) };
            let channels = b * per_block..((b + 1) * per_block).min(g.c_in);
            im2col_tile(x, g, channels, 0, ovol, dst, ovol);
        });
    // SAFETY: the chunks cover all rows·ovol elements, each initialised above.
    unsafe { col.set_len(rows * ovol) };
    let per_block = g.c_out.div_ceil(2 * threads).max(1);
    out.par_chunks_mut(per_block * ovol)
        .enumerate()
        .for_each(|(b, dst)| {
            let co0 = b * per_block;
            let n = dst.len() / ovol;
            // dst[n × ovol] = W[co0..co0 + n, rows] · col[rows × ovol]
            // SAFETY: dst holds n·ovol floats, W rows co0..co0 + n of `rows` floats, col
            // rows·ovol.
            unsafe {
                multiply(
                    dst.as_mut_ptr(),
                    ovol,
                    false,
                    w.as_ptr().add(co0 * rows),
                    col.as_ptr(),
                    ovol,
                    [n, ovol, rows],
                )
            };
        });
}

/// `out[m × n] = w[m × k] · col[k × n]` (`+=` when `accumulate`) on this thread, all
/// row-major, `out`'s rows `out_stride` floats apart and `col`'s `col_stride`.
///
/// # Safety
/// The pointers must address those extents.
unsafe fn multiply(
    out: *mut f32,
    out_stride: usize,
    accumulate: bool,
    w: *const f32,
    col: *const f32,
    col_stride: usize,
    [m, n, k]: [usize; 3],
) {
    gemm(
        m,
        n,
        k,
        out,
        1,
        out_stride as isize,
        accumulate,
        w,
        1,
        k as isize,
        col,
        1,
        col_stride as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        Parallelism::None,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::test_support::random;
    use crate::conv::Conv3dConfig;

    /// Every stride-1 path (GEMM per tap, gathered tiles, and the x86 microkernel) gives the
    /// same result on volumes that need several tiles, rows and channel blocks.
    #[test]
    fn stride1_paths_agree() {
        let cases = [
            ([1, 5, 9, 17, 21], [13, 5, 3, 3, 3], Conv3dConfig::new(1, 1)),
            ([1, 9, 6, 7, 40], [7, 9, 3, 3, 3], Conv3dConfig::new(1, 1)),
            ([1, 3, 5, 6, 7], [2, 3, 3, 2, 3], Conv3dConfig::new(0, 1)),
        ];
        for (xs, ws, cfg) in cases {
            let g = ConvGeometry::new(&xs, &ws, &cfg).unwrap();
            let x = random(xs.iter().product(), 1);
            let w = random(ws.iter().product(), 2);
            let n = g.c_out * g.output_volume();
            let mut by_gather = vec![0f32; n];
            forward_im2col(&x, &w, &g, &mut by_gather);
            let mut by_taps = vec![0f32; n];
            forward_shifted(&x, &w, &g, &mut by_taps);
            let close = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs()))
            };
            assert!(close(&by_taps, &by_gather), "{xs:?}: GEMM per tap");
            #[cfg(target_arch = "x86_64")]
            if super::super::direct_x86::available() {
                let mut direct = vec![0f32; n];
                super::super::direct_x86::conv3d_stride1(&x, &w, &g, &mut direct);
                assert!(close(&direct, &by_gather), "{xs:?}: x86 microkernel");
            }
        }
    }

    /// The weight gradient matches its definition with padding beyond the kernel's reach
    /// (tiles whose source rows lie wholly in the padding) and is the same bits however
    /// rayon splits the work.
    #[test]
    fn weight_gradient_is_exact_and_deterministic() {
        // Output rows of 27 voxels: the second 512-voxel tile starts at a row's last voxel, whose
        // last taps read past the input row.
        let (xs, ws) = ([2, 3, 5, 6, 23], [4, 3, 3, 3, 3]);
        let g = ConvGeometry::new(&xs, &ws, &Conv3dConfig::new(3, 1)).unwrap();
        let x = random(xs.iter().product(), 3);
        let gy = random(g.batch * g.c_out * g.output_volume(), 4);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        let first = pool.install(|| conv3d_weight_grad(&x, &gy, &g));
        for _ in 0..8 {
            assert_eq!(pool.install(|| conv3d_weight_grad(&x, &gy, &g)), first);
        }
        let [_, _, d, h, w] = xs;
        let [od, oh, ow] = g.output;
        let at = |b: usize, c: usize, z: isize, y: isize, v: isize| -> f64 {
            let inside = (0..d as isize).contains(&z)
                && (0..h as isize).contains(&y)
                && (0..w as isize).contains(&v);
            if inside {
                f64::from(x[(((b * 3 + c) * d + z as usize) * h + y as usize) * w + v as usize])
            } else {
                0.0
            }
        };
        for (i, &got) in first.iter().enumerate() {
            let (co, ci, k) = (i / 81, i / 27 % 3, i % 27);
            let (kd, kh, kw) = ((k / 9) as isize, (k / 3 % 3) as isize, (k % 3) as isize);
            let mut want = 0f64;
            for b in 0..2 {
                for (o, &dy) in gy[(b * 4 + co) * od * oh * ow..][..od * oh * ow]
                    .iter()
                    .enumerate()
                {
                    let (z, y, v) = (
                        (o / (oh * ow)) as isize,
                        (o / ow % oh) as isize,
                        (o % ow) as isize,
                    );
                    want += f64::from(dy) * at(b, ci, z + kd - 3, y + kh - 3, v + kw - 3);
                }
            }
            assert!(
                (f64::from(got) - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "{i}: {got} vs {want}"
            );
        }
    }
}
