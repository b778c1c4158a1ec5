#!/usr/bin/env python3
"""Times MONAI/PyTorch on the operations docs/benchmarks.md compares brain-ldm with.

Usage (a Python environment with torch and monai, outside the repo):
    python scripts/bench_monai.py conv3d [C_IN C_OUT K PAD D H W]
    python scripts/bench_monai.py ae-decode | ae-encode | unet
Run under `/usr/bin/time -v` to read the peak memory ("Maximum resident set size").
Models use the public brain-LDM bundle's configuration with random weights; eval mode, no grad.
Prints the median wall time of the timed repetitions (after one warm-up run).
"""
import statistics
import sys
import time

import torch

torch.manual_seed(0)


def timed(fn, reps):
    with torch.no_grad():
        fn()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times), times


def autoencoder():
    from monai.networks.nets import AutoencoderKL

    return AutoencoderKL(
        spatial_dims=3, in_channels=1, out_channels=1, channels=(64, 128, 128, 128),
        latent_channels=3, num_res_blocks=2, norm_num_groups=32, norm_eps=1e-6,
        attention_levels=(False, False, False, False),
        with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False,
    ).eval()


def main():
    what = sys.argv[1]
    if what == "conv3d":
        ci, co, k, p, d, h, w = map(int, sys.argv[2:9]) if len(sys.argv) > 2 else (64, 64, 3, 1, 64, 64, 64)
        conv = torch.nn.Conv3d(ci, co, k, padding=p)
        x = torch.randn(1, ci, d, h, w)
        med, times = timed(lambda: conv(x), 5)
    elif what == "ae-decode":
        ae = autoencoder()
        z = torch.randn(1, 3, 20, 28, 20)
        med, times = timed(lambda: ae.decode(z), 2)
    elif what == "ae-encode":
        ae = autoencoder()
        x = torch.rand(1, 1, 160, 224, 160)
        med, times = timed(lambda: ae.encode(x), 2)
    elif what == "unet":
        from monai.networks.nets import DiffusionModelUNet

        unet = DiffusionModelUNet(
            spatial_dims=3, in_channels=7, out_channels=3, channels=(256, 512, 768),
            num_res_blocks=2, attention_levels=(False, True, True), norm_num_groups=32,
            norm_eps=1e-6, resblock_updown=True, num_head_channels=(0, 512, 768),
            with_conditioning=True, transformer_num_layers=1, cross_attention_dim=4,
            upcast_attention=True,
        ).eval()
        x = torch.randn(1, 7, 20, 28, 20)
        t = torch.tensor([500])
        ctx = torch.rand(1, 1, 4)
        med, times = timed(lambda: unet(x, t, ctx), 3)
    else:
        sys.exit(f"unknown benchmark {what!r}")
    print(f"{what}: median {med:.3f} s over {len(times)} runs {[round(t, 3) for t in times]} "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
