//! Times one f32 3D convolution, the counterpart of
//! `python scripts/bench_monai.py conv3d C_IN C_OUT K PAD D H W` (PyTorch's `nn.Conv3d`):
//! one warm-up, then the median of the timed repetitions.
//!
//! Run: `cargo run --release -p brain-ldm-nn --example conv3d_time -- [C_IN C_OUT K PAD D H W [REPS]]`
//! (default: 64 64 3 1 64 64 64 5, the case of docs/benchmarks.md). Built with `--features cuda`
//! it runs on the first CUDA GPU when one is present (docs/cuda.md), else on the CPU.

use brain_ldm_nn::{ops::conv3d, Conv3dConfig};
use candle_core::{Device, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let [c_in, c_out, k, pad, d, h, w, reps] = match args.as_slice() {
        [] => [64, 64, 3, 1, 64, 64, 64, 5],
        &[a, b, c, e, f, g, i] => [a, b, c, e, f, g, i, 5],
        &[a, b, c, e, f, g, i, r] => [a, b, c, e, f, g, i, r.max(1)],
        _ => return Err("expected C_IN C_OUT K PAD D H W [REPS]".into()),
    };
    let device = Device::cuda_if_available(0)?;
    let x = Tensor::randn(0f32, 1.0, (1, c_in, d, h, w), &device)?;
    let weight = Tensor::randn(0f32, 0.05, (c_out, c_in, k, k, k), &device)?;
    let config = Conv3dConfig::new(pad, 1);
    let output = conv3d(&x, &weight, &config)?;
    device.synchronize()?;
    let voxels = output.elem_count() / c_out;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = std::time::Instant::now();
        drop(conv3d(&x, &weight, &config)?);
        device.synchronize()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[reps / 2];
    let flops = 2.0 * (c_in * c_out * k * k * k * voxels) as f64;
    println!(
        "conv3d {c_in}->{c_out} k{k} on {d}x{h}x{w} ({device:?}): median {median:.4} s over {reps} runs, {:.1} GFLOP/s",
        flops / median / 1e9
    );
    Ok(())
}
