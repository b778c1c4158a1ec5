//! Branch-free f32 elementary functions and lane sums, so that loops over them vectorise.

/// `e^x` in f32 to about 2 ulp (Cephes' `expf`: `2^k · p(r)`, a degree-7 polynomial on
/// `|r| ≤ ln 2 / 2`), branch-free so that loops over it vectorise; saturates outside
/// [−87.3, 88.3] and takes NaN as −87.3 (the results stay finite and positive; SiLU of NaN is
/// still NaN, through its other factor).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in f32 and the rest.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // `max` and `min` return the other operand for NaN (`clamp` would keep it).
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.3).min(88.3);
    let fx = x * LOG2E + 0.5;
    // SAFETY (both conversions): now |fx| < 128 and k is an integer in [−126, 127], so both
    // are in i32's range (unlike `as`, these need no saturation, so loops over `exp`
    // vectorise).
    let truncated = unsafe { fx.to_int_unchecked::<i32>() } as f32;
    let k = if truncated > fx {
        truncated - 1.0
    } else {
        truncated
    };
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = ((((1.987_569_2e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((unsafe { k.to_int_unchecked::<i32>() } + 127) << 23) as u32)
}

/// `erf(x)` in f32 to 6e-7 absolute (Abramowitz & Stegun 7.1.26: `1 − p(t)·e^{−x²}`,
/// `t = 1 / (1 + 0.3275911·|x|)`, a degree-5 polynomial; 1.5e-7 in exact arithmetic, the rest
/// f32 rounding), odd in `x`; NaN stays NaN.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let p = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let y = 1.0 - p * exp(-a * a);
    y.copysign(x)
}

/// `Σ f(v)` over `values`, summed as [`lane_sum_pairs`] does.
pub(crate) fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    lane_sum_pairs(values, values, |v, _| f(v))
}

/// `Σ f(a_i, b_i)` over two equally long slices: f32 sums in 16 independent lanes (so the
/// compiler vectorises them) over blocks of at most 4096 values, each block's total added in
/// f64.
pub(crate) fn lane_sum_pairs(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    const LANES: usize = 16;
    a.chunks(4096)
        .zip(b.chunks(4096))
        .map(|(a, b)| {
            let mut acc = [0f32; LANES];
            let mut lanes = a.chunks_exact(LANES).zip(b.chunks_exact(LANES));
            for (ca, cb) in &mut lanes {
                for ((acc, &x), &y) in acc.iter_mut().zip(ca).zip(cb) {
                    *acc += f(x, y);
                }
            }
            let done = a.len() / LANES * LANES;
            let tail: f32 = a[done..]
                .iter()
                .zip(&b[done..])
                .map(|(&x, &y)| f(x, y))
                .sum();
            acc.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_f64_within_a_few_ulp() {
        let mut worst = 0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        for x in [
            -1e4f32,
            -100.0,
            100.0,
            1e4,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ] {
            let y = exp(x);
            assert!(y.is_finite() && y > 0.0, "exp({x}) = {y}");
        }
    }

    #[test]
    fn fast_erf_matches_f64() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let want = erf_f64(x as f64);
            worst = worst.max((erf(x) as f64 - want).abs());
        }
        assert!(worst < 6e-7, "worst absolute error {worst}");
        assert!(erf(0.0).abs() < 1e-7);
        assert_eq!(erf(f32::INFINITY), 1.0);
        assert_eq!(erf(f32::NEG_INFINITY), -1.0);
        assert!(erf(f32::NAN).is_nan());
    }

    /// erf in f64 to about 1e-15 (its Maclaurin series below 3, 1 − erfc's continued fraction
    /// above).
    fn erf_f64(x: f64) -> f64 {
        let a = x.abs();
        let y = if a < 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(a) = e^{−a²}/√π · 1/(a + 1/2/(a + 1/(a + 3/2/(a + …))))
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
        };
        y.copysign(x)
    }
}
