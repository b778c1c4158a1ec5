"""Reconstruction check of a trained demo autoencoder with MONAI's own AutoencoderKL.

Loads WORK/ae/autoencoder.json + autoencoder.safetensors (MONAI key names) into
monai.networks.nets.AutoencoderKL, reconstructs the first three cohort subjects from the
latent mean, prints each L1 and writes the reconstructions to OUT/recon-<id>.nii.gz, to be
measured with `brain-ldm volumes OUT/recon-*.nii.gz`.

Usage: python scripts/demo_ae_recon.py WORK OUT   (needs torch, monai, nibabel, safetensors)
"""
import json
import sys

import nibabel as nib
import torch
from monai.networks.nets import AutoencoderKL
from safetensors.torch import load_file

work, out = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
cfg = json.load(open(f"{work}/ae/autoencoder.json"))
cfg = {k: v for k, v in cfg.items() if k in AutoencoderKL.__init__.__code__.co_varnames}
ae = AutoencoderKL(**cfg)
ae.load_state_dict(load_file(f"{work}/ae/autoencoder.safetensors"))
ae.eval()
for s in ["000000", "000001", "000002"]:
    img = nib.load(f"{work}/cohort/sub-{s}/anat/sub-{s}_T1w.nii.gz")
    x = torch.tensor(img.get_fdata(), dtype=torch.float32)[None, None]
    with torch.no_grad():
        mu, _ = ae.encode(x)
        r = ae.decode(mu)
    print(s, "L1", (r - x).abs().mean().item())
    nib.save(nib.Nifti1Image(r[0, 0].numpy(), img.affine), f"{out}/recon-{s}.nii.gz")
