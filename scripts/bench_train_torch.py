#!/usr/bin/env python3
"""One training step at batch 1 in PyTorch + MONAI, the counterpart of
`cargo bench -p brain-ldm-train --bench train_step` (benches/train_step.rs, issue 11).

Usage (a Python environment with torch and monai, outside the repo), one configuration per
invocation so that `/usr/bin/time -v` gives each its own peak memory ("Maximum resident set
size"; the script also prints ru_maxrss):

    python scripts/bench_train_torch.py ae_40x56x40 [--warmup 2] [--steps 5] [--threads 2]
    python scripts/bench_train_torch.py unet_64_128_latent_10x14x10
    python scripts/bench_train_torch.py unet_64_128_192_latent_20x28x20

Prints the median wall time of the timed steps (after the warm-up steps). Each step is what
brain-ldm-train's `train_step` does at batch 1, with its losses, in the same order:

* ae_40x56x40: AutoencoderKL (channels 32/64/64, 1 res block, 16 groups, no attention) on a
  1×1×40×56×40 image; L1 + 1e-6·KL (0.5·Σ(μ² + σ² − log σ² − 1) per sample, mean over the
  batch) + 0.005·least-squares patch adversarial loss (MONAI's PatchAdversarialLoss) of a
  PatchDiscriminator (3 layers, 32 channels), its backward pass; the discriminator's loss
  0.5·(fake + real) on the detached reconstruction and the image, its backward pass; AdamW
  steps of both (lr 2e-4, no weight decay).
* unet_64_128_latent_10x14x10: DiffusionModelUNet (channels 64/128, attention at level 2 with
  head channels 0/128, 2 res blocks, resblock up/down, cross-attention dim 4, upcast
  attention) on a latent drawn from a cached distribution (μ + σ·ε, scaled), noised by
  MONAI's DDPMScheduler (scaled linear betas 0.0015–0.0205, 1000 steps), the 4 covariates
  concatenated as channels (7×10×14×10 input) and given as the cross-attention context
  (10 % replaced by the null condition), MSE on the velocity target; backward; AdamW (lr 3e-4).
* unet_64_128_192_latent_20x28x20: the same with channels 64/128/192, attention at levels 2–3
  (head channels 0/128/192), on a 7×20×28×20 input.

No EMA, no gradient clipping, no learning-rate schedule (as the Rust benchmark's settings).
"""
import argparse
import resource
import statistics
import time

import torch
import torch.nn.functional as F

CONFIGS = ("ae_40x56x40", "unet_64_128_latent_10x14x10", "unet_64_128_192_latent_20x28x20")


def autoencoder_step():
    from monai.losses import PatchAdversarialLoss
    from monai.networks.nets import AutoencoderKL, PatchDiscriminator

    ae = AutoencoderKL(
        spatial_dims=3, in_channels=1, out_channels=1, channels=(32, 64, 64), latent_channels=3,
        num_res_blocks=1, norm_num_groups=16, norm_eps=1e-6,
        attention_levels=(False, False, False),
        with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False,
    ).train()
    disc = PatchDiscriminator(spatial_dims=3, channels=32, in_channels=1, num_layers_d=3).train()
    opt_g = torch.optim.AdamW(ae.parameters(), lr=2e-4, weight_decay=0.0)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=2e-4, weight_decay=0.0)
    adv = PatchAdversarialLoss(criterion="least_squares")
    kl_weight, adv_weight = 1e-6, 0.005
    x = torch.rand(1, 1, 40, 56, 40)

    def step():
        opt_g.zero_grad(set_to_none=True)
        recon, mu, sigma = ae(x)
        l1 = F.l1_loss(recon.float(), x.float())
        kl = 0.5 * torch.sum(mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2)) - 1, dim=[1, 2, 3, 4])
        kl = torch.sum(kl) / kl.shape[0]
        g_adv = adv(disc(recon.contiguous().float())[-1], target_is_real=True, for_discriminator=False)
        loss = l1 + kl_weight * kl + adv_weight * g_adv
        loss.backward()
        opt_d.zero_grad(set_to_none=True)  # drop the generator loss's discriminator gradients
        fake = adv(disc(recon.contiguous().detach())[-1], target_is_real=False, for_discriminator=True)
        real = adv(disc(x.contiguous().detach())[-1], target_is_real=True, for_discriminator=True)
        d_loss = 0.5 * (fake + real)
        d_loss.backward()
        opt_g.step()
        opt_d.step()
        return [loss.item(), l1.item(), kl.item(), g_adv.item(), d_loss.item()]

    return step


def unet_step(channels, attention, heads, latent):
    from monai.networks.nets import DiffusionModelUNet
    from monai.networks.schedulers import DDPMScheduler

    unet = DiffusionModelUNet(
        spatial_dims=3, in_channels=7, out_channels=3, channels=channels,
        attention_levels=attention, num_head_channels=heads, num_res_blocks=2,
        norm_num_groups=32, norm_eps=1e-6, resblock_updown=True, with_conditioning=True,
        transformer_num_layers=1, cross_attention_dim=4, upcast_attention=True,
    ).train()
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.0015,
        beta_end=0.0205, prediction_type="v_prediction", clip_sample=False,
    )
    opt = torch.optim.AdamW(unet.parameters(), lr=3e-4, weight_decay=0.0)
    shape = (1, 3) + latent
    # The cached latent distribution of one subject and its normalised covariates.
    mu, sigma = torch.randn(shape), 0.1 + 0.05 * torch.rand(shape)
    cond, null = torch.rand(1, 4), torch.full((1, 4), -1.0)
    scale = 1.0 / (mu + sigma * torch.randn(shape)).std().item()

    def step():
        opt.zero_grad(set_to_none=True)
        t = torch.randint(0, scheduler.num_train_timesteps, (1,))
        c = null if torch.rand(()).item() < 0.1 else cond
        z = (mu + sigma * torch.randn(shape)) * scale
        noise = torch.randn(shape)
        noisy = scheduler.add_noise(original_samples=z, noise=noise, timesteps=t)
        inp = torch.cat([noisy, c.view(1, 4, 1, 1, 1).expand(1, 4, *latent)], dim=1)
        pred = unet(inp, timesteps=t, context=c.unsqueeze(1))
        target = scheduler.get_velocity(z, noise, t)
        loss = F.mse_loss(pred.float(), target.float())
        value = loss.item()
        loss.backward()
        opt.step()
        return [value]

    return step


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", choices=CONFIGS)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--steps", type=int, default=5, help="timed steps (median printed)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.config == "ae_40x56x40":
        step = autoencoder_step()
    elif a.config == "unet_64_128_latent_10x14x10":
        step = unet_step((64, 128), (False, True), (0, 128), (10, 14, 10))
    else:
        step = unet_step((64, 128, 192), (False, True, True), (0, 128, 192), (20, 28, 20))
    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        start = time.perf_counter()
        losses = step()
        times.append(time.perf_counter() - start)
    import monai

    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{a.config}: median {statistics.median(times):.3f} s over {len(times)} steps "
          f"{[round(t, 3) for t in times]}, last losses {[round(v, 4) for v in losses]}, "
          f"peak RSS {rss_mib:.0f} MiB (torch {torch.__version__}, monai {monai.__version__}, "
          f"{torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
