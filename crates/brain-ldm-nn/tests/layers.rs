//! Norms, resampling, attention and the timestep embedding: fast paths against their
//! composed-op or closed-form definitions, and gradients against finite differences.

use brain_ldm_nn::ops::{avg_pool3d, upsample_nearest3d, upsample_nearest3d_reference};
use brain_ldm_nn::{attention, timestep_embedding, AttentionConfig, GroupNorm, LayerNorm};
use candle_core::{DType, Device, Module, Tensor, Var};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // A deterministic pseudo-random tensor in [-1, 1) (candle's RNG is not seedable per call).
    let mut state = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Central differences of `Σ f(x)·r` with respect to element `i` of `x` (f64 throughout).
fn numeric_grad(f: &dyn Fn(&Tensor) -> Tensor, x: &Tensor, r: &Tensor, i: usize, eps: f64) -> f64 {
    let v = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let at = |delta: f64| {
        let mut w = v.clone();
        w[i] += delta;
        let t = Tensor::from_vec(w, x.dims(), &Device::Cpu).unwrap();
        (f(&t) * r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    (at(eps) - at(-eps)) / (2.0 * eps)
}

#[test]
fn group_norm_matches_the_torch_definition() {
    let x = randn(&[2, 8, 3, 4, 5], 1).affine(3.0, 0.5).unwrap();
    let gain = randn(&[8], 2);
    let shift = randn(&[8], 3);
    let gn = GroupNorm::new(gain.clone(), shift.clone(), 4, 1e-6).unwrap();
    let fused = gn.forward(&x).unwrap();
    // Definition (torch.nn.GroupNorm): per (sample, group) mean and biased variance.
    let flat = x.reshape((2, 4, 2 * 60)).unwrap();
    let mean = flat.mean_keepdim(2).unwrap();
    let centred = flat.broadcast_sub(&mean).unwrap();
    let var = centred.sqr().unwrap().mean_keepdim(2).unwrap();
    let normed = centred
        .broadcast_div(&(var + 1e-6).unwrap().sqrt().unwrap())
        .unwrap()
        .reshape((2, 8, 3, 4, 5))
        .unwrap();
    let expected = normed
        .broadcast_mul(&gain.reshape((1, 8, 1, 1, 1)).unwrap())
        .unwrap()
        .broadcast_add(&shift.reshape((1, 8, 1, 1, 1)).unwrap())
        .unwrap();
    assert!(max_diff(&fused, &expected) < 1e-5);
    let fused_silu = gn.forward_silu(&x).unwrap();
    assert!(max_diff(&fused_silu, &expected.silu().unwrap()) < 1e-5);
}

/// The definition of `torch.nn.GroupNorm` (+ SiLU) in candle ops, differentiable.
fn group_norm_definition(x: &Tensor, gain: &Tensor, shift: &Tensor, groups: usize) -> Tensor {
    let dims = x.dims().to_vec();
    let flat = x.reshape((dims[0], groups, ())).unwrap();
    let mean = flat.mean_keepdim(2).unwrap();
    let centred = flat.broadcast_sub(&mean).unwrap();
    let var = centred.sqr().unwrap().mean_keepdim(2).unwrap();
    let mut per_channel = vec![1; dims.len()];
    per_channel[1] = dims[1];
    centred
        .broadcast_div(&(var + 1e-6).unwrap().sqrt().unwrap())
        .unwrap()
        .reshape(dims)
        .unwrap()
        .broadcast_mul(&gain.reshape(per_channel.clone()).unwrap())
        .unwrap()
        .broadcast_add(&shift.reshape(per_channel).unwrap())
        .unwrap()
}

#[test]
fn group_norm_gradients_match_the_definition() {
    let x = randn(&[2, 8, 3, 4, 5], 11);
    // A non-uniform upstream gradient, so that every term of the backward pass matters.
    let upstream = randn(&[2, 8, 3, 4, 5], 12);
    for silu in [false, true] {
        let vars: Vec<Var> = [x.clone(), randn(&[8], 13), randn(&[8], 14)]
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let [xv, gain, shift] = [0, 1, 2].map(|i| vars[i].as_tensor().clone());
        let gn = GroupNorm::new(gain.clone(), shift.clone(), 4, 1e-6).unwrap();
        let fused = if silu {
            gn.forward_silu(&xv).unwrap()
        } else {
            gn.forward(&xv).unwrap()
        };
        let mut reference = group_norm_definition(&xv, &gain, &shift, 4);
        if silu {
            reference = reference.silu().unwrap();
        }
        assert!(max_diff(&fused, &reference) < 1e-5);
        let loss = |y: &Tensor| (y * &upstream).unwrap().sum_all().unwrap();
        let got = loss(&fused).backward().unwrap();
        let want = loss(&reference).backward().unwrap();
        for (name, t) in [("x", &xv), ("gain", &gain), ("shift", &shift)] {
            let (g, w) = (got.get(t).unwrap(), want.get(t).unwrap());
            assert_eq!(g.dims(), w.dims(), "{name}");
            let scale = w.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            let scale = scale.to_scalar::<f32>().unwrap().max(1.0);
            let err = max_diff(g, w);
            assert!(err < 1e-5 * scale, "silu {silu}: grad {name} off by {err}");
        }
    }
}

#[test]
fn group_norm_rejects_bad_groups_and_channels() {
    let w = Tensor::ones(6, DType::F32, &Device::Cpu).unwrap();
    let e = GroupNorm::new(w.clone(), w.clone(), 4, 1e-5).unwrap_err();
    assert!(
        e.to_string().contains("4 groups do not divide 6 channels"),
        "{e}"
    );
    let gn = GroupNorm::new(w.clone(), w, 3, 1e-5).unwrap();
    let x = Tensor::zeros((1, 5, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let e = gn.forward(&x).unwrap_err();
    assert!(e.to_string().contains("5 channels"), "{e}");
}

#[test]
fn layer_norm_inference_and_tracked_paths_agree() {
    let x = randn(&[2, 7, 6], 4);
    let ln = LayerNorm::new(randn(&[6], 5), randn(&[6], 6), 1e-5);
    let fast = ln.forward(&x).unwrap();
    let xv = Var::from_tensor(&x).unwrap();
    let tracked = ln.forward(xv.as_tensor()).unwrap();
    assert!(max_diff(&fast, &tracked) < 1e-5);
    let grads = tracked
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(grads.get(xv.as_tensor()).is_some());
}

#[test]
fn upsample_fast_equals_reference_and_gradient_is_block_sum() {
    let x = randn(&[2, 3, 3, 2, 4], 7);
    for factors in [[2, 2, 2], [1, 3, 2]] {
        let fast = upsample_nearest3d(&x, factors).unwrap();
        let reference = upsample_nearest3d_reference(&x, factors).unwrap();
        assert_eq!(max_diff(&fast, &reference), 0.0);
    }
    // Finite differences through the fast op (linear, so exact up to rounding).
    let r = randn(&[2, 3, 6, 4, 8], 8).to_dtype(DType::F64).unwrap();
    let xv = Var::from_tensor(&x).unwrap();
    let y = upsample_nearest3d(xv.as_tensor(), [2, 2, 2]).unwrap();
    let grads = (y.to_dtype(DType::F64).unwrap() * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = grads
        .get(xv.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let x64 = x.to_dtype(DType::F64).unwrap();
    let f = |t: &Tensor| {
        upsample_nearest3d(&t.to_dtype(DType::F32).unwrap(), [2, 2, 2])
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    };
    for i in [0, 5, 17, 40, 71] {
        let n = numeric_grad(&f, &x64, &r, i, 1e-2);
        assert!((g[i] - n).abs() < 1e-4, "element {i}: {} vs {n}", g[i]);
    }
}

#[test]
fn avg_pool_is_the_window_mean() {
    let x = randn(&[1, 2, 5, 4, 6], 9);
    let y = avg_pool3d(&x, 2).unwrap();
    assert_eq!(y.dims(), &[1, 2, 2, 2, 3]);
    let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let ys = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let at = |c: usize, z: usize, yy: usize, xx: usize| xs[((c * 5 + z) * 4 + yy) * 6 + xx];
    for c in 0..2 {
        for z in 0..2 {
            for yy in 0..2 {
                for xx in 0..3 {
                    let mut s = 0.0;
                    for (a, b, cc) in (0..8).map(|i| (i / 4, (i / 2) % 2, i % 2)) {
                        s += at(c, 2 * z + a, 2 * yy + b, 2 * xx + cc);
                    }
                    let got = ys[((c * 2 + z) * 2 + yy) * 3 + xx];
                    assert!((got - s / 8.0).abs() < 1e-6);
                }
            }
        }
    }
    assert!(avg_pool3d(&x, 6).is_err());
}

/// softmax(scale·q·kᵀ)·v per head, written out with plain loops.
fn attention_loops(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Tensor {
    let (b, nq, c) = q.dims3().unwrap();
    let nk = k.dim(1).unwrap();
    let dv = v.dim(2).unwrap() / heads;
    let d = c / heads;
    let q = q.to_dtype(DType::F64).unwrap().to_vec3::<f64>().unwrap();
    let k = k.to_dtype(DType::F64).unwrap().to_vec3::<f64>().unwrap();
    let v = v.to_dtype(DType::F64).unwrap().to_vec3::<f64>().unwrap();
    let mut out = vec![0f64; b * nq * heads * dv];
    for n in 0..b {
        for h in 0..heads {
            for i in 0..nq {
                let s: Vec<f64> = (0..nk)
                    .map(|j| {
                        (0..d)
                            .map(|e| q[n][i][h * d + e] * k[n][j][h * d + e])
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                for e in 0..dv {
                    out[((n * nq + i) * heads + h) * dv + e] = (0..nk)
                        .map(|j| (s[j] - m).exp() / z * v[n][j][h * dv + e])
                        .sum();
                }
            }
        }
    }
    Tensor::from_vec(out, (b, nq, heads * dv), &Device::Cpu).unwrap()
}

#[test]
fn chunked_attention_equals_the_definition() {
    let q = randn(&[2, 37, 8], 10);
    let k = randn(&[2, 11, 8], 11);
    let v = randn(&[2, 11, 6], 12);
    let expected = attention_loops(&q, &k, &v, 2, 0.5);
    for max_scores in [1 << 20, 2 * 2 * 11 * 5, 1] {
        let cfg = AttentionConfig {
            num_heads: 2,
            scale: 0.5,
            upcast: false,
            max_scores,
        };
        let y = attention(&q, &k, &v, &cfg)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        assert!(max_diff(&y, &expected) < 1e-5, "max_scores {max_scores}");
    }
    // Half precision with an f32 softmax.
    let cfg = AttentionConfig {
        upcast: true,
        ..AttentionConfig::new(2, 4)
    };
    let bf = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
    let y = attention(&bf(&q), &bf(&k), &bf(&v), &cfg).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    let expected = attention_loops(&q, &k, &v, 2, 0.5);
    assert!(max_diff(&y.to_dtype(DType::F64).unwrap(), &expected) < 3e-2);
    // Mismatched heads are an error, not a panic.
    assert!(attention(&q, &k, &v, &AttentionConfig::new(3, 2)).is_err());
}

#[test]
fn attention_gradients_match_finite_differences() {
    let q = randn(&[1, 5, 4], 13).to_dtype(DType::F64).unwrap();
    let k = randn(&[1, 3, 4], 14).to_dtype(DType::F64).unwrap();
    let v = randn(&[1, 3, 4], 15).to_dtype(DType::F64).unwrap();
    let r = randn(&[1, 5, 4], 16).to_dtype(DType::F64).unwrap();
    let cfg = AttentionConfig {
        max_scores: 6,
        ..AttentionConfig::new(2, 2)
    };
    let (qv, kv, vv) = (
        Var::from_tensor(&q).unwrap(),
        Var::from_tensor(&k).unwrap(),
        Var::from_tensor(&v).unwrap(),
    );
    let y = attention(qv.as_tensor(), kv.as_tensor(), vv.as_tensor(), &cfg).unwrap();
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let inputs = [(&q, &qv), (&k, &kv), (&v, &vv)];
    for (which, (t, var)) in inputs.iter().enumerate() {
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let f = |x: &Tensor| {
            let mut args = [q.clone(), k.clone(), v.clone()];
            args[which] = x.clone();
            attention(&args[0], &args[1], &args[2], &cfg).unwrap()
        };
        for (i, gi) in g.iter().enumerate() {
            let n = numeric_grad(&f, t, &r, i, 1e-5);
            assert!((gi - n).abs() < 1e-7, "input {which}[{i}]: {gi} vs {n}");
        }
    }
}

#[test]
fn timestep_embedding_is_cos_then_sin() {
    let t = Tensor::new(&[0f32, 1.0, 999.0], &Device::Cpu).unwrap();
    let e = timestep_embedding(&t, 7, 10000.0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let half = 3;
    for (row, &ti) in e.iter().zip(&[0f64, 1.0, 999.0]) {
        assert_eq!(row.len(), 7);
        for i in 0..half {
            let f = (-(10000f64.ln()) * i as f64 / half as f64).exp();
            assert!((row[i] as f64 - (ti * f).cos()).abs() < 2e-4, "cos {i}");
            assert!(
                (row[half + i] as f64 - (ti * f).sin()).abs() < 2e-4,
                "sin {i}"
            );
        }
        assert_eq!(row[6], 0.0, "odd dim pads one zero");
    }
}
