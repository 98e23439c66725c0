"""Splat files that open everywhere: default SH degree, official-layout PLYs, format conversion."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vist3a.cli import save_scene_outputs
from vist3a.gaussians import VIEWER_SH_DEGREE, Gaussians, load_ply


def make_scene(n: int = 60, degree: int = 4, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=torch.randn(n, 3, generator=g) * 2,
        scales=torch.exp(torch.randn(n, 3, generator=g) - 3),
        rotations=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        opacities=torch.rand(n, generator=g) * 0.98 + 0.01,
        sh=(torch.randn(n, 3, (degree + 1) ** 2, generator=g) * 0.3).clamp(-0.95, 0.95),
    )


def ply_rest_count(path) -> int:
    header = path.read_bytes()[:8192].split(b"end_header")[0].decode()
    return sum(line.startswith("property float f_rest_") for line in header.splitlines())


# ------------------------------------------------------------------------------- default SH degree


def test_default_ply_is_sh_degree_3_and_4_stays_available(tmp_path):
    scene = SimpleNamespace(gaussians=make_scene(degree=4))
    (default,) = save_scene_outputs(scene, tmp_path / "default.ply")
    assert VIEWER_SH_DEGREE == 3 and ply_rest_count(default) == 45  # what SuperSplat / Spark accept
    assert load_ply(default).sh_degree == 3
    (full,) = save_scene_outputs(scene, tmp_path / "full.ply", sh_degree=4)
    assert ply_rest_count(full) == 72 and load_ply(full).sh_degree == 4
    (low,) = save_scene_outputs(SimpleNamespace(gaussians=make_scene(degree=1)), tmp_path / "low.ply")
    assert load_ply(low).sh_degree == 1  # capped at what the scene has, never an error
