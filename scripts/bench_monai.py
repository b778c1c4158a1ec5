#!/usr/bin/env python3
"""Times MONAI/PyTorch on the operations docs/benchmarks.md compares brain-ldm with.

Usage (a Python environment with torch and monai, outside the repo):
    python scripts/bench_monai.py conv3d [C_IN C_OUT K PAD D H W]
    python scripts/bench_monai.py ae-decode | ae-encode | unet | sample [--device cuda]
Run under `/usr/bin/time -v` to read the peak memory ("Maximum resident set size"); with
`--device cuda` the peak GPU memory PyTorch allocated is printed instead (docs/cuda.md).
`sample` is one full-size DDIM-50 sample (the bundle UNet, MONAI's DDIMScheduler) and its decode.
Models use the public brain-LDM bundle's configuration with random weights; eval mode, no grad.
Prints the median wall time of the timed repetitions (after one warm-up run).
"""
import statistics
import sys
import time

import torch

torch.manual_seed(0)
DEVICE = torch.device("cpu")


def timed(fn, reps):
    with torch.no_grad():
        fn()
        times = []
        for _ in range(reps):
            if DEVICE.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if DEVICE.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(times), times


def autoencoder():
    from monai.networks.nets import AutoencoderKL

    return AutoencoderKL(
        spatial_dims=3, in_channels=1, out_channels=1, channels=(64, 128, 128, 128),
        latent_channels=3, num_res_blocks=2, norm_num_groups=32, norm_eps=1e-6,
        attention_levels=(False, False, False, False),
        with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False,
    ).eval().to(DEVICE)


def unet():
    from monai.networks.nets import DiffusionModelUNet

    return DiffusionModelUNet(
        spatial_dims=3, in_channels=7, out_channels=3, channels=(256, 512, 768),
        num_res_blocks=2, attention_levels=(False, True, True), norm_num_groups=32,
        norm_eps=1e-6, resblock_updown=True, num_head_channels=(0, 512, 768),
        with_conditioning=True, transformer_num_layers=1, cross_attention_dim=4,
        upcast_attention=True,
    ).eval().to(DEVICE)


def sample(net, ae, ctx):
    """50 DDIM steps of the bundle's sampler (covariates concatenated and as context), decoded."""
    from monai.networks.schedulers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000, schedule="scaled_linear_beta",
                              beta_start=0.0015, beta_end=0.0205, clip_sample=False)
    scheduler.set_timesteps(50)
    x = torch.randn(1, 3, 20, 28, 20, device=DEVICE)
    cond = ctx.reshape(1, 4, 1, 1, 1).expand(1, 4, 20, 28, 20)
    for t in scheduler.timesteps:
        eps = net(torch.cat([x, cond], 1), torch.tensor([int(t)], device=DEVICE), ctx)
        x, _ = scheduler.step(eps, t, x)
    return ae.decode(x)


def main():
    global DEVICE
    args = sys.argv[1:]
    if "--device" in args:
        i = args.index("--device")
        DEVICE = torch.device(args[i + 1])
        del args[i:i + 2]
    what = args[0]
    if what == "conv3d":
        ci, co, k, p, d, h, w = map(int, args[1:8]) if len(args) > 1 else (64, 64, 3, 1, 64, 64, 64)
        conv = torch.nn.Conv3d(ci, co, k, padding=p).to(DEVICE)
        x = torch.randn(1, ci, d, h, w, device=DEVICE)
        med, times = timed(lambda: conv(x), 5)
    elif what == "ae-decode":
        ae = autoencoder()
        z = torch.randn(1, 3, 20, 28, 20, device=DEVICE)
        med, times = timed(lambda: ae.decode(z), 2)
    elif what == "ae-encode":
        ae = autoencoder()
        x = torch.rand(1, 1, 160, 224, 160, device=DEVICE)
        med, times = timed(lambda: ae.encode(x), 2)
    elif what == "unet":
        net = unet()
        x = torch.randn(1, 7, 20, 28, 20, device=DEVICE)
        t = torch.tensor([500], device=DEVICE)
        ctx = torch.rand(1, 1, 4, device=DEVICE)
        med, times = timed(lambda: net(x, t, ctx), 3)
    elif what == "sample":
        net, ae = unet(), autoencoder()
        ctx = torch.tensor([[[1.0, 0.7, 0.7, 0.5]]], device=DEVICE)
        med, times = timed(lambda: sample(net, ae, ctx), 2)
    else:
        sys.exit(f"unknown benchmark {what!r}")
    print(f"{what}: median {med:.3f} s over {len(times)} runs {[round(t, 3) for t in times]} "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads, {DEVICE})")
    if DEVICE.type == "cuda":
        print(f"peak GPU memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
