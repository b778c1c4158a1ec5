//! Winograd convolution for 3×3×3 stride-1 convolutions: F(m×m×m, 3×3×3) computes an m×m×m
//! output tile from an (m + 2)³ input tile with (m + 2)³ multiplies per channel pair instead
//! of 27·m³. Two algorithms ([`Algorithm`]):
//!
//! * [`f4::F4`], F(4×4×4, 3×3×3): 216 multiplies per 64 outputs (8× fewer than direct), for
//!   volumes with many tiles. Its transforms (interpolation points 0, 1, −1, 2, −½, ∞) have
//!   larger coefficients, so it rounds more: about 1e-5 of the output's scale in f32 against
//!   1e-6 for F(2, 3).
//! * [`f2::F2`], F(2×2×2, 3×3×3): 64 multiplies per 8 outputs, for small volumes with many
//!   channels, where F(4, 3)'s larger tiles would mostly cover padding.
//!
//! Each applies its 1D matrices along every axis: weights `g` become `U = G g Gᵀ`,
//! overlapping input tiles `d` (stride m, zeros outside the input) become `V = Bᵀ d B`, and for
//! each transformed tap `ξ` one GEMM gives `M[ξ] = U[ξ] · V[ξ]` (`c_out × c_in` times
//! `c_in × tiles`); each output tile is `Aᵀ M A`. Tiles are numbered depth-, then height-, then
//! width-major and processed a chunk at a time ([`CHUNK_TILES`] tiles per chunk when there
//! are many), in three parallel phases: input transform (per input channel), GEMMs (per block
//! of output channels and taps), output transform (per output channel). Transforms run on
//! blocks of [`NT`] consecutive tiles, one per lane, so every step is an elementwise operation
//! on `NT`-float arrays; where tile rows are shorter than `NT` (the UNet's latents), a block
//! spans several rows. The GEMMs run a register-blocked microkernel for AVX-512,
//! AVX2+FMA or plain Rust, chosen at run time; all three sum in the same order and give the
//! same floats.
//!
//! The weight gradient of these convolutions uses the same algorithms (`weight_grad`), and so
//! does that of 3×3×3 stride-1 convolutions with fewer than 16 output channels.

use super::geometry::ConvGeometry;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::Mutex;

/// Tiles per transform block (consecutive in tile order).
const NT: usize = 16;
/// Tiles per chunk when there are many (a multiple of [`NT`]).
const CHUNK_TILES: usize = 32;
/// Output channels per register block (and per block of packed weights).
const CB: usize = 6;
/// Most input channels per pass of the microkernel (its V panel, KC·NT floats, stays in L1).
const KC: usize = 256;
/// How far ahead (floats) the microkernels prefetch the transformed weights they stream
/// (`conv3d_time 512 512 3 1 20 28 20` on F(2, 3): 0.44 s without the hint, 0.33 s with it).
const U_PREFETCH: usize = 256;
/// Fewest input or output channels for which this path beats the direct kernels.
const MIN_CHANNELS: usize = 16;
/// Fewest output voxels for which this path beats the direct GEMM, whose weights need no
/// transform (medians of `conv3d_time C_IN C_OUT 3 1 D H W 7`, Winograd against direct on a
/// build that could force either): on 5×7×5 (175 voxels) 0.0102 s against 0.0055 s at
/// 384→192 channels, 0.0041 against 0.0029 s at 192→192, 0.0023 s both at 128→128; on 6×8×6
/// (288) 0.0088 against 0.0076 s at 256→256, 0.0315 against 0.0314 s at 512→512; on 8×8×8
/// (512) 0.0103 against 0.0122 s at 256→256, 0.0399 against 0.0527 s at 512→512.
const MIN_VOXELS: usize = 256;

/// Whether [`conv3d`] computes this convolution: 3×3×3, stride 1, enough channels, and at
/// least [`MIN_VOXELS`] output voxels.
pub(super) fn applicable(g: &ConvGeometry) -> bool {
    g.kernel == [3, 3, 3]
        && g.stride == [1, 1, 1]
        && g.c_in >= MIN_CHANNELS
        && g.c_out >= MIN_CHANNELS
        && g.output_volume() >= MIN_VOXELS
}

/// A raw pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: every task writes a disjoint set of elements.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the whole `Send + Sync` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Up to [`NT`] consecutive tiles (in linear order), one per lane of the transforms, stored
/// from column `off` of the chunk's buffers. Where the tile rows are shorter than `NT`, a block
/// spans several of them, so that the transforms work on full lanes.
struct Block {
    off: usize,
    n: usize,
    runs: Vec<Run>,
}

/// The tiles `(tz, ty, tx0..tx0 + n)` of a [`Block`], one tile row's part of it, in lanes
/// `lane..lane + n`.
struct Run {
    tz: usize,
    ty: usize,
    tx0: usize,
    n: usize,
    lane: usize,
}

/// The blocks of tiles `range` (linear indices over a `[ntd, nth, ntw]` tile grid): [`NT`]
/// tiles each but the last.
fn blocks(tiles: [usize; 3], range: Range<usize>) -> Vec<Block> {
    let [_, nth, ntw] = tiles;
    range
        .clone()
        .step_by(NT)
        .map(|first| {
            let end = (first + NT).min(range.end);
            let mut runs = Vec::new();
            let mut t = first;
            while t < end {
                let (row, tx0) = (t / ntw, t % ntw);
                let n = (ntw - tx0).min(end - t);
                runs.push(Run {
                    tz: row / nth,
                    ty: row % nth,
                    tx0,
                    n,
                    lane: t - first,
                });
                t += n;
            }
            Block {
                off: first - range.start,
                n: end - first,
                runs,
            }
        })
        .collect()
}

/// 3×3×3 stride-1 convolution of one batch item `x` `[c_in, d, h, w]` into `out`
/// `[c_out, od, oh, ow]`, writing every element (`out` need not be initialised); callers check
/// [`applicable`] first.
///
/// F(4, 3) runs where it has at least 64 tiles, F(2, 3) below; either runs all tiles as one
/// chunk ([`few_tiles`]) when its weights dominate (many channels, few tiles), else chunk by
/// chunk ([`many_tiles`]). The rule comes from medians of `cargo run --release -p brain-ldm-nn
/// --example conv3d_time -- C_IN C_OUT 3 1 D H W 5` on a build that could force each path
/// (F(2, 3) many / F(4, 3) many / F(4, 3) few): on 20×28×20 (175 tiles of F(4, 3)),
/// 512→512 0.418 / 0.271 / 0.253 s, 256→256 0.099 / 0.083 / 0.068 s, 192→192 0.066 / 0.040 /
/// 0.043 s; on 10×14×10 (36 tiles), 128→128 took 0.0058 s with F(2, 3) against 0.0094 s, and
/// 512→512 0.063 s (F(2, 3), few) against 0.116 s (F(4, 3), few).
pub(super) fn conv3d(x: &[f32], w: &[f32], g: &ConvGeometry, out: &mut [MaybeUninit<f32>]) {
    let dst = OutDest {
        out: SharedMut(out.as_mut_ptr().cast()),
        len: out.len(),
    };
    let small = tile_grid::<F2>(g);
    let large = tile_grid::<F4>(g);
    let (c_in, c_out) = (g.c_in, g.c_out);
    let large_tiles: usize = large.iter().product();
    if large_tiles >= 64 {
        if 2 * large_tiles * (c_in + c_out) <= 3 * c_in * c_out {
            few_tiles::<F4>(x, w, g, large, dst);
        } else {
            many_tiles::<F4>(x, w, g, large, dst);
        }
    } else if small.iter().product::<usize>() * (c_in + c_out) <= c_in * c_out {
        few_tiles::<F2>(x, w, g, small, dst);
    } else {
        many_tiles::<F2>(x, w, g, small, dst);
    }
}

/// Tiles of algorithm `A` along each axis of the output.
fn tile_grid<A: Algorithm>(g: &ConvGeometry) -> [usize; 3] {
    g.output.map(|n| n.div_ceil(A::M))
}

/// One Winograd algorithm F(m×m×m, 3×3×3): its tile sizes and transforms.
trait Algorithm {
    /// Output tile edge `m`; input tiles are `(m + 2)³`, `m` apart.
    const M: usize;
    /// Transformed taps per tile, `(m + 2)³`.
    const TAPS: usize;

    /// Writes `U = G g Gᵀ` of `W` output channels `co0..co0 + W` into `dst`
    /// `[ξ][c_in][W]`.
    fn transform_weights_w<const W: usize>(w: &[f32], c_in: usize, co0: usize, dst: &mut [f32]);

    /// Writes `V = Bᵀ d B` of one input channel `x` `[d, h, w]` for the tiles of `blocks` to
    /// `dst`, prefetching the rows it reads from `next` (the next channel, or empty).
    fn input_transform(x: &[f32], next: &[f32], g: &ConvGeometry, blocks: &[Block], dst: VDest);

    /// Writes `Aᵀ M A` of output channel `co` (`m` `[ξ][tc]`) for the tiles of `blocks` to
    /// `out`, dropping the positions past the output's end.
    fn output_transform(
        m: &[f32],
        tc: usize,
        blocks: &[Block],
        g: &ConvGeometry,
        out: OutDest,
        co: usize,
    );

    /// Writes `A Ȳ Aᵀ` (the adjoint of the output transform) of one output channel's gradient
    /// `grad` `[od, oh, ow]` for the tiles of `blocks` to `dst`, zeros standing for the
    /// positions past the output's end.
    fn grad_transform(grad: &[f32], g: &ConvGeometry, blocks: &[Block], dst: VDest);

    /// Writes `Gᵀ Ū G` (the adjoint of the weight transform) of output channel `co` of `du`
    /// `[ξ][c_out][c_in]` to `dst` `[c_in][27]`, the weight gradient of that channel.
    fn weight_adjoint(du: &[f32], c_out: usize, c_in: usize, co: usize, dst: &mut [f32]);
}

/// Writes `U = G g Gᵀ` of output channels `co0..co0 + width` into `dst` `[ξ][c_in][width]`
/// (`width = dst.len() / (TAPS·c_in)`, at most [`CB`]).
fn transform_weights<A: Algorithm>(w: &[f32], c_in: usize, co0: usize, dst: &mut [f32]) {
    match dst.len() / (A::TAPS * c_in) {
        6 => A::transform_weights_w::<6>(w, c_in, co0, dst),
        5 => A::transform_weights_w::<5>(w, c_in, co0, dst),
        4 => A::transform_weights_w::<4>(w, c_in, co0, dst),
        3 => A::transform_weights_w::<3>(w, c_in, co0, dst),
        2 => A::transform_weights_w::<2>(w, c_in, co0, dst),
        _ => A::transform_weights_w::<1>(w, c_in, co0, dst),
    }
}

/// Where the output transform writes: `out` of `len` floats, `[c_out, od, oh, ow]`.
#[derive(Clone, Copy)]
struct OutDest {
    out: SharedMut,
    len: usize,
}

/// One scratch buffer per thread of rayon's pool, for tasks that make no nested rayon calls.
struct PerThread(Vec<Mutex<Vec<f32>>>);

impl PerThread {
    /// Buffers for every thread of the current pool (allocated on first use).
    fn new() -> Self {
        Self(
            (0..rayon::current_num_threads())
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
        )
    }

    /// Runs `f` on this thread's buffer, grown to at least `len` floats (zeros at first).
    fn with(&self, len: usize, f: impl FnOnce(&mut [f32])) {
        let i = rayon::current_thread_index().unwrap_or(0) % self.0.len().max(1);
        match self.0.get(i).map(Mutex::lock) {
            Some(Ok(mut buf)) => {
                if buf.len() < len {
                    buf.resize(len, 0.0);
                }
                f(&mut buf[..len]);
            }
            _ => f(&mut vec![0f32; len]),
        }
    }
}

/// Many tiles per weight: the transformed weights are computed once, and parallel tasks run
/// chunks of [`CHUNK_TILES`] tiles through the three phases in per-thread scratch (a chunk's V
/// and M, `(c_in + c_out)·TAPS·CHUNK_TILES` floats, are read back from cache: L2 for F(2, 3)
/// up to 256 channels in all, L3 for F(4, 3)).
fn many_tiles<A: Algorithm>(
    x: &[f32],
    w: &[f32],
    g: &ConvGeometry,
    tiles: [usize; 3],
    out: OutDest,
) {
    let (c_in, c_out) = (g.c_in, g.c_out);
    let total: usize = tiles.iter().product();
    let mut u = vec![0f32; c_out * A::TAPS * c_in];
    u.par_chunks_mut(CB * A::TAPS * c_in)
        .enumerate()
        .for_each(|(cb, dst)| transform_weights::<A>(w, c_in, cb * CB, dst));
    let tc = CHUNK_TILES;
    let vol = g.input_volume();
    let scratch = PerThread::new();
    (0..total.div_ceil(tc)).into_par_iter().for_each(|c| {
        let v_len = A::TAPS * v_tap_stride(tc / NT, c_in);
        scratch.with(v_len + c_out * A::TAPS * tc, |buf| {
            let (v, m) = buf.split_at_mut(v_len);
            let range = c * tc..((c + 1) * tc).min(total);
            let nt = range.len();
            let blocks = blocks(tiles, range);
            let vp = SharedMut(v.as_mut_ptr());
            for (ci, xc) in x.chunks_exact(vol).enumerate() {
                A::input_transform(
                    xc,
                    x.get((ci + 1) * vol..(ci + 2) * vol).unwrap_or(&[]),
                    g,
                    &blocks,
                    VDest {
                        v: vp,
                        stream: false,
                        tap_stride: v_tap_stride(tc / NT, c_in),
                        c_in,
                        ci,
                    },
                );
            }
            let mm = Gemms {
                c_in,
                taps: A::TAPS,
                nt,
                groups: tc / NT,
                v_tap_stride: v_tap_stride(tc / NT, c_in),
                v,
                m: SharedMut(m.as_mut_ptr()),
            };
            for xi in 0..A::TAPS {
                mm.run(&u, 0..c_out, xi);
            }
            for (co, mc) in m.chunks_exact(A::TAPS * tc).enumerate() {
                A::output_transform(mc, tc, &blocks, g, out, co);
            }
        });
    });
}

/// Few tiles per weight (small volumes, many channels): all tiles form one chunk, processed
/// in three parallel phases; the GEMM tasks (blocks of output channels) transform their
/// weights into per-thread scratch, so the transformed weights never exist whole.
fn few_tiles<A: Algorithm>(
    x: &[f32],
    w: &[f32],
    g: &ConvGeometry,
    tiles: [usize; 3],
    out: OutDest,
) {
    let (c_in, c_out) = (g.c_in, g.c_out);
    let total: usize = tiles.iter().product();
    let groups = total.div_ceil(NT);
    let tc = groups * NT;
    let v_len = A::TAPS * v_tap_stride(groups, c_in);
    let mut v_buf = Scratch::take(v_len + 16);
    let align = v_buf.as_ptr().align_offset(64).min(16);
    let v = &mut v_buf[align..align + v_len];
    let mut m_buf = Scratch::take(c_out * A::TAPS * tc);
    let m = &mut m_buf[..c_out * A::TAPS * tc];
    let blocks = blocks(tiles, 0..total);
    let vp = SharedMut(v.as_mut_ptr());
    let vol = g.input_volume();
    x.par_chunks(vol).enumerate().for_each(|(ci, xc)| {
        A::input_transform(
            xc,
            x.get((ci + 1) * vol..(ci + 2) * vol).unwrap_or(&[]),
            g,
            &blocks,
            VDest {
                v: vp,
                stream: (vp.get() as usize).is_multiple_of(64),
                tap_stride: v_tap_stride(groups, c_in),
                c_in,
                ci,
            },
        );
        store_fence();
    });
    let mm = Gemms {
        c_in,
        taps: A::TAPS,
        nt: total,
        groups,
        v_tap_stride: v_tap_stride(groups, c_in),
        v,
        m: SharedMut(m.as_mut_ptr()),
    };
    let threads = rayon::current_num_threads();
    let per_task = c_out.div_ceil(4 * threads).div_ceil(CB).clamp(1, 8) * CB;
    let scratch = PerThread::new();
    (0..c_out.div_ceil(per_task))
        .into_par_iter()
        .for_each(|task| {
            let cos = task * per_task..((task + 1) * per_task).min(c_out);
            scratch.with(cos.len() * A::TAPS * c_in, |u| {
                for (k, dst) in u.chunks_mut(CB * A::TAPS * c_in).enumerate() {
                    transform_weights::<A>(w, c_in, cos.start + k * CB, dst);
                }
                for xi in 0..A::TAPS {
                    mm.run(u, cos.clone(), xi);
                }
            });
        });
    m.par_chunks(A::TAPS * tc)
        .enumerate()
        .for_each(|(co, mc)| A::output_transform(mc, tc, &blocks, g, out, co));
    Scratch::give_back(v_buf);
    Scratch::give_back(m_buf);
}

/// Buffers kept from one [`few_tiles`] call to the next: V and M of a small volume with many
/// channels are tens of megabytes, and a fresh buffer costs a page fault and a page clear per
/// 4 KiB on first write (keeping them took page clearing from 6.7 % to 4.8 % of a bundle UNet
/// forward, `perf record target/release/examples/unet_forward 2`). Their stale contents are never
/// read: the input transform writes every tile the GEMMs read, and the GEMMs every entry of
/// M the output transform reads (columns past the last tile hold garbage nobody reads).
struct Scratch;

/// The kept buffers (at most [`Scratch::KEPT`]).
static SCRATCH: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

impl Scratch {
    /// Most buffers kept.
    const KEPT: usize = 2;

    /// A buffer of at least `len` floats: the shortest kept one that is long enough (stale
    /// contents, kept at its full length so that no call zeroes it again), or a new one of
    /// `len` zeros.
    fn take(len: usize) -> Vec<f32> {
        let kept = SCRATCH.lock().ok().and_then(|mut kept| {
            let (i, _) = kept
                .iter()
                .enumerate()
                .filter(|(_, b)| b.len() >= len)
                .min_by_key(|(_, b)| b.len())?;
            Some(kept.swap_remove(i))
        });
        kept.unwrap_or_else(|| vec![0.0; len])
    }

    /// Keeps `buf` for a later [`Scratch::take`], in place of a smaller one when full.
    fn give_back(buf: Vec<f32>) {
        let Ok(mut kept) = SCRATCH.lock() else {
            return;
        };
        if kept.len() < Self::KEPT {
            kept.push(buf);
        } else if let Some(smallest) = kept.iter_mut().min_by_key(|b| b.len()) {
            if smallest.len() < buf.len() {
                *smallest = buf;
            }
        }
    }
}

/// Floats of V per transformed tap for `groups` groups of [`NT`] tiles: one cache line more
/// than the tap's `groups·c_in·NT`, so that the rows one channel's input transform writes for
/// a block of tiles (one per tap) are not a multiple of 4 KiB apart (`conv3d_time C C 3 1 20 28
/// 20 9`, two runs each: 256→256 0.067, 0.067 s against 0.072, 0.075 s unpadded; 128→128 on
/// 40×56×40 0.116, 0.113 s against 0.117, 0.119 s).
fn v_tap_stride(groups: usize, c_in: usize) -> usize {
    groups * c_in * NT + NT
}

/// Where the input transform of channel `ci` writes: tile `t` of tap `ξ` goes to
/// `v[ξ·tap_stride + (t / NT·c_in + ci)·NT + t % NT]` (see [`v_tap_stride`]).
#[derive(Clone, Copy)]
struct VDest {
    v: SharedMut,
    /// Whether full rows go past the caches (`v` 64-byte aligned): the whole-volume V of
    /// [`few_tiles`] is larger than the caches and read back only by the GEMMs, so writing it
    /// without first reading each line saves memory traffic (`conv3d_time C_IN C_OUT 3 1 D H
    /// W 7`, two runs each: 512→512 on 20×28×20 0.236, 0.221 s against 0.258, 0.253 s without;
    /// 768→256 0.189, 0.187 s against 0.222, 0.214 s; 512→512 on 10×14×10 0.060, 0.060 s
    /// against 0.063, 0.069 s).
    stream: bool,
    tap_stride: usize,
    c_in: usize,
    ci: usize,
}

/// The `taps` GEMMs of one chunk, `M[co][ξ][t] = Σ_ci U[ξ][co][ci] · V[ξ][ci][t]` for `t < nt`:
/// V packed as `[ξ][t / NT][ci][t % NT]`, taps `v_tap_stride` apart (see [`VDest`]), M as
/// `[c_out][ξ][groups·NT]`.
struct Gemms<'a> {
    c_in: usize,
    taps: usize,
    nt: usize,
    groups: usize,
    v_tap_stride: usize,
    v: &'a [f32],
    m: SharedMut,
}

impl Gemms<'_> {
    /// Tap `xi` for output channels `cos` (starting a block of [`CB`]), with `u` their
    /// transformed weights packed by [`transform_weights`], block after block.
    fn run(&self, u: &[f32], cos: Range<usize>, xi: usize) {
        let (c_in, taps, tc) = (self.c_in, self.taps, self.groups * NT);
        let k_blocks = c_in.div_ceil(KC);
        let kc = c_in.div_ceil(k_blocks);
        let n_groups = self.nt.div_ceil(NT);
        let step = if avx512_available() { 2 } else { 1 };
        for tg in (0..n_groups).step_by(step) {
            let pair = step.min(n_groups - tg);
            let wide = pair > 1 || self.nt - tg * NT > NT / 2;
            for k0 in (0..c_in).step_by(kc) {
                let k = kc.min(c_in - k0);
                let first = xi * self.v_tap_stride + (tg * c_in + k0) * NT;
                let vs = &self.v[first..first + (pair - 1) * c_in * NT + k * NT];
                for co0 in cos.clone().step_by(CB) {
                    let width = CB.min(cos.end - co0);
                    let us = &u[(co0 - cos.start) * taps * c_in + (xi * c_in + k0) * width..]
                        [..k * width];
                    let panel = Panel {
                        u: us,
                        v: vs,
                        group_stride: c_in * NT,
                        // SAFETY: row co0 + i of M starts at (co0 + i)·taps·tc; tap xi and groups
                        // tg..tg + pair are columns xi·tc + tg·NT + (0..pair·NT) of it, all
                        // inside M (c_out·taps·tc floats) and written by this task only.
                        m: unsafe { self.m.get().add(co0 * taps * tc + xi * tc + tg * NT) },
                        m_stride: taps * tc,
                        accumulate: k0 > 0,
                    };
                    panel.multiply(width, pair, wide);
                }
            }
        }
    }
}

/// Whether this CPU runs the AVX-512 microkernel (two groups of [`NT`] tiles per call).
fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One register block: `m[i·m_stride + g·NT + j] (+)= Σ_k u[k·width + i] · v[g·group_stride +
/// k·NT + j]` for `i < width ≤ CB`, each of `pairs ≤ 2` groups `g` of tiles and `j < NT` (or
/// `NT / 2` when not wide). Every product is summed in the same order (over k) by every
/// kernel, so all of them give the same floats.
struct Panel<'a> {
    u: &'a [f32],
    v: &'a [f32],
    group_stride: usize,
    m: *mut f32,
    m_stride: usize,
    accumulate: bool,
}

impl Panel<'_> {
    /// Runs the microkernel for `width` output channels and `pair` groups of tiles (2 only
    /// when [`avx512_available`]).
    fn multiply(&self, width: usize, pair: usize, wide: bool) {
        #[cfg(target_arch = "x86_64")]
        if avx512_available() {
            // SAFETY: AVX-512F is available (checked just above); `u` holds k·width floats,
            // `v` (pair − 1)·group_stride + k·NT, and `m` has `width` rows of pair·NT
            // writable floats (see `Gemms::run`).
            unsafe { self.multiply_avx512(width, pair) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA are available (checked just above); `u` holds k·width and
            // `v` k·NT floats, and `m` has `width` rows of NT writable floats (see `Gemms::run`).
            unsafe { self.multiply_avx2(width, wide) };
            return;
        }
        self.portable(width);
    }

    /// [`kernel_avx512`] for `width` output channels and `pair` groups.
    ///
    /// # Safety
    /// As [`kernel_avx512`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn multiply_avx512(&self, width: usize, pair: usize) {
        match (width, pair) {
            (6, 2) => kernel_avx512::<6, 2>(self),
            (6, _) => kernel_avx512::<6, 1>(self),
            (5, 2) => kernel_avx512::<5, 2>(self),
            (5, _) => kernel_avx512::<5, 1>(self),
            (4, 2) => kernel_avx512::<4, 2>(self),
            (4, _) => kernel_avx512::<4, 1>(self),
            (3, 2) => kernel_avx512::<3, 2>(self),
            (3, _) => kernel_avx512::<3, 1>(self),
            (2, 2) => kernel_avx512::<2, 2>(self),
            (2, _) => kernel_avx512::<2, 1>(self),
            (_, 2) => kernel_avx512::<1, 2>(self),
            (_, _) => kernel_avx512::<1, 1>(self),
        }
    }

    /// [`kernel_avx2`] for `width` output channels, all [`NT`] columns when `wide`.
    ///
    /// # Safety
    /// As [`kernel_avx2`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn multiply_avx2(&self, width: usize, wide: bool) {
        match (width, wide) {
            (6, true) => kernel_avx2::<6, 2>(self),
            (6, false) => kernel_avx2::<6, 1>(self),
            (5, true) => kernel_avx2::<5, 2>(self),
            (5, false) => kernel_avx2::<5, 1>(self),
            (4, true) => kernel_avx2::<4, 2>(self),
            (4, false) => kernel_avx2::<4, 1>(self),
            (3, true) => kernel_avx2::<3, 2>(self),
            (3, false) => kernel_avx2::<3, 1>(self),
            (2, true) => kernel_avx2::<2, 2>(self),
            (2, false) => kernel_avx2::<2, 1>(self),
            (_, true) => kernel_avx2::<1, 2>(self),
            (_, false) => kernel_avx2::<1, 1>(self),
        }
    }

    /// The microkernel in plain Rust (one group, all NT columns), with fused multiply-adds
    /// as the SIMD kernels use, so that it gives the same floats.
    fn portable(&self, width: usize) {
        let mut acc = [[0f32; NT]; CB];
        for (i, row) in acc.iter_mut().take(width).enumerate() {
            if self.accumulate {
                // SAFETY: `m` has `width` rows of NT readable floats, `m_stride` apart.
                *row = unsafe {
                    self.m
                        .add(i * self.m_stride)
                        .cast::<[f32; NT]>()
                        .read_unaligned()
                };
            }
        }
        let k = self.u.len() / width;
        for (k, vk) in self.v.chunks_exact(NT).take(k).enumerate() {
            for (i, row) in acc.iter_mut().take(width).enumerate() {
                let u = self.u[k * width + i];
                for (a, &x) in row.iter_mut().zip(vk) {
                    *a = u.mul_add(x, *a);
                }
            }
        }
        for (i, row) in acc.iter().take(width).enumerate() {
            // SAFETY: `m` has `width` rows of NT writable floats, `m_stride` apart.
            unsafe {
                self.m
                    .add(i * self.m_stride)
                    .cast::<[f32; NT]>()
                    .write_unaligned(*row)
            };
        }
    }
}

/// The microkernel with `W` output channels × `NV` vectors of 8 columns in registers.
///
/// # Safety
/// AVX2 and FMA must be available; `p` must satisfy the bounds of [`Panel`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2<const W: usize, const NV: usize>(p: &Panel) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); NV]; W];
    if p.accumulate {
        for (i, row) in acc.iter_mut().enumerate() {
            for (j, a) in row.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(p.m.add(i * p.m_stride + 8 * j));
            }
        }
    }
    let k = p.u.len() / W;
    let (mut u, mut v) = (p.u.as_ptr(), p.v.as_ptr());
    for _ in 0..k {
        _mm_prefetch::<_MM_HINT_T0>(u.wrapping_add(U_PREFETCH).cast());
        let mut x = [_mm256_setzero_ps(); NV];
        for (j, xj) in x.iter_mut().enumerate() {
            *xj = _mm256_loadu_ps(v.add(8 * j));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let b = _mm256_broadcast_ss(&*u.add(i));
            for (a, &xj) in row.iter_mut().zip(&x) {
                *a = _mm256_fmadd_ps(b, xj, *a);
            }
        }
        u = u.add(W);
        v = v.add(NT);
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, a) in row.iter().enumerate() {
            _mm256_storeu_ps(p.m.add(i * p.m_stride + 8 * j), *a);
        }
    }
}

/// The microkernel with `W` output channels × `G` groups of tiles, one AVX-512 vector of
/// [`NT`] columns each.
///
/// # Safety
/// AVX-512F must be available; `p` must satisfy the bounds of [`Panel`] for `G` groups.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_avx512<const W: usize, const G: usize>(p: &Panel) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); G]; W];
    if p.accumulate {
        for (i, row) in acc.iter_mut().enumerate() {
            for (g, a) in row.iter_mut().enumerate() {
                *a = _mm512_loadu_ps(p.m.add(i * p.m_stride + g * NT));
            }
        }
    }
    let k = p.u.len() / W;
    let (mut u, mut v) = (p.u.as_ptr(), p.v.as_ptr());
    for _ in 0..k {
        _mm_prefetch::<_MM_HINT_T0>(u.wrapping_add(U_PREFETCH).cast());
        let mut x = [_mm512_setzero_ps(); G];
        for (g, xg) in x.iter_mut().enumerate() {
            *xg = _mm512_loadu_ps(v.add(g * p.group_stride));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let b = _mm512_set1_ps(*u.add(i));
            for (a, &xg) in row.iter_mut().zip(&x) {
                *a = _mm512_fmadd_ps(b, xg, *a);
            }
        }
        u = u.add(W);
        v = v.add(NT);
    }
    for (i, row) in acc.iter().enumerate() {
        for (g, a) in row.iter().enumerate() {
            _mm512_storeu_ps(p.m.add(i * p.m_stride + g * NT), *a);
        }
    }
}

/// Runs `$body` (an expression using only the arguments) compiled for AVX-512F, else for
/// AVX2+FMA, when the CPU has them, else for the baseline target. Rust never fuses a multiply
/// and an add by itself, so every version computes the same floats.
macro_rules! multiversion {
    ($(#[$attr:meta])* fn $name:ident$(<const $c:ident: usize>)?($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$attr])*
        fn $name$(<const $c: usize>)?($($arg: $ty),*) {
            #[inline(always)]
            fn portable$(<const $c: usize>)?($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512$(<const $c: usize>)?($($arg: $ty),*) {
                    portable$(::<$c>)?($($arg),*)
                }
                if avx512_available() {
                    // SAFETY: the CPU supports AVX-512F (checked just above), and so AVX2 and
                    // FMA.
                    unsafe { avx512$(::<$c>)?($($arg),*) };
                    return;
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2$(<const $c: usize>)?($($arg: $ty),*) {
                    portable$(::<$c>)?($($arg),*)
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    unsafe { avx2$(::<$c>)?($($arg),*) };
                    return;
                }
            }
            portable$(::<$c>)?($($arg),*)
        }
    };
}

/// `dst.copy_from_slice(src)` for slices shorter than 128 floats, as at most seven fixed-size
/// copies (the compiler inlines them, where a copy of variable length calls `memcpy`, which
/// costs more than these short copies themselves).
#[inline(always)]
fn copy_short(src: &[f32], dst: &mut [f32]) {
    let mut at = 0;
    for piece in [64, 32, 16, 8, 4, 2, 1] {
        if src.len() - at >= piece {
            dst[at..at + piece].copy_from_slice(&src[at..at + piece]);
            at += piece;
        }
    }
}

/// The entries of `NT` overlapping tiles along one input row: `t[e][k] = span[S·k + e]` (tile
/// `k` reads columns `S·k..S·k + E`; `S ≤ E ≤ 2S`).
#[inline(always)]
fn split_row<const S: usize, const E: usize>(span: &[f32], t: &mut [[f32; NT]; E]) {
    deinterleave::<S>(&span[..S * NT], &mut t[..S]);
    // Entry e ≥ S of tile k is entry e − S of tile k + 1.
    for e in S..E {
        let (head, tail) = t.split_at_mut(e);
        tail[0][..NT - 1].copy_from_slice(&head[e - S][1..]);
        tail[0][NT - 1] = span[S * (NT - 1) + e];
    }
}

/// `dst[e][k] = src[S·k + e]` for `e < S`, `k < NT` (`S` is 2 or 4; `src` holds `S·NT`
/// floats): shuffles within AVX registers where the CPU has AVX, else element by element.
/// Element by element, a third of the F(4, 3) input transform's samples were single-float
/// moves (`perf annotate`, the autoencoder's training step); with the shuffles, forward passes
/// take 13–15 % less (an AMD EPYC with AVX2, means of eight alternated medians of `cargo run
/// --release -p brain-ldm-nn --example conv3d_time -- C C 3 1 D H W 15`: 32→32 on 40×56×40
/// 0.0253 → 0.0220 s, 64→64 on 20×28×20 0.0149 → 0.0129 s, 128→128 on 10×14×10 by F(2, 3)
/// 0.0103 → 0.0088 s).
#[inline(always)]
fn deinterleave<const S: usize>(src: &[f32], dst: &mut [[f32; NT]]) {
    const { assert!(S == 2 || S == 4) };
    assert!(src.len() == S * NT && dst.len() == S);
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx") {
        // SAFETY: AVX is available; the lengths are checked above.
        unsafe { deinterleave_avx::<S>(src, dst) };
        return;
    }
    for (e, row) in dst.iter_mut().enumerate() {
        for (k, v) in row.iter_mut().enumerate() {
            *v = src[S * k + e];
        }
    }
}

/// [`deinterleave`] by shuffles within the halves of AVX registers, each half loaded with the
/// floats of different tiles so that the results come out in tile order.
///
/// # Safety
/// AVX must be available; `src` must hold `S·NT` floats and `dst` `S` rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn deinterleave_avx<const S: usize>(src: &[f32], dst: &mut [[f32; NT]]) {
    use std::arch::x86_64::*;
    let p = src.as_ptr();
    for k0 in (0..NT).step_by(8) {
        let q = S * k0;
        if S == 4 {
            // Register j: tile k0 + j in the low half, k0 + 4 + j in the high half; a 4×4
            // transpose within each half puts entry e of the eight tiles in register e.
            let a = halves(p.add(q), p.add(q + 16));
            let b = halves(p.add(q + 4), p.add(q + 20));
            let c = halves(p.add(q + 8), p.add(q + 24));
            let d = halves(p.add(q + 12), p.add(q + 28));
            let (lo_ab, lo_cd) = (_mm256_unpacklo_ps(a, b), _mm256_unpacklo_ps(c, d));
            let (hi_ab, hi_cd) = (_mm256_unpackhi_ps(a, b), _mm256_unpackhi_ps(c, d));
            let rows = [
                _mm256_shuffle_ps::<0x44>(lo_ab, lo_cd),
                _mm256_shuffle_ps::<0xEE>(lo_ab, lo_cd),
                _mm256_shuffle_ps::<0x44>(hi_ab, hi_cd),
                _mm256_shuffle_ps::<0xEE>(hi_ab, hi_cd),
            ];
            for (row, v) in dst.iter_mut().zip(rows) {
                _mm256_storeu_ps(row.as_mut_ptr().add(k0), v);
            }
        } else {
            // Tiles k0..k0 + 2 and k0 + 4..k0 + 6 in the first register, the others in the
            // second; the even and the odd floats of each half apart.
            let a = halves(p.add(q), p.add(q + 8));
            let b = halves(p.add(q + 4), p.add(q + 12));
            _mm256_storeu_ps(dst[0].as_mut_ptr().add(k0), _mm256_shuffle_ps::<0x88>(a, b));
            _mm256_storeu_ps(dst[1].as_mut_ptr().add(k0), _mm256_shuffle_ps::<0xDD>(a, b));
        }
    }
}

/// Four floats from `lo` in the low half of a register, four from `hi` in the high half.
///
/// # Safety
/// AVX must be available; both pointers must have four readable floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn halves(lo: *const f32, hi: *const f32) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(_mm_loadu_ps(lo)), _mm_loadu_ps(hi))
}

/// Asks the CPU to bring `values[start..start + len]` into the cache (a hint: nothing
/// happens off x86-64 or outside `values`).
#[inline(always)]
fn prefetch_span(values: &[f32], start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if len > 0
        && start
            .checked_add(len)
            .is_some_and(|end| end <= values.len())
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // 16 floats per 64-byte cache line.
        for at in (start..start + len).step_by(16).chain([start + len - 1]) {
            // SAFETY: a prefetch reads nothing observable; the address is inside `values`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(values.as_ptr().add(at).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (values, start, len);
}

/// Where tap `(a, b, c)` of a 3×3×3 kernel (tap `(a·3 + b)·3 + c`) sits in a tile of edge
/// `edge`: entry `(a·edge + b)·edge + c`.
const fn tap_positions(edge: usize) -> [usize; 27] {
    let mut pos = [0; 27];
    let mut t = 0;
    while t < 27 {
        pos[t] = (t / 9 * edge + t / 3 % 3) * edge + t % 3;
        t += 1;
    }
    pos
}

/// Loads the 27 taps of input channel `ci` and output channels `co0..co0 + W` into lanes
/// `0..W` of the entries `pos` of `s`.
#[inline(always)]
fn load_taps<const W: usize>(
    w: &[f32],
    c_in: usize,
    co0: usize,
    ci: usize,
    pos: &[usize; 27],
    s: &mut [[f32; 8]],
) {
    for l in 0..W {
        let taps: &[f32] = &w[((co0 + l) * c_in + ci) * 27..][..27];
        for (&p, &v) in pos.iter().zip(taps) {
            s[p][l] = v;
        }
    }
}

/// Stores lanes `0..W` of the transformed taps `s` of input channel `ci` into `dst`
/// `[ξ][c_in][W]`.
#[inline(always)]
fn store_taps<const W: usize>(s: &[[f32; 8]], c_in: usize, ci: usize, dst: &mut [f32]) {
    for (xi, row) in s.iter().enumerate() {
        let at = (xi * c_in + ci) * W;
        dst[at..at + W].copy_from_slice(&row[..W]);
    }
}

/// Columns `c0..c0 + S` of an input row padded with zeros, of which `lo..hi` lie inside `row`:
/// the row itself when all do, else `buf` filled with them and zeros.
#[inline(always)]
fn padded_span<'a, const S: usize>(
    row: &'a [f32],
    c0: usize,
    lo: usize,
    hi: usize,
    buf: &'a mut [f32; S],
) -> &'a [f32; S] {
    if lo == 0 && hi == S {
        if let Some(span) = row.get(c0..c0 + S).and_then(|span| span.try_into().ok()) {
            return span;
        }
    }
    *buf = [0.0; S];
    if lo < hi {
        copy_short(&row[c0.wrapping_add(lo)..][..hi - lo], &mut buf[lo..hi]);
    }
    buf
}

/// Stores the transformed tiles `s[ξ][0..b.n]` of block `b` into V (see [`VDest`]).
#[inline(always)]
fn store_tiles(s: &[[f32; NT]], b: &Block, dst: VDest) {
    for (xi, row) in s.iter().enumerate() {
        // Tiles off..off + n, split where they cross a group of NT.
        let mut k = 0;
        while k < b.n {
            let (tg, lane) = ((b.off + k) / NT, (b.off + k) % NT);
            let len = (NT - lane).min(b.n - k);
            let at = xi * dst.tap_stride + (tg * dst.c_in + dst.ci) * NT + lane;
            // SAFETY: tile off + k < groups·NT, so `at + len` ≤ taps·tap_stride, the size of
            // V; these elements belong to channel ci, this task's own. A full row starts at
            // lane 0, a multiple of NT floats from `v`, so with `stream` it is 64-byte aligned.
            unsafe {
                let to = dst.v.get().add(at);
                if len == NT {
                    #[cfg(target_arch = "x86_64")]
                    if dst.stream && stream_row(row, to) {
                        k += len;
                        continue;
                    }
                    to.cast::<[f32; NT]>().write_unaligned(*row);
                } else {
                    copy_short(&row[k..k + len], std::slice::from_raw_parts_mut(to, len));
                }
            }
            k += len;
        }
    }
}

/// Makes this thread's streaming stores (weakly ordered) visible before other threads read
/// what they wrote.
#[inline(always)]
fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86-64.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// Writes `row` to the 64-byte aligned `to` past the caches where the CPU has AVX-512F or AVX;
/// returns whether it did. With AVX alone (an AMD EPYC; `cargo bench -p brain-ldm-nn --bench
/// conv3d -- conv3d_backward`, two runs each): 32→32 on 40×56×40 130, 126 ms against 137,
/// 137 ms with plain stores; the other cases within their noise (±10 %).
///
/// # Safety
/// `to` must be 64-byte aligned and have NT writable floats.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn stream_row(row: &[f32; NT], to: *mut f32) -> bool {
    use std::arch::x86_64::*;
    const { assert!(NT == 16, "one AVX-512 or two AVX registers per row") };
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(row: &[f32; NT], to: *mut f32) {
        _mm512_stream_ps(to, _mm512_loadu_ps(row.as_ptr()));
    }
    #[target_feature(enable = "avx")]
    unsafe fn avx(row: &[f32; NT], to: *mut f32) {
        _mm256_stream_ps(to, _mm256_loadu_ps(row.as_ptr()));
        _mm256_stream_ps(to.add(8), _mm256_loadu_ps(row.as_ptr().add(8)));
    }
    if avx512_available() {
        avx512(row, to);
    } else if is_x86_feature_detected!("avx") {
        avx(row, to);
    } else {
        return false;
    }
    true
}

/// Copies lanes `0..run.n` of the rows `t` to lanes `run.lane..run.lane + run.n` of the rows
/// `s`.
#[inline(always)]
fn put_lanes(t: &[[f32; NT]], s: &mut [[f32; NT]], run: &Run) {
    for (to, from) in s.iter_mut().zip(t) {
        if run.n == NT {
            *to = *from;
        } else {
            copy_short(&from[..run.n], &mut to[run.lane..run.lane + run.n]);
        }
    }
}

/// Loads the GEMM results `m[ξ][b.off..b.off + b.n]` (`m` `[ξ][tc]`) of block `b` into `s`.
#[inline(always)]
fn load_tiles(m: &[f32], tc: usize, b: &Block, s: &mut [[f32; NT]]) {
    for (xi, row) in s.iter_mut().enumerate() {
        let at = xi * tc + b.off;
        match m.get(at..at + NT) {
            Some(src) => row.copy_from_slice(src),
            None => copy_short(&m[at..at + b.n], &mut row[..b.n]),
        }
    }
}

/// Loads the `M³` gradient entries of the tiles of block `b` of one output channel `grad`
/// `[od, oh, ow]` into entries `(i·E + j)·E + k` (`i, j, k < M`) of `s`, zeros past the
/// output's end.
#[inline(always)]
fn load_grad<const M: usize, const E: usize>(
    grad: &[f32],
    g: &ConvGeometry,
    b: &Block,
    s: &mut [[f32; NT]],
) {
    let [od, oh, ow] = g.output;
    for run in &b.runs {
        for (i, j) in (0..M).flat_map(|i| (0..M).map(move |j| (i, j))) {
            let (z, y) = (M * run.tz + i, M * run.ty + j);
            // Entry k of tile l's row is span[M·l + k] (M ≤ 4).
            let mut span = [0f32; 4 * NT];
            if z < od && y < oh {
                // x0 < ow: the run's first tile covers at least one output column.
                let x0 = M * run.tx0;
                let len = (M * run.n).min(ow - x0);
                copy_short(&grad[(z * oh + y) * ow + x0..][..len], &mut span[..len]);
            }
            let mut t = [[0f32; NT]; M];
            deinterleave::<M>(&span[..M * NT], &mut t);
            for (k, tk) in t.iter().enumerate() {
                let row = &mut s[(i * E + j) * E + k][run.lane..run.lane + run.n];
                row.copy_from_slice(&tk[..run.n]);
            }
        }
    }
}

/// The frame of [`Algorithm::weight_adjoint`]: for each block of up to [`NT`] input channels
/// (one per lane), loads `du[ξ][co][block]` (`du` `[ξ][c_out][c_in]`) into `s[ξ]`, applies
/// `passes` (`Gᵀ` along each axis, leaving tap `t` at entry `pos[t]`), and stores the taps to
/// `dst` `[c_in][27]`.
#[inline(always)]
fn adjoint_by_lanes<const XI: usize>(
    du: &[f32],
    (c_out, c_in, co): (usize, usize, usize),
    dst: &mut [f32],
    pos: &[usize; 27],
    passes: impl Fn(&mut [[f32; NT]; XI]),
) {
    let mut s = [[0f32; NT]; XI];
    for ci0 in (0..c_in).step_by(NT) {
        let lanes = NT.min(c_in - ci0);
        for (xi, row) in s.iter_mut().enumerate() {
            copy_short(
                &du[(xi * c_out + co) * c_in + ci0..][..lanes],
                &mut row[..lanes],
            );
        }
        passes(&mut s);
        for lane in 0..lanes {
            let taps = &mut dst[(ci0 + lane) * 27..][..27];
            for (v, &p) in taps.iter_mut().zip(pos) {
                *v = s[p][lane];
            }
        }
    }
}

/// Implements [`Algorithm`] for `$name` (output tiles `$m`³) with the calling module's
/// `transform_weights_w`, `input_transform` and `output_transform`, each compiled per CPU by
/// `multiversion!`.
macro_rules! algorithm {
    ($name:ident, $m:expr) => {
        impl Algorithm for $name {
            const M: usize = $m;
            const TAPS: usize = ($m + 2) * ($m + 2) * ($m + 2);

            fn transform_weights_w<const W: usize>(
                w: &[f32],
                c_in: usize,
                co0: usize,
                dst: &mut [f32],
            ) {
                transform_weights_w::<W>(w, c_in, co0, dst);
            }

            fn input_transform(
                x: &[f32],
                next: &[f32],
                g: &ConvGeometry,
                blocks: &[Block],
                dst: VDest,
            ) {
                input_transform(x, next, g, blocks, dst);
            }

            fn output_transform(
                m: &[f32],
                tc: usize,
                blocks: &[Block],
                g: &ConvGeometry,
                out: OutDest,
                co: usize,
            ) {
                output_transform(m, tc, blocks, g, out, co);
            }

            fn grad_transform(grad: &[f32], g: &ConvGeometry, blocks: &[Block], dst: VDest) {
                grad_transform(grad, g, blocks, dst);
            }

            fn weight_adjoint(du: &[f32], c_out: usize, c_in: usize, co: usize, dst: &mut [f32]) {
                weight_adjoint(du, c_out, c_in, co, dst);
            }
        }
    };
}

mod f2;
mod f4;
mod weight_grad;

pub(super) use weight_grad::{applicable as weight_grad_applicable, weight_grad};

use f2::F2;
use f4::F4;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::test_support::random;
    use crate::conv::Conv3dConfig;

    /// The definition of the convolution, in f64.
    fn direct(x: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f64> {
        let [d, h, wd] = g.input;
        let [od, oh, ow] = g.output;
        let [(pd, _), (ph, _), (pw, _)] = g.padding;
        let mut out = vec![0f64; g.c_out * od * oh * ow];
        for co in 0..g.c_out {
            for z in 0..od {
                for y in 0..oh {
                    for xx in 0..ow {
                        let mut acc = 0f64;
                        for ci in 0..g.c_in {
                            for t in 0..27 {
                                let iz = (z + t / 9).wrapping_sub(pd);
                                let iy = (y + t / 3 % 3).wrapping_sub(ph);
                                let ix = (xx + t % 3).wrapping_sub(pw);
                                if iz < d && iy < h && ix < wd {
                                    let xv = x[((ci * d + iz) * h + iy) * wd + ix] as f64;
                                    acc += xv * w[(co * g.c_in + ci) * 27 + t] as f64;
                                }
                            }
                        }
                        out[((co * od + z) * oh + y) * ow + xx] = acc;
                    }
                }
            }
        }
        out
    }

    /// Runs one algorithm on one path of [`conv3d`].
    type Path = fn(&[f32], &[f32], &ConvGeometry, &mut [f32]);

    /// `many_tiles` or `few_tiles` of algorithm `A`, as [`conv3d`] calls them.
    fn path<A: Algorithm>(many: bool) -> Path {
        if many {
            |x, w, g, out| many_tiles::<A>(x, w, g, tile_grid::<A>(g), dest(out))
        } else {
            |x, w, g, out| few_tiles::<A>(x, w, g, tile_grid::<A>(g), dest(out))
        }
    }

    /// `out` as the output transforms' destination.
    fn dest(out: &mut [f32]) -> OutDest {
        OutDest {
            out: SharedMut(out.as_mut_ptr()),
            len: out.len(),
        }
    }

    /// Both algorithms on both paths equal the direct definition on odd and even sizes,
    /// padding 0, 1, 2 and asymmetric, channel counts that are not multiples of 8, several
    /// blocks per tile row, several chunks (and so both ways of transforming the weights).
    /// Tolerances: the rounding of each algorithm (module docs).
    #[test]
    fn matches_direct_definition() {
        let cases = [
            ([1, 17, 5, 6, 7], [19, 17, 3, 3, 3], Conv3dConfig::new(1, 1)),
            (
                [1, 16, 7, 4, 40],
                [16, 16, 3, 3, 3],
                Conv3dConfig::new(0, 1),
            ),
            ([1, 1, 3, 3, 3], [3, 1, 3, 3, 3], Conv3dConfig::new(2, 1)),
            (
                [1, 20, 6, 9, 5],
                [24, 20, 3, 3, 3],
                Conv3dConfig {
                    stride: [1; 3],
                    padding: [(0, 1), (2, 0), (1, 2)],
                },
            ),
            (
                [1, 16, 33, 34, 35],
                [16, 16, 3, 3, 3],
                Conv3dConfig::new(1, 1),
            ),
            (
                [1, 24, 9, 70, 69],
                [17, 24, 3, 3, 3],
                Conv3dConfig::new(1, 1),
            ),
        ];
        let paths: [(&str, Path, f64); 4] = [
            ("F(2, 3), many tiles", path::<F2>(true), 1e-6),
            ("F(2, 3), few tiles", path::<F2>(false), 1e-6),
            ("F(4, 3), many tiles", path::<F4>(true), 2e-5),
            ("F(4, 3), few tiles", path::<F4>(false), 2e-5),
        ];
        for (xs, ws, cfg) in cases {
            let g = ConvGeometry::new(&xs, &ws, &cfg).unwrap();
            let x = random(xs.iter().product(), 3);
            let w = random(ws.iter().product(), 4);
            let reference = direct(&x, &w, &g);
            let scale = reference.iter().fold(1f64, |a, b| a.max(b.abs()));
            for (name, run, tolerance) in paths {
                let mut out = vec![f32::NAN; g.c_out * g.output_volume()];
                run(&x, &w, &g, &mut out);
                let err = out
                    .iter()
                    .zip(&reference)
                    .map(|(&a, &b)| (a as f64 - b).abs())
                    .fold(0f64, |a, b| a.max(b));
                assert!(
                    err <= tolerance * scale,
                    "{name}, {xs:?} {ws:?}: max error {err} (scale {scale})"
                );
            }
        }
    }

    /// The max error of `conv3d` against the definition, relative to the output's scale.
    fn relative_error(xs: [usize; 5], ws: [usize; 5], cfg: Conv3dConfig) -> f64 {
        let g = ConvGeometry::new(&xs, &ws, &cfg).unwrap();
        let x = random(xs.iter().product(), 5);
        let w = random(ws.iter().product(), 6);
        let mut out = vec![MaybeUninit::new(f32::NAN); g.c_out * g.output_volume()];
        conv3d(&x, &w, &g, &mut out);
        // SAFETY: every element was initialised (to NaN) above.
        let out: Vec<f32> = out.iter().map(|v| unsafe { v.assume_init() }).collect();
        assert!(out.iter().all(|v| v.is_finite()), "every output is written");
        let reference = direct(&x, &w, &g);
        let scale = reference.iter().fold(1f64, |a, b| a.max(b.abs()));
        out.iter()
            .zip(&reference)
            .map(|(&a, &b)| (a as f64 - b).abs())
            .fold(0f64, f64::max)
            / scale
    }

    /// Small volumes with many channels (the few-tiles path, whose V and M buffers are kept
    /// between calls) are exact even when the kept buffers hold NaNs from before, and after a
    /// larger call has left bigger buffers behind.
    #[test]
    fn few_tiles_ignore_stale_scratch() {
        let (xs, ws) = ([1, 40, 3, 5, 4], [48, 40, 3, 3, 3]);
        let g = ConvGeometry::new(&xs, &ws, &Conv3dConfig::new(1, 1)).unwrap();
        let tiles: usize = g.output.iter().map(|n| n.div_ceil(2)).product();
        assert!(
            tiles * (g.c_in + g.c_out) <= g.c_in * g.c_out,
            "not the few-tiles path"
        );
        Scratch::give_back(vec![f32::NAN; 1 << 20]);
        Scratch::give_back(vec![f32::NAN; 1 << 20]);
        for (xs, ws) in [(xs, ws), ([1, 64, 2, 3, 2], [64, 64, 3, 3, 3]), (xs, ws)] {
            let err = relative_error(xs, ws, Conv3dConfig::new(1, 1));
            assert!(err <= 1e-5, "{xs:?} {ws:?}: relative error {err}");
        }
    }

    /// Every microkernel the CPU can run gives the same floats as the portable one (each sums
    /// over k in the same order), for every width, with and without accumulation, over two
    /// groups of tiles.
    #[test]
    fn microkernels_agree_exactly() {
        let k = 37;
        let group_stride = (k + 3) * NT;
        let v = random(group_stride + k * NT, 7);
        for width in 1..=CB {
            let u = random(k * width, 8 + width as u64);
            for accumulate in [false, true] {
                let start = random(CB * 2 * NT, 9);
                // Group g of tiles: its V rows and its M columns.
                let panel = |g: usize, m: &mut [f32], pair: usize| Panel {
                    u: &u,
                    v: &v[g * group_stride..g * group_stride + (pair - 1) * group_stride + k * NT],
                    group_stride,
                    m: m[g * NT..].as_mut_ptr(),
                    m_stride: 2 * NT,
                    accumulate,
                };
                let mut want = start.clone();
                for g in 0..2 {
                    panel(g, &mut want, 1).portable(width);
                }
                #[cfg(target_arch = "x86_64")]
                {
                    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                        let mut got = start.clone();
                        for g in 0..2 {
                            // SAFETY: AVX2 and FMA are available; the panel is in bounds.
                            unsafe { panel(g, &mut got, 1).multiply_avx2(width, true) };
                        }
                        assert_eq!(got, want, "AVX2, width {width}");
                    }
                    if avx512_available() {
                        let mut got = start.clone();
                        // SAFETY: AVX-512F is available; the panel is in bounds.
                        unsafe { panel(0, &mut got, 2).multiply_avx512(width, 2) };
                        assert_eq!(got, want, "AVX-512, two groups, width {width}");
                        let mut got = start.clone();
                        for g in 0..2 {
                            // SAFETY: as above.
                            unsafe { panel(g, &mut got, 1).multiply_avx512(width, 1) };
                        }
                        assert_eq!(got, want, "AVX-512, one group, width {width}");
                    }
                }
            }
        }
    }

    /// The tile entries of one input row, for both algorithms' strides, on the shuffle path
    /// where the CPU has AVX: `t[e][k]` is column `S·k + e`.
    #[test]
    fn split_row_takes_each_tiles_columns() {
        fn check<const S: usize, const E: usize>() {
            let span = random(S * NT + E - S, 7);
            let mut t = [[f32::NAN; NT]; E];
            split_row::<S, E>(&span, &mut t);
            for (e, row) in t.iter().enumerate() {
                for (k, &v) in row.iter().enumerate() {
                    assert_eq!(v, span[S * k + e], "S {S}, entry {e}, tile {k}");
                }
            }
        }
        check::<2, 4>();
        check::<4, 6>();
    }
}
