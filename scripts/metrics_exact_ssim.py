"""Exact-kernel SSIM reference for brain-ldm-metrics' parity test.

MONAI builds its Gaussian kernel in float32; the 11x11x11 kernel sums to 1 - 1.4e-7, which
shifts the SSIM of two unrelated volumes (in.a vs in.c of the metrics fixture, SSIM ~0.007)
by ~1e-4 relative. This script computes the same SSIM (MONAI's formula, valid-mode, Gaussian
window 11, sigma 1.5, data range 1, k1 0.01, k2 0.03) in float64 with the 1D kernel
normalised in float64, applied separably along each axis.

Usage: python3 scripts/metrics_exact_ssim.py   (needs numpy; reads the fixture directly)
"""
import json
import struct

import numpy as np

FIXTURE = "tests/fixtures/monai/metrics.safetensors"


def load(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    out = {}
    for key, info in header.items():
        start, end = info["data_offsets"]
        buf = raw[8 + n + start : 8 + n + end]
        out[key] = np.frombuffer(buf, dtype=np.float32).reshape(info["shape"])
    return out


def separable(v, g):
    k = len(g)
    for axis in range(3):
        n = v.shape[axis] - k + 1
        v = sum(g[t] * np.take(v, np.arange(t, t + n), axis=axis) for t in range(k))
    return v


def ssim(x, y, k=11, sigma=1.5, c1=1e-4, c2=9e-4):
    g = np.exp(-0.5 * ((np.arange(k) - (k - 1) / 2) / sigma) ** 2)
    g /= g.sum()
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    mx, my = separable(x, g), separable(y, g)
    sx = separable(x * x, g) - mx * mx
    sy = separable(y * y, g) - my * my
    sxy = separable(x * y, g) - mx * my
    cs = (2 * sxy + c2) / (sx + sy + c2)
    return (((2 * mx * my + c1) / (mx**2 + my**2 + c1)) * cs).mean()


t = load(FIXTURE)
a, b, c = (t[f"in.{n}"][0, 0] for n in "abc")
print(f"ssim.ab {ssim(a, b)!r}")
print(f"ssim.ac {ssim(a, c)!r}")
