//! Behaviour tests: the separable filter against a direct (non-separable) convolution,
//! MS-SSIM, the error variants, the diversity protocol and the eval report.
//!
//! Expected numbers come from closed forms stated beside each check, or from the plain
//! reference implementation `direct_ssim` below (MONAI's formula with a full 3D kernel,
//! written out loop by loop).

use brain_ldm_metrics::{
    diversity, evaluate, extract_features, fid, mae, mmd, ms_ssim, mse, psnr, sample_pairs, ssim,
    ssim_and_cs, DiversityConfig, Error, EvalOptions, FeatureExtractor, KernelType, MsSsimConfig,
    PairedConfig, Progress, SsimConfig,
};
use ndarray::{Array2, Array3, ArrayD, ArrayView3, IxDyn};

/// Deterministic pseudo-random values in [0, 1).
fn noise(shape: (usize, usize, usize), seed: u64) -> Array3<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Array3::from_shape_fn(shape, |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    })
}

/// MONAI's SSIM with a full (non-separable) f64 kernel: mean of the valid-mode map.
fn direct_ssim(x: &Array3<f32>, y: &Array3<f32>, k: [usize; 3], cfg: &SsimConfig) -> f64 {
    let g = |n: usize| -> Vec<f64> {
        match cfg.kernel_type {
            KernelType::Uniform => vec![1.0 / n as f64; n],
            KernelType::Gaussian => {
                let w: Vec<f64> = (0..n)
                    .map(|i| {
                        let t = (i as f64 - (n as f64 - 1.0) / 2.0) / cfg.kernel_sigma;
                        (-0.5 * t * t).exp()
                    })
                    .collect();
                let s: f64 = w.iter().sum();
                w.iter().map(|v| v / s).collect()
            }
        }
    };
    let (gd, gh, gw) = (g(k[0]), g(k[1]), g(k[2]));
    let (d, h, w) = x.dim();
    let c1 = (cfg.k1 * cfg.data_range).powi(2);
    let c2 = (cfg.k2 * cfg.data_range).powi(2);
    let mut sum = 0.0;
    let mut count = 0usize;
    for z in 0..=d - k[0] {
        for r in 0..=h - k[1] {
            for c in 0..=w - k[2] {
                let mut m = [0.0f64; 5];
                for a in 0..k[0] {
                    for b in 0..k[1] {
                        for e in 0..k[2] {
                            let wt = gd[a] * gh[b] * gw[e];
                            let xv = f64::from(x[[z + a, r + b, c + e]]);
                            let yv = f64::from(y[[z + a, r + b, c + e]]);
                            m[0] += wt * xv;
                            m[1] += wt * yv;
                            m[2] += wt * xv * xv;
                            m[3] += wt * yv * yv;
                            m[4] += wt * xv * yv;
                        }
                    }
                }
                let (sx, sy, sxy) = (m[2] - m[0] * m[0], m[3] - m[1] * m[1], m[4] - m[0] * m[1]);
                let cs = (2.0 * sxy + c2) / (sx + sy + c2);
                sum += (2.0 * m[0] * m[1] + c1) / (m[0] * m[0] + m[1] * m[1] + c1) * cs;
                count += 1;
            }
        }
    }
    sum / count as f64
}

#[test]
fn separable_filter_matches_direct_convolution() {
    // Anisotropic shape so an axis mix-up would show; correlated pair (b = a + noise).
    let a = noise((9, 13, 11), 1);
    let b = &a * 0.7 + &noise((9, 13, 11), 2) * 0.3;
    for (kind, size) in [(KernelType::Gaussian, 5), (KernelType::Uniform, 3)] {
        let cfg = SsimConfig::default().with_kernel(kind, size);
        let got = ssim(&a, &b, &cfg).unwrap();
        let want = direct_ssim(&a, &b, [size; 3], &cfg);
        assert!((got - want).abs() < 1e-12, "{kind:?}: {got} vs {want}");
    }
}

#[test]
fn two_dimensional_ssim_matches_direct_convolution() {
    // A 2D image is the 3D case with depth 1 and no filtering along depth.
    let a = noise((1, 17, 15), 3);
    let b = &a * 0.5 + &noise((1, 17, 15), 4) * 0.5;
    let cfg = SsimConfig::default().with_kernel(KernelType::Gaussian, 7);
    let a2: Array2<f32> = a.index_axis(ndarray::Axis(0), 0).to_owned();
    let b2: Array2<f32> = b.index_axis(ndarray::Axis(0), 0).to_owned();
    let got = ssim(&a2, &b2, &cfg).unwrap();
    let want = direct_ssim(&a, &b, [1, 7, 7], &cfg);
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
}

#[test]
fn data_range_and_constants_enter_as_in_monai() {
    // Scaling both images by 255 with data_range 255 leaves SSIM unchanged (c1, c2 scale
    // with L², as do the moments) up to the f32 rounding of the scaled inputs.
    let a = noise((12, 12, 12), 5);
    let b = &a * 0.7 + &noise((12, 12, 12), 6) * 0.3;
    let base = ssim(
        &a,
        &b,
        &SsimConfig::default().with_kernel(KernelType::Gaussian, 5),
    )
    .unwrap();
    let mut cfg = SsimConfig::default().with_kernel(KernelType::Gaussian, 5);
    cfg.data_range = 255.0;
    let scaled = ssim(&a.mapv(|v| v * 255.0), &b.mapv(|v| v * 255.0), &cfg).unwrap();
    assert!((base - scaled).abs() < 1e-6, "{base} vs {scaled}");
    // k1 = k2 = 0 on identical non-constant images: exactly 1 wherever σ > 0.
    cfg = SsimConfig::default().with_kernel(KernelType::Uniform, 3);
    cfg.k1 = 0.0;
    cfg.k2 = 0.0;
    let s = ssim_and_cs(&a, &a, &cfg).unwrap();
    assert!((s.ssim - 1.0).abs() < 1e-9 && (s.cs - 1.0).abs() < 1e-9);
}

#[test]
fn non_contiguous_views_give_the_same_result() {
    let a = noise((16, 14, 12), 7);
    let b = noise((16, 14, 12), 8);
    let cfg = SsimConfig::default().with_kernel(KernelType::Gaussian, 5);
    let at = a.clone().reversed_axes();
    let bt = b.clone().reversed_axes();
    let got = ssim(&at, &bt, &cfg).unwrap();
    let want = ssim(
        &at.as_standard_layout().to_owned(),
        &bt.as_standard_layout().to_owned(),
        &cfg,
    )
    .unwrap();
    assert_eq!(got, want);
}

#[test]
fn ms_ssim_of_identical_volumes_is_one() {
    let a = noise((32, 40, 36), 9);
    let cfg = MsSsimConfig::default().with_kernel_size(2);
    let m = ms_ssim(&a, &a, &cfg).unwrap();
    assert!((m - 1.0).abs() < 1e-12, "{m}");
    // One scale: MS-SSIM = SSIM^w.
    let b = &a * 0.8 + &noise((32, 40, 36), 10) * 0.2;
    let one = MsSsimConfig {
        weights: vec![0.5],
        ..MsSsimConfig::default().with_kernel_size(5)
    };
    let s = ssim(&a, &b, &one.ssim_config()).unwrap();
    let m = ms_ssim(&a, &b, &one).unwrap();
    assert!((m - s.powf(0.5)).abs() < 1e-12, "{m} vs {s}^0.5");
}

#[test]
fn too_small_names_the_axis_and_size_needed() {
    // Five scales, window 4: MONAI requires n // 16 ≥ 4, i.e. n ≥ 64.
    let cfg = MsSsimConfig::default().with_kernel_size(4);
    assert_eq!(cfg.min_size(), 64);
    let a = noise((64, 63, 64), 11);
    match ms_ssim(&a, &a, &cfg) {
        Err(Error::TooSmall {
            axis,
            size,
            needed,
            scales,
            kernel_size,
        }) => assert_eq!((axis, size, needed, scales, kernel_size), (1, 63, 64, 5, 4)),
        other => panic!("expected TooSmall, got {other:?}"),
    }
    // MONAI's default window of 11 does not fit the 160-voxel brain axes at five scales.
    assert_eq!(MsSsimConfig::default().min_size(), 176);
    // Single-scale SSIM: the window itself.
    let small = noise((10, 10, 10), 12);
    let err = ssim(&small, &small, &SsimConfig::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooSmall {
                needed: 11,
                size: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("needs at least 11"), "{err}");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let a = noise((12, 12, 12), 13);
    let b = noise((12, 12, 13), 14);
    let cfg = SsimConfig::default().with_kernel(KernelType::Gaussian, 3);
    assert!(matches!(
        ssim(&a, &b, &cfg),
        Err(Error::ShapeMismatch { expected, got, .. }) if expected == [12, 12, 12] && got == [12, 12, 13]
    ));
    let mut nan = a.clone();
    nan[[1, 2, 3]] = f32::NAN;
    assert!(matches!(
        ssim(&a, &nan, &cfg),
        Err(Error::NonFinite { index, ref what, .. }) if index == 12 * 12 + 2 * 12 + 3 && what == "y"
    ));
    assert!(matches!(psnr(&nan, &a, 1.0), Err(Error::NonFinite { .. })));
    let four = ArrayD::<f32>::zeros(IxDyn(&[2, 3, 4, 5]));
    assert!(matches!(
        ssim(&four, &four, &cfg),
        Err(Error::BadRank { .. })
    ));
    let mut bad = cfg.clone();
    bad.kernel_sigma = -1.0;
    assert!(matches!(
        ssim(&a, &a, &bad),
        Err(Error::InvalidConfig {
            name: "kernel_sigma",
            ..
        })
    ));
    // Fewer than two samples.
    let one = Array2::<f32>::zeros((1, 8));
    let two = Array2::<f32>::zeros((2, 8));
    assert!(matches!(
        mmd(&one, &two),
        Err(Error::TooFewSamples {
            needed: 2,
            got: 1,
            ..
        })
    ));
    assert!(matches!(
        brain_ldm_metrics::fid(&one, &two),
        Err(Error::TooFewSamples {
            needed: 2,
            got: 1,
            ..
        })
    ));
    assert!(matches!(
        sample_pairs(1, 1, 0),
        Err(Error::TooFewSamples { .. })
    ));
    assert!(matches!(
        sample_pairs(4, 7, 0),
        Err(Error::TooManyPairs {
            requested: 7,
            samples: 4,
            available: 6
        })
    ));
}

#[test]
fn voxel_errors_follow_their_formulas() {
    let a = Array3::<f32>::zeros((2, 2, 2));
    let b = Array3::<f32>::from_elem((2, 2, 2), 0.5);
    assert_eq!(mse(&a, &b).unwrap(), 0.25);
    assert_eq!(mae(&a, &b).unwrap(), 0.5);
    // 20·log10(1) − 10·log10(0.25) = 6.0206 dB.
    assert!((psnr(&a, &b, 1.0).unwrap() - 6.020599913279624).abs() < 1e-12);
    assert_eq!(psnr(&a, &a, 1.0).unwrap(), f64::INFINITY);
}

#[test]
fn mmd_follows_the_unbiased_linear_kernel_estimator() {
    // y = {(1,0), (0,1), (1,1)}, ŷ = {(2,0), (0,0)}.
    // Σ_{i≠j} yᵢ·yⱼ = 2·(0 + 1 + 1) = 4 → 4/6; Σ_{i≠j} ŷᵢ·ŷⱼ = 0; Σ ŷ·y = 2 + 0 + 2 = 4
    // → MMD = 4/6 + 0 − 2·4/6 = −2/3.
    let y = ndarray::array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]];
    let yp = ndarray::array![[2.0f32, 0.0], [0.0, 0.0]];
    assert!((mmd(&y, &yp).unwrap() + 2.0 / 3.0).abs() < 1e-12);
}

#[test]
fn pairs_are_distinct_deterministic_and_seeded() {
    for (n, count) in [(50, 1000), (46, 1035), (10_000, 1000)] {
        let p = sample_pairs(n, count, 42).unwrap();
        assert_eq!(p.len(), count);
        let set: std::collections::HashSet<_> = p.iter().collect();
        assert_eq!(set.len(), count, "pairs repeat");
        assert!(p.iter().all(|&(a, b)| a < b && b < n));
        assert_eq!(p, sample_pairs(n, count, 42).unwrap());
    }
    assert_ne!(
        sample_pairs(50, 100, 1).unwrap(),
        sample_pairs(50, 100, 2).unwrap()
    );
}

#[test]
fn diversity_is_the_mean_ms_ssim_of_its_pairs() {
    let set: Vec<Array3<f32>> = (0..5)
        .map(|s| {
            let base = noise((32, 32, 32), 100);
            &base * 0.6 + &noise((32, 32, 32), 200 + s) * 0.4
        })
        .collect();
    let cfg = DiversityConfig {
        pairs: 7,
        seed: 3,
        ms_ssim: MsSsimConfig::default().with_kernel_size(2),
    };
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let r = diversity(&set, &cfg, "test", &|p| {
        assert_eq!((p.stage, p.total), ("test", 7));
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!(calls.into_inner(), 7);
    assert_eq!(
        r.pairs.iter().map(|p| (p.a, p.b)).collect::<Vec<_>>(),
        sample_pairs(5, 7, 3).unwrap()
    );
    let mut sum = 0.0;
    for p in &r.pairs {
        let m = ms_ssim(&set[p.a], &set[p.b], &cfg.ms_ssim).unwrap();
        assert_eq!(m, p.ms_ssim);
        sum += m;
    }
    assert!((r.mean_ms_ssim - sum / 7.0).abs() < 1e-15);
}

#[test]
fn eval_report_serialises_and_pairs_by_index() {
    let real: Vec<Array3<f32>> = (0..3).map(|s| noise((16, 16, 16), 300 + s)).collect();
    let fake: Vec<Array3<f32>> = real.iter().map(|v| v.mapv(|x| 0.9 * x)).collect();
    let opts = EvalOptions {
        diversity: Some(DiversityConfig {
            pairs: 3,
            seed: 0,
            ms_ssim: MsSsimConfig::default().with_kernel_size(1),
        }),
        paired: Some(PairedConfig {
            ssim: SsimConfig::default().with_kernel(KernelType::Gaussian, 5),
            max_val: 1.0,
        }),
    };
    let r = evaluate(&real, &fake, &opts, None, &|_| {}).unwrap();
    let paired = r.paired.as_ref().unwrap();
    assert_eq!(paired.pairs.len(), 3);
    for (i, p) in paired.pairs.iter().enumerate() {
        let want = psnr(&fake[i], &real[i], 1.0).unwrap();
        assert_eq!(p.psnr, want);
    }
    assert_eq!(r.real_diversity.as_ref().unwrap().pairs.len(), 3);
    assert!(r.fid.is_none());
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"mean_ms_ssim\""));
    // Paired sets must have equal sizes.
    let mut cfg = opts.clone();
    cfg.diversity = None;
    let err = evaluate(&real, &fake[..2].to_vec(), &cfg, None, &|_| {}).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}

/// Mean of each of the eight octants: a toy 8-feature extractor for FID plumbing tests.
struct Octants;

impl FeatureExtractor for Octants {
    fn feature_dim(&self) -> usize {
        8
    }

    fn extract(&self, v: ArrayView3<'_, f32>) -> brain_ldm_metrics::Result<Vec<f32>> {
        let (d, h, w) = v.dim();
        let mut out = vec![0.0f32; 8];
        let mut count = [0usize; 8];
        for ((i, j, k), x) in v.indexed_iter() {
            let o =
                usize::from(2 * i >= d) * 4 + usize::from(2 * j >= h) * 2 + usize::from(2 * k >= w);
            out[o] += x;
            count[o] += 1;
        }
        out.iter_mut().zip(count).for_each(|(o, c)| *o /= c as f32);
        Ok(out)
    }
}

/// Returns one feature fewer than it declares.
struct Short;

impl FeatureExtractor for Short {
    fn feature_dim(&self) -> usize {
        3
    }

    fn extract(&self, _: ArrayView3<'_, f32>) -> brain_ldm_metrics::Result<Vec<f32>> {
        Ok(vec![0.0; 2])
    }
}

#[test]
fn fid_through_a_feature_extractor_equals_fid_of_its_features() {
    let real: Vec<Array3<f32>> = (0..12).map(|s| noise((8, 8, 8), 400 + s)).collect();
    let fake: Vec<Array3<f32>> = (0..10)
        .map(|s| noise((8, 8, 8), 500 + s).mapv(|x| 0.8 * x + 0.1))
        .collect();
    let calls = std::sync::Mutex::new(Vec::new());
    let progress = |p: Progress| calls.lock().unwrap().push((p.stage, p.done, p.total));
    let opts = EvalOptions::default();
    let r = evaluate(&real, &fake, &opts, Some(&Octants), &progress).unwrap();
    let fr = extract_features(&real, &Octants, "r", &|_| {}).unwrap();
    let ff = extract_features(&fake, &Octants, "f", &|_| {}).unwrap();
    assert_eq!(fr.dim(), (12, 8));
    for (i, v) in real.iter().enumerate() {
        assert_eq!(fr.row(i).to_vec(), Octants.extract(v.view()).unwrap());
    }
    let want = fid(&ff, &fr).unwrap();
    assert_eq!(r.fid, Some(want));
    assert!(want > 0.0);
    let calls = calls.into_inner().unwrap();
    assert_eq!(calls.len(), 22);
    assert_eq!(calls[11], ("features real", 12, 12));
    assert_eq!(calls[21], ("features fake", 10, 10));
    // A set against itself: ≈ 0.
    let same = evaluate(&real, &real, &opts, Some(&Octants), &|_| {}).unwrap();
    assert!(same.fid.unwrap().abs() < 1e-9, "{:?}", same.fid);
    // A vector of the wrong length names the volume.
    match extract_features(&real, &Short, "s", &|_| {}) {
        Err(Error::ShapeMismatch {
            what,
            expected,
            got,
        }) => {
            assert!(what.contains("#0"), "{what}");
            assert_eq!((expected, got), (vec![3], vec![2]));
        }
        other => panic!("{other:?}"),
    }
}
