//! Register-blocked stride-1 3D convolution for x86-64 with AVX2 and FMA.
//!
//! The input is zero-padded once (plus a tail, so vector loads never leave the buffer). A
//! block of 16 consecutive output columns × 6 output channels lives in 12 AVX registers while
//! the microkernel walks every input channel and kernel tap: each step loads 2 input vectors
//! (the block shifted by the tap's flat offset in the padded volume, so nothing is copied per
//! tap) and broadcasts 6 pre-packed weights. Columns run over the padded ("virtual") grid, or
//! row by row, whichever computes fewer padding positions. Input channels are taken
//! [`CI_CHUNK`] at a time so a block's input rows stay in L1 while every block of output
//! channels reuses them.

use super::geometry::ConvGeometry;
use rayon::prelude::*;
use std::arch::x86_64::*;

/// Output columns per register block (2 AVX vectors).
const NB: usize = 16;
/// Output channels per register block.
const CB: usize = 6;
/// Input channels per cache pass.
const CI_CHUNK: usize = 8;
/// Most register blocks of columns per parallel task.
const BLOCKS_PER_TASK: usize = 8;
/// Most columns per parallel task.
const TN: usize = NB * BLOCKS_PER_TASK;

/// Whether this CPU can run [`conv3d_stride1`].
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// A raw output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: every task writes a disjoint set of output elements.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the whole `Send + Sync` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Stride-1 convolution of one batch item `x` `[c_in, d, h, w]` into `out` `[c_out, od, oh, ow]`.
///
/// Callers must check [`available`] first.
pub(crate) fn conv3d_stride1(x: &[f32], w: &[f32], g: &ConvGeometry, out: &mut [f32]) {
    let packed = pack_weights(w, g);
    shifted(x, &packed, g, out);
}

/// Consecutive columns computed together: the first, how many register blocks, and how many
/// of them (from the first) are written out.
struct Segment {
    start: usize,
    blocks: usize,
    valid: usize,
}

/// Padded sizes of a stride-1 convolution: (plane = hp·wp, wp, channel stride vp).
fn padded_strides(g: &ConvGeometry) -> (usize, usize, usize) {
    let [(pdb, pda), (phb, pha), (pwb, pwa)] = g.padding;
    let [d, h, w] = g.input;
    let (dp, hp, wp) = (d + pdb + pda, h + phb + pha, w + pwb + pwa);
    (hp * wp, wp, dp * hp * wp)
}

/// The tasks of the shifted source, and how many positions they compute.
///
/// Either each output row is a segment (no padding column computed, but a row whose length is
/// not a multiple of [`NB`] ends in a partial block), or the virtual grid is cut in runs of
/// [`TN`] (padding columns computed and dropped), whichever computes fewer positions.
fn shifted_plan(g: &ConvGeometry) -> (Vec<Vec<Segment>>, usize) {
    let (plane, wp, _) = padded_strides(g);
    let [od, oh, ow] = g.output;
    let n_total = g.virtual_grid_positions();
    let row_blocks = ow.div_ceil(NB);
    let by_rows = od * oh * row_blocks * NB;
    let by_grid = n_total.div_ceil(NB) * NB;
    if by_rows <= by_grid {
        let rows_per_task = (BLOCKS_PER_TASK / row_blocks).max(1);
        let rows: Vec<usize> = (0..od * oh).collect();
        let tasks = rows
            .chunks(rows_per_task)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|&r| Segment {
                        start: (r / oh) * plane + (r % oh) * wp,
                        blocks: row_blocks,
                        valid: ow,
                    })
                    .collect()
            })
            .collect();
        (tasks, by_rows)
    } else {
        let tasks = (0..n_total.div_ceil(TN))
            .map(|t| {
                let start = t * TN;
                let valid = TN.min(n_total - start);
                vec![Segment {
                    start,
                    blocks: valid.div_ceil(NB),
                    valid,
                }]
            })
            .collect();
        (tasks, by_grid)
    }
}

/// Stride-1 convolution reading shifted views of the padded input.
fn shifted(x: &[f32], packed: &[f32], g: &ConvGeometry, out: &mut [f32]) {
    let [(pdb, _), (phb, _), (pwb, _)] = g.padding;
    let [d, h, wd] = g.input;
    let (plane, wp, vp) = padded_strides(g);
    let hp = plane / wp;
    // Padded input with a tail of TN floats: blocks past the last valid position read zeros.
    let mut xp = vec![0f32; g.c_in * vp + TN];
    xp[..g.c_in * vp]
        .par_chunks_mut(vp)
        .zip(x.par_chunks(d * h * wd))
        .for_each(|(dst, src)| {
            for z in 0..d {
                for y in 0..h {
                    let s = (z * h + y) * wd;
                    let t = ((z + pdb) * hp + y + phb) * wp + pwb;
                    dst[t..t + wd].copy_from_slice(&src[s..s + wd]);
                }
            }
        });
    let offsets: Vec<usize> = (0..g.kernel[0])
        .flat_map(|a| (0..g.kernel[1]).flat_map(move |b| (0..g.kernel[2]).map(move |c| (a, b, c))))
        .map(|(a, b, c)| a * plane + b * wp + c)
        .collect();
    let (tasks, _) = shifted_plan(g);
    let [_, oh, ow] = g.output;
    let ovol = g.output_volume();
    let out_ptr = SharedMut(out.as_mut_ptr());
    let co_blocks = g.c_out.div_ceil(CB);
    tasks
        .par_iter()
        .for_each_init(Vec::new, |tile: &mut Vec<f32>, segments| {
            let cols: usize = segments.iter().map(|s| s.blocks * NB).sum();
            tile.clear();
            tile.resize(co_blocks * CB * cols, 0.0);
            for ci0 in (0..g.c_in).step_by(CI_CHUNK) {
                let ci1 = (ci0 + CI_CHUNK).min(g.c_in);
                let mut col = 0;
                for seg in segments {
                    for b in 0..seg.blocks {
                        let source = Source {
                            // SAFETY: the tail padding keeps every block's reads inside `xp`.
                            x: unsafe { xp.as_ptr().add(seg.start + b * NB) },
                            channel_stride: vp,
                            channels: ci0..ci1,
                            offsets: &offsets,
                        };
                        accumulate(tile, cols, col + b * NB, &source, packed, ci0, g);
                    }
                    col += seg.blocks * NB;
                }
            }
            let mut col = 0;
            for seg in segments {
                let part = Tile {
                    data: &tile[col..],
                    stride: cols,
                };
                scatter(part, seg, [plane, wp], [oh, ow], g.c_out, ovol, out_ptr);
                col += seg.blocks * NB;
            }
        });
}

/// Where a register block reads its input: for channel `c` of `channels` and tap `t`, the
/// block's 16 columns start at `x + c·channel_stride + offsets[t]`.
struct Source<'a> {
    x: *const f32,
    channel_stride: usize,
    channels: std::ops::Range<usize>,
    offsets: &'a [usize],
}

/// Adds the contribution of `source` (input channels `ci0..`) to columns `col..col + NB` of
/// every output channel of `tile` (rows `cols` apart).
fn accumulate(
    tile: &mut [f32],
    cols: usize,
    col: usize,
    source: &Source,
    packed: &[f32],
    ci0: usize,
    g: &ConvGeometry,
) {
    let taps = g.taps();
    for cb in 0..g.c_out.div_ceil(CB) {
        let width = CB.min(g.c_out - cb * CB);
        let w = &packed[(cb * CB * g.c_in + ci0 * width) * taps..];
        let c = tile[cb * CB * cols + col..].as_mut_ptr();
        // SAFETY: AVX2+FMA were checked by the caller of `conv3d_stride1`; `source` reads stay
        // in its buffer (tail padding); `w` holds the packed weights of
        // these channels; writes stay in `tile`.
        unsafe {
            match width {
                6 => block_kernel::<6>(c, cols, source, w),
                5 => block_kernel::<5>(c, cols, source, w),
                4 => block_kernel::<4>(c, cols, source, w),
                3 => block_kernel::<3>(c, cols, source, w),
                2 => block_kernel::<2>(c, cols, source, w),
                _ => block_kernel::<1>(c, cols, source, w),
            }
        }
    }
}

/// Part of a task's accumulator: output channel `co` starts at `co · stride`.
struct Tile<'a> {
    data: &'a [f32],
    stride: usize,
}

/// Writes the valid outputs of a segment of the shifted source (virtual positions).
fn scatter(
    tile: Tile,
    seg: &Segment,
    [plane, wp]: [usize; 2],
    [oh, ow]: [usize; 2],
    c_out: usize,
    ovol: usize,
    out: SharedMut,
) {
    let mut j = 0;
    while j < seg.valid {
        let n = seg.start + j;
        let (z, r) = (n / plane, n % plane);
        let (y, xx) = (r / wp, r % wp);
        let row_left = (wp - xx).min(seg.valid - j);
        if y < oh && xx < ow {
            let run = (ow - xx).min(seg.valid - j);
            let dst0 = (z * oh + y) * ow + xx;
            for co in 0..c_out {
                let src = &tile.data[co * tile.stride + j..co * tile.stride + j + run];
                // SAFETY: (co, z, y, xx..xx+run) is a valid output index owned by this task.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        src.as_ptr(),
                        out.get().add(co * ovol + dst0),
                        run,
                    );
                }
            }
        }
        j += row_left;
    }
}

/// Weights `[c_out, c_in, taps]` regrouped per block of [`CB`] output channels as
/// `[block][c_in][tap][width]` (width = CB, or fewer in the last block).
fn pack_weights(w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let taps = g.taps();
    let mut packed = Vec::with_capacity(w.len());
    for cb in (0..g.c_out).step_by(CB) {
        let width = CB.min(g.c_out - cb);
        for ci in 0..g.c_in {
            for t in 0..taps {
                for co in cb..cb + width {
                    packed.push(w[(co * g.c_in + ci) * taps + t]);
                }
            }
        }
    }
    packed
}

/// Accumulates `source` into the register block `c` (`W` rows of [`NB`], `stride` apart).
///
/// # Safety
/// AVX2 and FMA must be available; `source.x + c·channel_stride + offset + NB` must stay in
/// its buffer for every channel and offset; `w` must hold `channels·taps·W` packed weights.
#[target_feature(enable = "avx2,fma")]
unsafe fn block_kernel<const W: usize>(c: *mut f32, stride: usize, source: &Source, w: &[f32]) {
    let mut acc = [[_mm256_setzero_ps(); 2]; W];
    for (i, row) in acc.iter_mut().enumerate() {
        row[0] = _mm256_loadu_ps(c.add(i * stride));
        row[1] = _mm256_loadu_ps(c.add(i * stride + 8));
    }
    let mut wp = w.as_ptr();
    for ci in source.channels.clone() {
        let xc = source.x.add(ci * source.channel_stride);
        for &off in source.offsets {
            let xs = xc.add(off);
            let x0 = _mm256_loadu_ps(xs);
            let x1 = _mm256_loadu_ps(xs.add(8));
            for (i, row) in acc.iter_mut().enumerate() {
                let wv = _mm256_broadcast_ss(&*wp.add(i));
                row[0] = _mm256_fmadd_ps(wv, x0, row[0]);
                row[1] = _mm256_fmadd_ps(wv, x1, row[1]);
            }
            wp = wp.add(W);
        }
    }
    for (i, row) in acc.iter().enumerate() {
        _mm256_storeu_ps(c.add(i * stride), row[0]);
        _mm256_storeu_ps(c.add(i * stride + 8), row[1]);
    }
}
