"""Generates tests/fixtures/monai/schedulers_extra.safetensors: MONAI 1.6.1 scheduler outputs
that the shared fixture (schedulers.safetensors) does not cover.

Run with the project's reference environment (/work/pyenv: MONAI 1.6.1, torch 2.15.0+cu132,
numpy 2.4.6; CPU):
    /work/pyenv/bin/python scripts/make_scheduler_fixtures.py [--out PATH]
The versions are written into the fixture's `config` metadata. Re-running it on another CPU
reproduces every seeded input bit for bit; outputs that pass through torch's vectorised f32
kernels (tanh, sigmoid, the step arithmetic) can differ in the last bits (checked: at most
9.3e-7 relative to max(1, |value|) against the committed file, well inside the tests' 1e-5).

Contents (all f32 unless stated; `config` metadata lists the settings):
- out.sigmoid_beta.alphas_cumprod: sigmoid_beta, 0.0015..0.0205, sig_range 6;
  out.default.alphas_cumprod: MONAI's default schedule (linear_beta 1e-4..2e-2).
- DDPM variance types at t in {0, 500, 999}: DDPMScheduler(1000, scaled_linear_beta
  0.0015..0.0205, clip_sample=False, variance_type=V).step(in.ddpm.model_output_2c (learned
  types) or in.model_output, t, in.xt) with the noise in.ddpm.<V>.t<t>.variance_noise
  -> out.ddpm.<V>.t<t>.prev / .pred_original.
- DDIM with clipping, set_alpha_to_one=False, steps_offset=1, eta=0.5, set_timesteps(50), at
  t in {1, 481, 981}: out.ddim_opts.<pred>.t<t>.prev / .pred_original, noise in.ddim_opts...
- PNDM loops (10 inference steps, epsilon and v_prediction, skip_prk_steps 0/1): x starts at
  in.pndm.x_T; at evaluation k the model output in.pndm.<mode>.<pred>.model_output.k (a fixed
  nonlinear function of the MONAI trajectory) gives out.pndm.<mode>.<pred>.sample.k; the
  timesteps are out.pndm.<mode>.timesteps (int64). For the PRK mode (skip0) MONAI's
  overwrite of num_inference_steps by the length of the evaluation list is undone after
  set_timesteps (scheduler.num_inference_steps = 10), i.e. the PRK/PLMS step is T // 10 as in
  the PNDM paper and diffusers; see PNDMScheduler's documentation.
"""

import json
import struct
from pathlib import Path

import numpy as np
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler
from monai.networks.schedulers.scheduler import NoiseSchedules

OUT = Path(__file__).resolve().parent.parent / "tests/fixtures/monai/schedulers_extra.safetensors"
BETAS = dict(beta_start=0.0015, beta_end=0.0205)
SHAPE = (2, 3, 4, 5, 4)


def save_safetensors(tensors, metadata, path):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        dtype = {np.dtype("float32"): "F32", np.dtype("int64"): "I64"}[a.dtype]
        b = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    tmp.rename(path)


def with_noise(noise, fn):
    """Runs fn with torch.randn returning `noise` (MONAI draws the step noise itself)."""
    orig = torch.randn
    torch.randn = lambda *a, **k: noise.clone()
    try:
        return fn()
    finally:
        torch.randn = orig


def main():
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    torch.manual_seed(20240501)
    t = {}
    xt = torch.randn(SHAPE)
    mo = torch.randn(SHAPE)
    t["in.xt"], t["in.model_output"] = xt, mo

    t["out.sigmoid_beta.alphas_cumprod"] = DDPMScheduler(1000, "sigmoid_beta", **BETAS).alphas_cumprod
    t["out.default.alphas_cumprod"] = DDPMScheduler().alphas_cumprod

    # DDPM variance types; learned types get 2C channels: [prediction, variance].
    var_learned = torch.sigmoid(torch.randn(SHAPE)) * 0.01  # a positive variance
    var_range = torch.tanh(torch.randn(SHAPE))  # in [-1, 1]
    for vt in ["fixed_large", "learned", "learned_range"]:
        s = DDPMScheduler(1000, "scaled_linear_beta", clip_sample=False, variance_type=vt, **BETAS)
        out = mo
        if vt == "learned":
            out = torch.cat([mo, var_learned], dim=1)
        elif vt == "learned_range":
            out = torch.cat([mo, var_range], dim=1)
        t[f"in.ddpm.{vt}.model_output"] = out
        for ts in [0, 500, 999]:
            noise = torch.randn(SHAPE)
            prev, po = with_noise(noise, lambda: s.step(out, ts, xt))
            t[f"in.ddpm.{vt}.t{ts}.variance_noise"] = noise
            t[f"out.ddpm.{vt}.t{ts}.prev"] = prev
            t[f"out.ddpm.{vt}.t{ts}.pred_original"] = po

    # DDIM with the other options.
    for pred in ["epsilon", "sample", "v_prediction"]:
        s = DDIMScheduler(
            1000, "scaled_linear_beta", clip_sample=True, set_alpha_to_one=False, steps_offset=1,
            prediction_type=pred, **BETAS,
        )
        s.set_timesteps(50)
        for ts in [1, 481, 981]:
            noise = torch.randn(SHAPE)
            prev, po = with_noise(noise, lambda: s.step(mo, ts, xt, eta=0.5))
            t[f"in.ddim_opts.{pred}.t{ts}.variance_noise"] = noise
            t[f"out.ddim_opts.{pred}.t{ts}.prev"] = prev
            t[f"out.ddim_opts.{pred}.t{ts}.pred_original"] = po

    # PNDM loops.
    x_T = torch.randn(SHAPE)
    t["in.pndm.x_T"] = x_T
    for skip in [0, 1]:
        for pred in ["epsilon", "v_prediction"]:
            s = PNDMScheduler(1000, "scaled_linear_beta", skip_prk_steps=bool(skip), prediction_type=pred, **BETAS)
            s.set_timesteps(10)
            s.num_inference_steps = 10  # undo MONAI's overwrite (see the module docstring)
            t[f"out.pndm.skip{skip}.timesteps"] = s.timesteps.clone()
            x = x_T.clone()
            for k, ts in enumerate(s.timesteps.tolist()):
                out = torch.tanh(x) + 0.1 * np.cos(ts / 100.0)
                t[f"in.pndm.skip{skip}.{pred}.model_output.{k}"] = out
                x, _ = s.step(out, ts, x)
                t[f"out.pndm.skip{skip}.{pred}.sample.{k}"] = x

    config = {
        "generator": "scripts/make_scheduler_fixtures.py",
        "monai": __import__("monai").__version__,
        "torch": torch.__version__,
        "num_train_timesteps": 1000,
        "schedule": "scaled_linear_beta",
        "beta_start": 0.0015,
        "beta_end": 0.0205,
        "sigmoid_beta": {"beta_start": 0.0015, "beta_end": 0.0205, "sig_range": 6},
        "ddpm": {"clip_sample": False, "variance_types": ["fixed_large", "learned", "learned_range"], "timesteps": [0, 500, 999]},
        "ddim_opts": {"clip_sample": True, "set_alpha_to_one": False, "steps_offset": 1, "eta": 0.5, "num_inference_steps": 50, "timesteps": [1, 481, 981]},
        "pndm": {"num_inference_steps": 10, "set_alpha_to_one": False, "num_inference_steps_overwrite_undone": True},
    }
    arrays = {k: v.detach().numpy() for k, v in t.items()}
    save_safetensors(arrays, {"config": json.dumps(config)}, args.out)
    print(f"wrote {args.out} ({len(arrays)} tensors)")


if __name__ == "__main__":
    main()
