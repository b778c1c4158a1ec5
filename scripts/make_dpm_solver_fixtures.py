"""Generates tests/fixtures/diffusers/dpm_solver.safetensors: full DPM-Solver++ sampling loops
of diffusers' DPMSolverMultistepScheduler (algorithm_type="dpmsolver++"), for the parity test
crates/brain-ldm-schedulers/tests/diffusers_dpm_solver.rs.

How it was run (diffusers is not in the project's reference venv /work/pyenv, which has
MONAI 1.6.1 and torch 2.15.0+cu132; a side venv reusing that torch was made outside the repo):
    /work/pyenv/bin/python -m venv /tmp/venv_diff
    echo "$(/work/pyenv/bin/python -c 'import site; print(site.getsitepackages()[0])')" \
        > "$(/tmp/venv_diff/bin/python -c 'import site; print(site.getsitepackages()[0])')/pyenv.pth"
    /tmp/venv_diff/bin/pip install diffusers        # 0.42.1
    /tmp/venv_diff/bin/python scripts/make_dpm_solver_fixtures.py [--out PATH]
The versions used are written into the fixture's `config` metadata.

Contents (f32; int64 timesteps). Every case uses the brain-LDM bundle's schedule
(num_train_timesteps 1000, beta_schedule "scaled_linear", 0.0015..0.0205) and
timestep_spacing "trailing"; `config.cases` lists each case's other settings with diffusers'
argument names. x starts at `in.x_T` (2, 3, 4, 5, 4); at step k the model output
`in.<case>.model_output.<k>` = tanh(x) + 0.1·cos(t/100) (a fixed nonlinear function of the
diffusers trajectory) gives `out.<case>.sample.<k>` (the step's prev_sample);
`out.<case>.timesteps` and `out.<case>.sigmas` are the scheduler's grid.
"""

import argparse
import json
import struct
from pathlib import Path

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler

OUT = Path(__file__).resolve().parent.parent / "tests/fixtures/diffusers/dpm_solver.safetensors"
SHAPE = (2, 3, 4, 5, 4)
SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0205)
CASES = {
    "eps_midpoint_zero_n10": dict(prediction_type="epsilon", solver_order=2, solver_type="midpoint", final_sigmas_type="zero", num_inference_steps=10),
    "v_midpoint_sigmamin_n20": dict(prediction_type="v_prediction", solver_order=2, solver_type="midpoint", final_sigmas_type="sigma_min", num_inference_steps=20),
    "sample_heun_zero_n20": dict(prediction_type="sample", solver_order=2, solver_type="heun", final_sigmas_type="zero", num_inference_steps=20),
    "eps_heun_sigmamin_n10": dict(prediction_type="epsilon", solver_order=2, solver_type="heun", final_sigmas_type="sigma_min", num_inference_steps=10),
    "eps_order1_zero_n10": dict(prediction_type="epsilon", solver_order=1, solver_type="midpoint", final_sigmas_type="zero", num_inference_steps=10),
}


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    tmp.rename(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    torch.manual_seed(20240502)
    t = {"in.x_T": torch.randn(SHAPE)}
    for name, case in CASES.items():
        n = case["num_inference_steps"]
        s = DPMSolverMultistepScheduler(
            **SCHEDULE,
            algorithm_type="dpmsolver++",
            timestep_spacing="trailing",
            lower_order_final=True,
            **{k: v for k, v in case.items() if k != "num_inference_steps"},
        )
        s.set_timesteps(n)
        t[f"out.{name}.timesteps"] = s.timesteps.clone()
        t[f"out.{name}.sigmas"] = s.sigmas.clone()
        x = t["in.x_T"].clone()
        for k, ts in enumerate(s.timesteps.tolist()):
            out = torch.tanh(x) + 0.1 * np.cos(ts / 100.0)
            t[f"in.{name}.model_output.{k}"] = out
            x = s.step(out, ts, x).prev_sample
            t[f"out.{name}.sample.{k}"] = x

    import diffusers

    config = {
        "generator": "scripts/make_dpm_solver_fixtures.py",
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "schedule": SCHEDULE,
        "algorithm_type": "dpmsolver++",
        "timestep_spacing": "trailing",
        "lower_order_final": True,
        "cases": CASES,
    }
    arrays = {k: v.detach().numpy() for k, v in t.items()}
    save_safetensors(arrays, {"config": json.dumps(config)}, args.out)
    print(f"wrote {args.out} ({len(arrays)} tensors)")


if __name__ == "__main__":
    main()
