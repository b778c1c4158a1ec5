"""MONAI reference timings for docs/benchmarks.md ("## Metrics").

Times MONAI's MultiScaleSSIMMetric (3D, kernel_size=4, other arguments default) and
SSIMMetric (3D, defaults: Gaussian 11) on one pair of 1x1x160x224x160 float32 volumes,
on the CPU with torch's default thread count. Prints the median and min of `--repeats` runs
after one warm-up.

Usage: /work/pyenv/bin/python scripts/bench_monai_metrics.py [--repeats 5]
"""
import argparse
import time

import torch
from monai.metrics import MultiScaleSSIMMetric, SSIMMetric


def timed(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], times[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    a = torch.rand(1, 1, 160, 224, 160)
    b = (0.7 * a + 0.3 * torch.rand(1, 1, 160, 224, 160)).clamp(0, 1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    ms = MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, kernel_size=4)
    ss = SSIMMetric(spatial_dims=3, data_range=1.0)
    with torch.no_grad():
        for name, metric in [("ms_ssim_k4", ms), ("ssim_gaussian11", ss)]:
            med, best = timed(lambda: metric(a, b), args.repeats)
            print(f"{name}: median {med * 1e3:.1f} ms, min {best * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
