//! Per-subject random streams: every subject is a pure function of (seed, index).
//!
//! Each (seed, index, stream) triple is hashed (SplitMix64) into the seed of its own
//! ChaCha8 generator, so subjects can be made in any order on any number of threads.
//! Per-voxel noise is counter-based: a hash of (subject key, voxel index).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The independent random streams of one subject.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    /// Sex, age and the volumes drawn for them.
    Covariates = 1,
    /// Pose, deformation, tissue intensities, bias field.
    Anatomy = 2,
    /// The key of the per-voxel noise.
    Noise = 3,
}

/// SplitMix64's finaliser: a bijective 64-bit mix.
#[inline]
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The 64-bit key of one stream of one subject.
pub(crate) fn key(seed: u64, index: u64, stream: Stream) -> u64 {
    mix(mix(mix(seed) ^ index) ^ stream as u64)
}

/// The generator of one stream of one subject.
pub(crate) fn stream(seed: u64, index: u64, stream: Stream) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(key(seed, index, stream))
}

/// A standard normal draw (Box–Muller).
pub(crate) fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A normal draw with mean `mean` and deviation `sd`, redrawn until it lies in
/// `[lo, hi]` (clamped after 1000 tries, which only a nearly empty interval needs).
pub(crate) fn truncated(rng: &mut impl Rng, mean: f64, sd: f64, lo: f64, hi: f64) -> f64 {
    for _ in 0..1000 {
        let x = mean + sd * normal(rng);
        if (lo..=hi).contains(&x) {
            return x;
        }
    }
    mean.clamp(lo, hi)
}

/// A standard normal value that depends only on `key` and `counter`.
#[inline]
pub(crate) fn hash_normal(key: u64, counter: u64) -> f32 {
    let h = mix(key ^ mix(counter));
    let u1 = ((h >> 40) as f32 + 1.0) / 16_777_217.0; // (0, 1]
    let u2 = ((h >> 16) & 0xFF_FFFF) as f32 / 16_777_216.0;
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_normal_has_unit_moments() {
        let n = 200_000;
        let (mut s, mut s2) = (0f64, 0f64);
        for i in 0..n {
            let x = hash_normal(7, i) as f64;
            s += x;
            s2 += x * x;
        }
        let mean = s / n as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((s2 / n as f64 - 1.0).abs() < 0.02);
    }

    #[test]
    fn streams_differ_and_repeat() {
        assert_eq!(key(1, 2, Stream::Anatomy), key(1, 2, Stream::Anatomy));
        assert_ne!(key(1, 2, Stream::Anatomy), key(1, 3, Stream::Anatomy));
        assert_ne!(key(1, 2, Stream::Anatomy), key(1, 2, Stream::Noise));
    }
}
