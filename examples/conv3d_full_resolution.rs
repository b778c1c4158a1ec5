//! One 64→64 3×3×3 convolution over a full-resolution brain volume (1×64×160×224×160, f32),
//! the autoencoder decoder's largest layer: prints the time and the sizes involved.
//!
//! Run: `/usr/bin/time -v cargo run --release -p brain-ldm-nn --example conv3d_full_resolution`
//! ("Maximum resident set size" is the peak memory; see docs/benchmarks.md).

use brain_ldm_nn::{ops::conv3d, Conv3dConfig};
use candle_core::{DType, Device, Tensor};

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::ones((1, 64, 160, 224, 160), DType::F32, &dev)?;
    let w = Tensor::randn(0f32, 0.02, (64, 64, 3, 3, 3), &dev)?;
    let gib = |t: &Tensor| (t.elem_count() * 4) as f64 / (1u64 << 30) as f64;
    let start = std::time::Instant::now();
    let y = conv3d(&x, &w, &Conv3dConfig::new(1, 1))?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "conv3d 64→64 k3 on {:?}: {secs:.2} s; input {:.2} GiB, output {:.2} GiB",
        x.dims(),
        gib(&x),
        gib(&y)
    );
    Ok(())
}
