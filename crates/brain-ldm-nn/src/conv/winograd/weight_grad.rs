//! The weight gradient of 3×3×3 stride-1 convolutions by the forward pass's algorithm: with
//! `V = Bᵀ d B` of the input tiles and `P = A Ȳ Aᵀ` of the output gradient's tiles (the adjoint
//! of the output transform), the gradient of the transformed weights is, for each transformed
//! tap `ξ`, one GEMM over the tiles, `Ū[ξ] = P[ξ] · V[ξ]ᵀ` (`c_out × tiles` times
//! `tiles × c_in`), and the weight gradient is `Gᵀ Ū G` (the adjoint of the weight transform).
//! F(4, 3) needs 216 multiplies per 64 output voxels and channel pair, against 27·64 for the
//! im2col GEMM.

use super::{
    blocks, store_fence, tile_grid, Algorithm, Scratch, SharedMut, VDest, F2, F4, MIN_CHANNELS,
    MIN_VOXELS, NT,
};
use crate::conv::geometry::ConvGeometry;
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Most tiles transformed at once: V and P of a chunk hold `TAPS·(c_in + c_out)` floats per
/// tile (27 MiB at 64 + 64 channels with F(4, 3)). Measured against 64 and 1024 (`cargo bench
/// -p brain-ldm-nn --bench conv3d -- conv3d_backward`, two runs each, before the streaming
/// stores): 32→32 on 40×56×40 57.7, 59.1 ms against 60.3, 58.9 ms (64) and 69.6, 78.0 ms
/// (1024); 64→64 on 20×28×20 16.4, 15.5 ms against 17.2, 17.3 and 15.9, 16.1 ms.
const CHUNK_TILES: usize = 256;

/// Whether [`weight_grad`] computes this convolution's weight gradient: 3×3×3, stride 1, at
/// least [`MIN_CHANNELS`] input channels and [`MIN_VOXELS`] output voxels, any number of output
/// channels. Unlike the forward pass, few output channels do not rule it out: the transformed
/// weights are not needed, and the im2col GEMM it replaces gathers `27·c_in` rows for each
/// output channel row. Few input channels do: their im2col rows are few, and transforming the
/// output gradient costs more (`cargo bench -p brain-ldm-nn --bench conv3d -- conv3d_backward`,
/// two runs each, forward plus backward on 40×56×40: 32→1 14.6, 15.0 ms with this path against
/// 17.0, 17.1 ms with im2col; 1→32 12.0, 12.0 ms against 8.8, 9.0 ms).
pub(in crate::conv) fn applicable(g: &ConvGeometry) -> bool {
    g.kernel == [3, 3, 3]
        && g.stride == [1, 1, 1]
        && g.c_in >= MIN_CHANNELS
        && g.output_volume() >= MIN_VOXELS
}

/// Gradient of a convolution [`applicable`] accepts with respect to its weight,
/// `[c_out, c_in, 3, 3, 3]`, from its input `x` `[b, c_in, d, h, w]` and output gradient
/// `grad_out` `[b, c_out, od, oh, ow]`. F(4, 3) where the forward pass uses it (at least 64 of
/// its tiles), else F(2, 3). The same floats whatever rayon's thread count.
pub(in crate::conv) fn weight_grad(x: &[f32], grad_out: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let large = tile_grid::<F4>(g);
    if large.iter().product::<usize>() >= 64 {
        weight_grad_by::<F4>(x, grad_out, g, large)
    } else {
        weight_grad_by::<F2>(x, grad_out, g, tile_grid::<F2>(g))
    }
}

/// Floats of V or P per transformed tap, for `channels` rows of `ld` floats: one cache line more
/// than `channels·ld`, so that the rows one channel's transform writes for a block of tiles
/// (one per tap) are not a multiple of 4 KiB apart, as [`super::v_tap_stride`] (`cargo bench -p
/// brain-ldm-nn --bench conv3d -- conv3d_backward`, two runs each: 32→32 on 40×56×40 53.5,
/// 55.9 ms against 57.2, 59.4 ms without; the other cases within their noise).
fn tap_stride(channels: usize, ld: usize) -> usize {
    channels * ld + NT
}

/// [`weight_grad`] by algorithm `A` on its `tiles` grid.
fn weight_grad_by<A: Algorithm>(
    x: &[f32],
    grad_out: &[f32],
    g: &ConvGeometry,
    tiles: [usize; 3],
) -> Vec<f32> {
    let (c_in, c_out) = (g.c_in, g.c_out);
    let (ivol, ovol) = (g.input_volume(), g.output_volume());
    let total: usize = tiles.iter().product();
    let tc = total.min(CHUNK_TILES);
    // Ū, `[ξ][c_out][c_in]`, summed over the chunks and batch items in order.
    let mut du = vec![0f32; A::TAPS * c_out * c_in];
    // V `[ξ][c_in][tile]` and P `[ξ][c_out][tile]` of one chunk, rows of `ld` floats (the
    // chunk's tiles rounded up to NT), taps `tap_stride` apart, from a 64-byte boundary (stale
    // contents: the transforms write every tile the GEMMs read).
    let ld_max = tc.next_multiple_of(NT);
    let mut v_buf = Scratch::take(A::TAPS * tap_stride(c_in, ld_max) + NT);
    let mut p_buf = Scratch::take(A::TAPS * tap_stride(c_out, ld_max) + NT);
    let v_at = v_buf.as_ptr().align_offset(64).min(NT);
    let p_at = p_buf.as_ptr().align_offset(64).min(NT);
    let (v, p) = (&mut v_buf[v_at..], &mut p_buf[p_at..]);
    let mut first = true;
    for (xb, gb) in x
        .chunks_exact(c_in * ivol)
        .zip(grad_out.chunks_exact(c_out * ovol))
    {
        for start in (0..total).step_by(tc) {
            let range = start..(start + tc).min(total);
            let nt = range.len();
            let ld = nt.next_multiple_of(NT);
            let blocks = blocks(tiles, range);
            // Channel c's tiles of tap ξ are `nt` consecutive floats at
            // ξ·tap_stride(channels, ld) + c·ld: a destination with one channel per group of
            // tiles, moved to channel c. Full rows start on 64-byte boundaries, so they are
            // streamed past the caches: V and P outgrow them and are read back once, by the
            // GEMMs (`cargo bench -p brain-ldm-nn --bench conv3d -- conv3d_backward`, two runs
            // each: 128→64 on 20×28×20 26.4, 26.3 ms against 31.6, 32.1 ms with plain stores;
            // 64→64 15.3, 15.5 against 16.8, 16.6 ms).
            let dest = |buf: &mut [f32], channels: usize, c: usize| VDest {
                v: SharedMut(buf.as_mut_ptr().wrapping_add(c * ld)),
                stream: (buf.as_ptr() as usize).is_multiple_of(64),
                tap_stride: tap_stride(channels, ld),
                c_in: 1,
                ci: 0,
            };
            let v_dest: Vec<VDest> = (0..c_in).map(|ci| dest(v, c_in, ci)).collect();
            let p_dest: Vec<VDest> = (0..c_out).map(|co| dest(p, c_out, co)).collect();
            xb.par_chunks(ivol).enumerate().for_each(|(ci, xc)| {
                let next = xb.get((ci + 1) * ivol..(ci + 2) * ivol).unwrap_or(&[]);
                A::input_transform(xc, next, g, &blocks, v_dest[ci]);
                store_fence();
            });
            gb.par_chunks(ovol).enumerate().for_each(|(co, gc)| {
                A::grad_transform(gc, g, &blocks, p_dest[co]);
                store_fence();
            });
            let (v, p) = (&v[..], &p[..]);
            du.par_chunks_mut(c_out * c_in)
                .enumerate()
                .for_each(|(xi, du)| {
                    let p = &p[xi * tap_stride(c_out, ld)..];
                    let v = &v[xi * tap_stride(c_in, ld)..];
                    // du[c_out × c_in] (+)= P[c_out × nt] · Vᵀ[nt × c_in]
                    // SAFETY: P and V hold c_out and c_in rows of ld ≥ nt floats from these
                    // offsets (their buffers hold TAPS·tap_stride(channels, ld_max) floats),
                    // du c_out·c_in.
                    unsafe {
                        gemm(
                            c_out,
                            c_in,
                            nt,
                            du.as_mut_ptr(),
                            1,
                            c_in as isize,
                            !first,
                            p.as_ptr(),
                            1,
                            ld as isize,
                            v.as_ptr(),
                            ld as isize,
                            1,
                            1.0,
                            1.0,
                            false,
                            false,
                            false,
                            Parallelism::None,
                        );
                    }
                });
            first = false;
        }
    }
    Scratch::give_back(v_buf);
    Scratch::give_back(p_buf);
    let mut grad_w = vec![0f32; c_out * c_in * 27];
    grad_w
        .par_chunks_mut(c_in * 27)
        .enumerate()
        .for_each(|(co, dst)| A::weight_adjoint(&du, c_out, c_in, co, dst));
    grad_w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::test_support::random;
    use crate::conv::Conv3dConfig;

    /// A weight-gradient function, as [`weight_grad`].
    type WeightGrad = fn(&[f32], &[f32], &ConvGeometry) -> Vec<f32>;

    /// The definition of the weight gradient, in f64.
    fn direct(x: &[f32], grad_out: &[f32], g: &ConvGeometry) -> Vec<f64> {
        let [d, h, wd] = g.input;
        let [od, oh, ow] = g.output;
        let [(pd, _), (ph, _), (pw, _)] = g.padding;
        let mut grad_w = vec![0f64; g.c_out * g.c_in * 27];
        for (i, gw) in grad_w.iter_mut().enumerate() {
            let (co, ci, t) = (i / (27 * g.c_in), i / 27 % g.c_in, i % 27);
            for b in 0..g.batch {
                let xc = &x[(b * g.c_in + ci) * d * h * wd..][..d * h * wd];
                let gc = &grad_out[(b * g.c_out + co) * od * oh * ow..][..od * oh * ow];
                for (o, &dy) in gc.iter().enumerate() {
                    let (z, y, xx) = (o / (oh * ow), o / ow % oh, o % ow);
                    let iz = (z + t / 9).wrapping_sub(pd);
                    let iy = (y + t / 3 % 3).wrapping_sub(ph);
                    let ix = (xx + t % 3).wrapping_sub(pw);
                    if iz < d && iy < h && ix < wd {
                        *gw += f64::from(dy) * f64::from(xc[(iz * h + iy) * wd + ix]);
                    }
                }
            }
        }
        grad_w
    }

    /// Both algorithms equal the definition on a batch of two, odd sizes, symmetric and
    /// asymmetric padding, channel counts that are not multiples of the lanes (one input or
    /// one output channel too), and more tiles than one chunk holds, with NaNs left in the
    /// kept scratch buffers; the floats do not depend on the thread count. Tolerances: the
    /// forward pass's (winograd.rs).
    #[test]
    fn matches_direct_definition_and_is_deterministic() {
        let cases = [
            ([2, 17, 5, 6, 7], [19, 17, 3, 3, 3], Conv3dConfig::new(1, 1)),
            (
                [2, 20, 6, 9, 5],
                [24, 20, 3, 3, 3],
                Conv3dConfig {
                    stride: [1; 3],
                    padding: [(0, 1), (2, 0), (1, 2)],
                },
            ),
            (
                [1, 16, 9, 70, 69],
                [17, 16, 3, 3, 3],
                Conv3dConfig::new(1, 1),
            ),
            ([2, 1, 9, 10, 11], [5, 1, 3, 3, 3], Conv3dConfig::new(1, 1)),
            (
                [1, 16, 9, 10, 11],
                [1, 16, 3, 3, 3],
                Conv3dConfig::new(1, 1),
            ),
        ];
        let algorithms: [(&str, WeightGrad, f64); 2] = [
            (
                "F(2, 3)",
                |x, gy, g| weight_grad_by::<F2>(x, gy, g, tile_grid::<F2>(g)),
                1e-6,
            ),
            (
                "F(4, 3)",
                |x, gy, g| weight_grad_by::<F4>(x, gy, g, tile_grid::<F4>(g)),
                2e-5,
            ),
        ];
        let pools = [1, 3].map(|n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        });
        for (xs, ws, cfg) in cases {
            let g = ConvGeometry::new(&xs, &ws, &cfg).unwrap();
            let x = random(xs.iter().product(), 7);
            let gy = random(g.batch * g.c_out * g.output_volume(), 8);
            let reference = direct(&x, &gy, &g);
            let scale = reference.iter().fold(1f64, |a, b| a.max(b.abs()));
            for (name, run, tolerance) in algorithms {
                Scratch::give_back(vec![f32::NAN; 1 << 22]);
                Scratch::give_back(vec![f32::NAN; 1 << 22]);
                let [one, three] = [0, 1].map(|i| pools[i].install(|| run(&x, &gy, &g)));
                assert_eq!(
                    one, three,
                    "{name}, {xs:?}: thread count changed the floats"
                );
                let err = one
                    .iter()
                    .zip(&reference)
                    .map(|(&a, &b)| (f64::from(a) - b).abs())
                    .fold(0f64, f64::max);
                assert!(
                    err <= tolerance * scale,
                    "{name}, {xs:?} {ws:?}: max error {err} (scale {scale})"
                );
            }
        }
    }
}
