"""A pixel-aligned synthetic scene shaped like a decoder's output, for the I/O and renderer benchmarks.

AnySplat predicts one Gaussian per context pixel (13 views of 448x448 = 2.6M without voxelisation, the
size `generate --tiny` writes): each sits on its pixel's ray at the predicted depth with a footprint of
about a pixel. This builds the same structure from an orbit of cameras, deterministically.
"""

from __future__ import annotations

import math

import torch

import common  # noqa: F401  (before vist3a: puts this tree's repository on sys.path, ahead of an installed vist3a)

from vist3a.gaussians import Gaussians
from vist3a.render import orbit_cameras


def pixel_aligned_scene(views: int = 13, size: int = 448, degree: int = 4, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    c2w, K = orbit_cameras(torch.zeros(3), 3.0, views, 15.0, 50.0, size, size)
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    means, scales = [], []
    for v in range(views):
        f, cx, cy = float(K[v, 0, 0]), float(K[v, 0, 2]), float(K[v, 1, 2])
        rays = torch.stack([(xs - cx) / f, (ys - cy) / f, torch.ones_like(xs)], -1).reshape(-1, 3)
        depth = 2.5 + 0.4 * torch.sin(xs.reshape(-1) / 37.0) * torch.cos(ys.reshape(-1) / 23.0)
        cam = rays * depth[:, None]
        means.append(cam @ c2w[v, :3, :3].T + c2w[v, :3, 3])
        scales.append((depth / f)[:, None] * (0.5 + torch.rand(cam.shape[0], 3, generator=g)))
    n = views * size * size
    q = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    sh = torch.randn(n, 3, (degree + 1) ** 2, generator=g) * 0.05
    sh[:, :, 0] = torch.randn(n, 3, generator=g) * 0.6
    return Gaussians(torch.cat(means), torch.cat(scales), q, torch.sigmoid(torch.randn(n, generator=g) * 2), sh)


def scene_size(views: int, size: int) -> int:
    return views * size * size


assert math.isclose(scene_size(13, 448), 2_609_152)
