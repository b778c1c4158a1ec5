#!/usr/bin/env python3
"""Full-size reference for brain-ldm-unet: MONAI's DiffusionModelUNet with the public
brain-LDM bundle's configuration (553 M parameters), random weights (seed 0; the layers MONAI
zero-initialises are drawn too, so every path changes the output), saved under the OLD
GenerativeModels key names as the bundle's model.pt is (`attnK.to_out.0.*`), and one
forward pass on x 1x7x20x28x20 = sin(0.01 * arange), t = 500, context [[1.0, 0.7, 0.7, 0.5]].

Usage (torch + monai, outside the repo; ~2.2 GB per weights file):
    python scripts/make_unet_full_reference.py OUT_DIR
writes OUT_DIR/unet_bundle_oldkeys.pt (weights) and OUT_DIR/unet_bundle_reference.safetensors
(`in.x`, `in.timesteps`, `in.context`, `out.y`). Then:
    BRAIN_LDM_UNET_FULL=OUT_DIR cargo test --release -p brain-ldm-unet --test full_size -- --ignored
"""
import json
import os
import struct
import sys

import torch
from monai.networks.nets import DiffusionModelUNet

out = sys.argv[1]
torch.manual_seed(0)
unet = DiffusionModelUNet(
    spatial_dims=3, in_channels=7, out_channels=3, channels=(256, 512, 768),
    num_res_blocks=2, attention_levels=(False, True, True), norm_num_groups=32,
    norm_eps=1e-6, resblock_updown=True, num_head_channels=(0, 512, 768),
    with_conditioning=True, transformer_num_layers=1, cross_attention_dim=4,
    upcast_attention=True,
).eval()
with torch.no_grad():
    for p in unet.parameters():
        if not p.any():
            p.normal_(0.0, 0.02)
state = {
    k.replace("attn1.out_proj", "attn1.to_out.0").replace("attn2.out_proj", "attn2.to_out.0"): v
    for k, v in unet.state_dict().items()
}
torch.save(state, os.path.join(out, "unet_bundle_oldkeys.pt"))
x = torch.sin(torch.arange(7 * 20 * 28 * 20, dtype=torch.float32) * 0.01).reshape(1, 7, 20, 28, 20)
t = torch.tensor([500])
context = torch.tensor([[[1.0, 0.7, 0.7, 0.5]]])
with torch.no_grad():
    y = unet(x, t, context)

def save_safetensors(tensors, path):
    """Minimal safetensors writer (f32 and i64 tensors), to need no extra package."""
    header, blobs, offset = {}, [], 0
    for name, tensor in tensors.items():
        blob = tensor.contiguous().numpy().tobytes()
        dtype = {torch.float32: "F32", torch.int64: "I64"}[tensor.dtype]
        header[name] = {"dtype": dtype, "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


save_safetensors({"in.x": x, "in.timesteps": t, "in.context": context, "out.y": y},
                 os.path.join(out, "unet_bundle_reference.safetensors"))
print("max |y|", y.abs().max().item(), "torch", torch.__version__)
