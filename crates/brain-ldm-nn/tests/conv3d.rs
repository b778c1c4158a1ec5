//! conv3d and conv_transpose3d against direct f64 loops, and their gradients against finite
//! differences.

use brain_ldm_nn::ops::{conv3d, conv3d_reference, conv_transpose3d};
use brain_ldm_nn::{Conv3dConfig, ConvTranspose3dConfig};
use candle_core::{DType, Device, Tensor, Var};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn random(shape: &[usize], seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..shape.iter().product::<usize>())
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect()
}

fn tensor(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(data, shape, &Device::Cpu).unwrap()
}

/// The definition of a 3D cross-correlation, in f64 loops.
fn direct_conv(
    x: &[f32],
    xs: [usize; 5],
    w: &[f32],
    ws: [usize; 5],
    cfg: &Conv3dConfig,
) -> (Vec<f64>, Vec<usize>) {
    let [b, ci, d, h, wd] = xs;
    let [co, _, kd, kh, kw] = ws;
    let size = |i: usize, a: usize, k: usize| {
        (i + cfg.padding[a].0 + cfg.padding[a].1 - k) / cfg.stride[a] + 1
    };
    let (od, oh, ow) = (size(d, 0, kd), size(h, 1, kh), size(wd, 2, kw));
    let mut out = vec![0f64; b * co * od * oh * ow];
    for n in 0..b {
        for o in 0..co {
            for z in 0..od {
                for y in 0..oh {
                    for xx in 0..ow {
                        let mut acc = 0f64;
                        for c in 0..ci {
                            for a in 0..kd {
                                for bb in 0..kh {
                                    for cc in 0..kw {
                                        let iz = (z * cfg.stride[0] + a) as isize
                                            - cfg.padding[0].0 as isize;
                                        let iy = (y * cfg.stride[1] + bb) as isize
                                            - cfg.padding[1].0 as isize;
                                        let ix = (xx * cfg.stride[2] + cc) as isize
                                            - cfg.padding[2].0 as isize;
                                        if iz < 0
                                            || iy < 0
                                            || ix < 0
                                            || iz >= d as isize
                                            || iy >= h as isize
                                            || ix >= wd as isize
                                        {
                                            continue;
                                        }
                                        let xi = (((n * ci + c) * d + iz as usize) * h
                                            + iy as usize)
                                            * wd
                                            + ix as usize;
                                        let wi = (((o * ci + c) * kd + a) * kh + bb) * kw + cc;
                                        acc += x[xi] as f64 * w[wi] as f64;
                                    }
                                }
                            }
                        }
                        out[(((n * co + o) * od + z) * oh + y) * ow + xx] = acc;
                    }
                }
            }
        }
    }
    (out, vec![b, co, od, oh, ow])
}

/// Max |a − b| over max(1, max|b|).
fn rel_err(a: &Tensor, b: &[f64]) -> f64 {
    let a = a.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
    let a = a.to_vec1::<f64>().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Every stride/padding combination the models use, on odd sizes and several channel counts.
fn cases() -> Vec<([usize; 5], [usize; 5], Conv3dConfig)> {
    vec![
        ([2, 3, 7, 5, 6], [4, 3, 3, 3, 3], Conv3dConfig::new(1, 1)),
        ([1, 5, 9, 6, 7], [6, 5, 3, 3, 3], Conv3dConfig::new(0, 1)),
        ([2, 4, 5, 7, 3], [3, 4, 1, 1, 1], Conv3dConfig::new(0, 1)),
        (
            [1, 3, 8, 6, 10],
            [2, 3, 3, 3, 3],
            Conv3dConfig::pad_after_stride2(),
        ),
        (
            [2, 2, 7, 9, 5],
            [3, 2, 3, 3, 3],
            Conv3dConfig::pad_after_stride2(),
        ),
        ([1, 3, 9, 7, 8], [5, 3, 3, 3, 3], Conv3dConfig::new(1, 2)),
        (
            [1, 2, 6, 5, 7],
            [3, 2, 2, 3, 1],
            Conv3dConfig {
                stride: [1, 2, 1],
                padding: [(1, 0), (0, 2), (1, 1)],
            },
        ),
        // Enough output voxels for several parallel tiles.
        ([1, 3, 12, 11, 13], [4, 3, 3, 3, 3], Conv3dConfig::new(1, 1)),
        // Large enough for the shifted-view kernels (padding columns under 10 % of the work).
        ([1, 3, 8, 30, 60], [7, 3, 3, 3, 3], Conv3dConfig::new(1, 1)),
        // The discriminator's 4×4×4 stride-2 convolutions: two tiles of output voxels and
        // several blocks of input channels in the input gradient.
        ([1, 9, 20, 18, 22], [5, 9, 4, 4, 4], Conv3dConfig::new(1, 2)),
    ]
}

#[test]
fn conv3d_matches_direct_f64_loops() {
    for (i, (xs, ws, cfg)) in cases().into_iter().enumerate() {
        let x = random(&xs, 2 * i as u64);
        let w = random(&ws, 2 * i as u64 + 1);
        let (expected, shape) = direct_conv(&x, xs, &w, ws, &cfg);
        let fast = conv3d(&tensor(&x, &xs), &tensor(&w, &ws), &cfg).unwrap();
        assert_eq!(fast.dims(), &shape[..], "case {i}");
        let err = rel_err(&fast, &expected);
        assert!(err <= 1e-5, "case {i}: fast kernel relative error {err}");
        let reference = conv3d_reference(&tensor(&x, &xs), &tensor(&w, &ws), &cfg).unwrap();
        let err = rel_err(&reference, &expected);
        assert!(err <= 1e-5, "case {i}: reference relative error {err}");
    }
}

#[test]
fn conv3d_half_precision_is_computed_in_f32() {
    let (xs, ws, cfg) = cases()[0];
    let x = random(&xs, 7);
    let w = random(&ws, 8);
    let (expected, _) = direct_conv(&x, xs, &w, ws, &cfg);
    let xh = tensor(&x, &xs).to_dtype(DType::BF16).unwrap();
    let wh = tensor(&w, &ws).to_dtype(DType::BF16).unwrap();
    let y = conv3d(&xh, &wh, &cfg).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    // bf16 inputs carry 8 bits of mantissa: a few 1e-2 relative.
    let err = rel_err(&y, &expected);
    assert!(err <= 3e-2, "bf16 relative error {err}");
}

/// Direct scatter definition of the transposed convolution in f64.
fn direct_conv_transpose(
    x: &[f32],
    xs: [usize; 5],
    w: &[f32],
    ws: [usize; 5],
    cfg: &ConvTranspose3dConfig,
) -> (Vec<f64>, Vec<usize>) {
    let [b, ci, d, h, wd] = xs;
    let [_, co, k, _, _] = ws;
    let (s, p, op) = (cfg.stride, cfg.padding, cfg.output_padding);
    let size = |i: usize| (i - 1) * s + k + op - 2 * p;
    let (od, oh, ow) = (size(d), size(h), size(wd));
    let mut out = vec![0f64; b * co * od * oh * ow];
    for n in 0..b {
        for c in 0..ci {
            for z in 0..d {
                for y in 0..h {
                    for xx in 0..wd {
                        let v = x[(((n * ci + c) * d + z) * h + y) * wd + xx] as f64;
                        for o in 0..co {
                            for a in 0..k {
                                for bb in 0..k {
                                    for cc in 0..k {
                                        let oz = (z * s + a) as isize - p as isize;
                                        let oy = (y * s + bb) as isize - p as isize;
                                        let ox = (xx * s + cc) as isize - p as isize;
                                        if oz < 0
                                            || oy < 0
                                            || ox < 0
                                            || oz >= od as isize
                                            || oy >= oh as isize
                                            || ox >= ow as isize
                                        {
                                            continue;
                                        }
                                        let wi = (((c * co + o) * k + a) * k + bb) * k + cc;
                                        let oi = (((n * co + o) * od + oz as usize) * oh
                                            + oy as usize)
                                            * ow
                                            + ox as usize;
                                        out[oi] += v * w[wi] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (out, vec![b, co, od, oh, ow])
}

#[test]
fn conv_transpose3d_matches_direct_f64_loops() {
    let cases = [
        (
            [1, 3, 4, 5, 3],
            [3, 2, 3, 3, 3],
            ConvTranspose3dConfig {
                stride: 2,
                padding: 1,
                output_padding: 1,
            },
        ),
        (
            [2, 2, 3, 3, 4],
            [2, 4, 3, 3, 3],
            ConvTranspose3dConfig {
                stride: 1,
                padding: 1,
                output_padding: 0,
            },
        ),
        (
            [1, 2, 3, 2, 3],
            [2, 3, 2, 2, 2],
            ConvTranspose3dConfig {
                stride: 2,
                padding: 0,
                output_padding: 0,
            },
        ),
    ];
    for (i, (xs, ws, cfg)) in cases.into_iter().enumerate() {
        let x = random(&xs, 100 + i as u64);
        let w = random(&ws, 200 + i as u64);
        let (expected, shape) = direct_conv_transpose(&x, xs, &w, ws, &cfg);
        let y = conv_transpose3d(&tensor(&x, &xs), &tensor(&w, &ws), &cfg).unwrap();
        assert_eq!(y.dims(), &shape[..], "case {i}");
        let err = rel_err(&y, &expected);
        assert!(err <= 1e-5, "case {i}: relative error {err}");
    }
}

/// Central finite differences of `loss(x) = Σ f(x)·r` at a few coordinates of `x`.
fn finite_difference(
    f: &dyn Fn(&Tensor) -> Tensor,
    x: &[f32],
    shape: &[usize],
    r: &Tensor,
    coords: &[usize],
    eps: f32,
) -> Vec<f64> {
    coords
        .iter()
        .map(|&i| {
            let mut plus = x.to_vec();
            plus[i] += eps;
            let mut minus = x.to_vec();
            minus[i] -= eps;
            let lp = (f(&tensor(&plus, shape)) * r).unwrap().sum_all().unwrap();
            let lm = (f(&tensor(&minus, shape)) * r).unwrap().sum_all().unwrap();
            let lp = lp.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
            let lm = lm.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
            (lp - lm) / (2.0 * eps as f64)
        })
        .collect()
}

fn assert_grad_close(name: &str, analytic: &Tensor, coords: &[usize], numeric: &[f64], tol: f64) {
    let a = analytic
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    for (&i, &n) in coords.iter().zip(numeric) {
        assert!(
            (a[i] - n).abs() <= tol * (1.0 + n.abs()),
            "{name}[{i}]: analytic {} vs finite difference {n}",
            a[i]
        );
    }
}

#[test]
fn conv3d_gradients_match_finite_differences() {
    // Stride 1 with symmetric padding, and every strided case (MONAI's stride-2 downsampling
    // padding, a stride along one axis, the discriminator's).
    let cases = cases();
    for (xs, ws, cfg) in [cases[0], cases[3], cases[4], cases[5], cases[6], cases[9]] {
        let x = random(&xs, 11);
        let w = random(&ws, 12);
        let xv = Var::from_tensor(&tensor(&x, &xs)).unwrap();
        let wv = Var::from_tensor(&tensor(&w, &ws)).unwrap();
        let y = conv3d(xv.as_tensor(), wv.as_tensor(), &cfg).unwrap();
        let r = Tensor::from_vec(random(y.dims(), 13), y.dims(), &Device::Cpu).unwrap();
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = grads.get(xv.as_tensor()).unwrap();
        let gw = grads.get(wv.as_tensor()).unwrap();
        assert_eq!(gx.dims(), &xs);
        assert_eq!(gw.dims(), &ws);
        // The loss is linear in x and in w, so central differences are exact up to rounding.
        let coords_x: Vec<usize> = (0..x.len()).step_by(x.len() / 23 + 1).collect();
        let wt = tensor(&w, &ws);
        let fx = |t: &Tensor| conv3d(t, &wt, &cfg).unwrap();
        let nx = finite_difference(&fx, &x, &xs, &r, &coords_x, 0.05);
        assert_grad_close("dL/dx", gx, &coords_x, &nx, 2e-3);
        let coords_w: Vec<usize> = (0..w.len()).step_by(w.len() / 17 + 1).collect();
        let xt = tensor(&x, &xs);
        let fw = |t: &Tensor| conv3d(&xt, t, &cfg).unwrap();
        let nw = finite_difference(&fw, &w, &ws, &r, &coords_w, 0.05);
        assert_grad_close("dL/dw", gw, &coords_w, &nw, 2e-3);
        // The fast kernel's gradients equal candle's autograd through the reference path.
        let xv2 = Var::from_tensor(&tensor(&x, &xs)).unwrap();
        let wv2 = Var::from_tensor(&tensor(&w, &ws)).unwrap();
        let y2 = conv3d_reference(xv2.as_tensor(), wv2.as_tensor(), &cfg).unwrap();
        let g2 = (&y2 * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(diff(gx, g2.get(xv2.as_tensor()).unwrap()) < 1e-4);
        assert!(diff(gw, g2.get(wv2.as_tensor()).unwrap()) < 1e-4);
    }
}

/// With one operand carrying no gradient (an image, a detached tensor, frozen weights), the
/// other's gradient is the same bits as with both.
#[test]
fn conv3d_gradient_of_one_operand_alone() {
    let (xs, ws, cfg) = cases()[9];
    let x = tensor(&random(&xs, 21), &xs);
    let w = tensor(&random(&ws, 22), &ws);
    let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
    let backward = |x: &Tensor, w: &Tensor| {
        let y = conv3d(x, w, &cfg).unwrap();
        y.sqr().unwrap().sum_all().unwrap().backward().unwrap()
    };
    let values = |t: Option<&Tensor>| t.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let both = backward(xv.as_tensor(), wv.as_tensor());
    let weight_only = backward(&x, wv.as_tensor());
    assert!(weight_only.get(&x).is_none());
    assert_eq!(
        values(weight_only.get(wv.as_tensor())),
        values(both.get(wv.as_tensor()))
    );
    let input_only = backward(xv.as_tensor(), &w);
    assert!(input_only.get(&w).is_none());
    assert_eq!(
        values(input_only.get(xv.as_tensor())),
        values(both.get(xv.as_tensor()))
    );
}

#[test]
fn bad_input_is_a_typed_error_not_a_panic() {
    let x = Tensor::zeros((1, 2, 4, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((3, 2, 3, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let cfg = Conv3dConfig::new(1, 1);
    let msg = |r: candle_core::Result<Tensor>| r.unwrap_err().to_string();
    // Wrong rank.
    let e = msg(conv3d(&x.flatten_from(3).unwrap(), &w, &cfg));
    assert!(e.contains("rank-5"), "{e}");
    // Channel mismatch.
    let w3 = Tensor::zeros((3, 5, 3, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let e = msg(conv3d(&x, &w3, &cfg));
    assert!(e.contains("2 channels") && e.contains("expect 5"), "{e}");
    // Zero-size dimension.
    let x0 = Tensor::zeros((1, 2, 0, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let e = msg(conv3d(&x0, &w, &cfg));
    assert!(e.contains("zero-sized"), "{e}");
    // Kernel larger than the padded input.
    let x2 = Tensor::zeros((1, 2, 2, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let e = msg(conv3d(&x2, &w, &Conv3dConfig::default()));
    assert!(e.contains("smaller than the kernel"), "{e}");
    // Zero stride.
    let e = msg(conv3d(&x, &w, &Conv3dConfig::new(1, 0)));
    assert!(e.contains("stride"), "{e}");
}
