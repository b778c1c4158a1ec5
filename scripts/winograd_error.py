#!/usr/bin/env python3
"""Rounding of Winograd F(4, 3) in f32 for several choices of interpolation points, and of
F(2, 3), simulated with NumPy: the three transforms and the channel sum of one 3D tile in
float32 against the direct convolution in float64, as a fraction of the output's largest
magnitude (the figures cited in crates/brain-ldm-nn/src/conv/winograd/f4.rs and
docs/benchmarks.md).

Usage (any Python with numpy): python scripts/winograd_error.py
Prints, per point set, the largest relative error over 4 random tiles at 64, 256 and 768 input
channels (inputs uniform in [-1, 1], weights normal with variance 1/(27·channels), seed 0).
"""
from fractions import Fraction as Fr

import numpy as np

rng = np.random.default_rng(0)


def toom_cook(points, m, r=3):
    """A^T (m×n), G (n×r), B^T (n×n) of F(m, r) for the finite points plus infinity."""
    a = [Fr(p) for p in points]
    k, n = len(a), m + r - 1

    def poly(roots):
        c = [Fr(1)]
        for root in roots:
            nc = [Fr(0)] * (len(c) + 1)
            for d, v in enumerate(c):
                nc[d + 1] += v
                nc[d] -= root * v
            c = nc
        return c

    at = [[a[j] ** i for j in range(k)] + [Fr(int(i == m - 1))] for i in range(m)]
    g = []
    for j in range(k):
        den = Fr(1)
        for i in range(k):
            if i != j:
                den *= a[j] - a[i]
        g.append([a[j] ** l / den for l in range(r)])
    g.append([Fr(0)] * (r - 1) + [Fr(1)])
    bt = []
    for j in range(k):
        c = poly([a[i] for i in range(k) if i != j])
        bt.append(c + [Fr(0)] * (n - len(c)))
    c = poly(a)
    bt.append(c + [Fr(0)] * (n - len(c)))
    as_array = lambda rows: np.array([[float(x) for x in row] for row in rows])
    return as_array(at), as_array(g), as_array(bt)


def along_axes(mat, x, dtype):
    mat = mat.astype(dtype)
    x = np.einsum("ai,ijk->ajk", mat, x)
    x = np.einsum("bj,ajk->abk", mat, x)
    return np.einsum("ck,abk->abc", mat, x)


def tile_error(at, g, bt, channels):
    m, n = at.shape
    d = rng.uniform(-1, 1, (channels, n, n, n))
    w = rng.standard_normal((channels, 3, 3, 3)) / np.sqrt(27 * channels)
    ref = np.zeros((m, m, m))
    for i in range(m):
        for j in range(m):
            for k in range(m):
                ref[i, j, k] = (d[:, i:i + 3, j:j + 3, k:k + 3] * w).sum()
    f32 = np.float32
    u = np.stack([along_axes(g, w[c].astype(f32), f32) for c in range(channels)])
    v = np.stack([along_axes(bt, d[c].astype(f32), f32) for c in range(channels)])
    y = along_axes(at, (u * v).sum(0, dtype=f32), f32)
    return np.abs(y - ref).max() / np.abs(ref).max()


CASES = [
    ("F(2, 3), points 0, 1, -1", [0, 1, -1], 2),
    ("F(4, 3), points 0, 1, -1, 2, -2", [0, 1, -1, 2, -2], 4),
    ("F(4, 3), points 0, 1, -1, 2, -1/2 (brain-ldm)", [0, 1, -1, 2, Fr(-1, 2)], 4),
    ("F(4, 3), points 0, 1, -1, 1/2, -1/2", [0, 1, -1, Fr(1, 2), Fr(-1, 2)], 4),
]
for name, points, m in CASES:
    at, g, bt = toom_cook(points, m)
    errors = [max(tile_error(at, g, bt, c) for _ in range(4)) for c in (64, 256, 768)]
    print(f"{name}: " + ", ".join(f"{c} ch {e:.2g}" for c, e in zip((64, 256, 768), errors)))
