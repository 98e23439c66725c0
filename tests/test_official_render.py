"""The render settings of the official code wherever a number or a video comes from a render: the trajectory
and depth videos against the official writer run on the CPU (fixture), and the settings each caller passes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vist3a.render import OFFICIAL_RENDER
from vist3a.render import trajectory as traj

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "trajectory_video_official"


@pytest.fixture(scope="module")
def official():
    return load_file(str(FIXTURE.with_suffix(".safetensors"))), json.loads(FIXTURE.with_suffix(".json").read_text())


def _levels(images01: torch.Tensor) -> np.ndarray:
    from vist3a.batch_media import truncate_to_uint8_levels

    return (truncate_to_uint8_levels(images01) * 255).round().to(torch.uint8).numpy()


def test_trajectory_cameras_are_the_official_interpolation(official):
    from vist3a.render.cameras import denormalize_intrinsics

    data, meta = official
    H, W = meta["height"], meta["width"]
    assert meta["image_shape_asked"] == [H, W] and not meta["cov_ignore"]
    cams, Ks = traj.interpolate_cameras(data["c2w"], denormalize_intrinsics(data["intrinsics"], W, H), meta["between"])
    torch.testing.assert_close(cams, data["asked_extrinsics"], atol=2e-6, rtol=0)  # float32 SVD there
    torch.testing.assert_close(Ks, denormalize_intrinsics(data["asked_intrinsics"], W, H), atol=1e-5, rtol=0)


def test_gs_video_frames_are_the_official_ones(official):
    data, _ = official
    assert np.array_equal(_levels(data["color"].permute(0, 2, 3, 1).clamp(0, 1)), data["gs_frames"].numpy())


def test_depth_video_frames_are_the_official_ones(official):
    """Accumulated depth -> 1%/99% quantiles of every V-th frame -> matplotlib's turbo -> truncation: bit-exact."""
    pytest.importorskip("matplotlib")
    data, meta = official
    assert traj.depth_colormap_name() == "matplotlib turbo"
    colours = traj.colorize_depth(data["depth"][..., None], sample_every=meta["views"])
    ours = _levels(colours)
    assert ours.shape == tuple(data["depth_frames"].shape)
    assert np.array_equal(ours, data["depth_frames"].numpy())
    assert meta["writer_kwargs"]["depth.mp4"]["fps"] == meta["writer_kwargs"]["gs.mp4"]["fps"] == 20


def test_turbo_colormap_edges_and_the_fallback(monkeypatch):
    x = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5, float("nan")])
    monkeypatch.setattr(traj, "_matplotlib_turbo", lambda: None)  # as without matplotlib: the polynomial fit
    assert "polynomial" in traj.depth_colormap_name()
    fallback = traj.turbo_colormap(x)
    assert torch.equal(fallback[:5], traj.turbo(x[:5])) and torch.isfinite(fallback).all()
    monkeypatch.undo()
    pytest.importorskip("matplotlib")
    import matplotlib

    want = matplotlib.colormaps["turbo"](x.numpy())[:, :3]  # under, 0, middle, 1.0, over, NaN (black)
    assert np.array_equal(traj.turbo_colormap(x).numpy(), want.astype(np.float32))
    assert np.array_equal(want[0], want[1]) and np.array_equal(want[3], want[4]) and not want[5].any()
    table = traj._matplotlib_turbo()  # float32 copies keep every colour's 8-bit level (the official truncation)
    assert np.array_equal(_levels(table.float()), (table.numpy() * 255).astype(np.uint8))


def test_trajectory_renders_with_the_official_settings(monkeypatch):
    """gs.mp4 / depth.mp4 (batch, generate --views, the Render Views node) render as the official decoder:
    OFFICIAL_RENDER and the accumulated depth; explicit arguments still choose other settings."""
    seen = []

    def fake(g, c2w, K, W, H, **kw):
        seen.append(kw)
        n = c2w.shape[0]
        return torch.zeros(n, H, W, 3), torch.ones(n, H, W, 1), torch.rand(n, H, W, 1)

    monkeypatch.setattr(traj, "render_gaussians", fake)
    g = type("G", (), {"means": torch.zeros(1, 3)})()
    c2w = torch.eye(4).repeat(3, 1, 1)
    K = torch.tensor([[10.0, 0, 4], [0, 10, 4], [0, 0, 1]]).repeat(3, 1, 1)
    traj.render_trajectory(g, c2w, K, 8, 8, between=1)
    assert seen[0] == dict(OFFICIAL_RENDER.kwargs(), depth_mode="accumulated")
    traj.render_trajectory(g, c2w, K, 8, 8, between=1, near=0.1, far=100.0, radius_clip=0.0, depth_mode="expected")
    assert seen[-1] == dict(near=0.1, far=100.0, radius_clip=0.0, background=1.0, depth_mode="expected")


def test_reward_renders_with_the_official_settings():
    """The alignment reward renders from the decoder's covariances on white with near 1e-10 / far 1e10 / clip 0.1
    (the official reward goes through DecoderSplattingCUDA, which ignores its 0.1 / 100); the earlier settings
    (black, 0.1 / 100, no clip) stay one config change away."""
    from dataclasses import replace
    from types import SimpleNamespace

    from vist3a.render import look_at, rasterize, world_to_camera
    from vist3a.render.torch_backend import covariance_from_quat_scale
    from vist3a_train.align import reward_renders
    from vist3a_train.common.config import RewardConfig

    gen = torch.Generator().manual_seed(5)
    n = 40
    means = torch.randn(n, 3, generator=gen) * 0.3
    means[0] = torch.tensor([0.0, 0.0, -2.95])  # 5 cm in front of the first camera: only a near plane < 0.05 draws it
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1)
    scales = torch.full((n, 3), 0.05)
    scales[0] = 0.002
    g = SimpleNamespace(means=means, opacities=torch.full((n,), 0.8), harmonics=torch.randn(n, 3, 4, generator=gen) * 0.3,
                        covariances=covariance_from_quat_scale(quats, scales))
    c2w = torch.stack([look_at((0.0, 0.0, -3.0), (0.0, 0.0, 0.0)), look_at((2.0, 0.5, -2.0), (0.0, 0.0, 0.0))])
    intr = torch.tensor([[0.9, 0, 0.5], [0, 0.9, 0.5], [0, 0, 1.0]]).repeat(2, 1, 1)
    rc = RewardConfig()
    assert (rc.render_background, rc.render_near, rc.render_far, rc.render_radius_clip) == (1.0, 1e-10, 1e10, 0.1)
    ours = reward_renders(g, c2w, intr, 24, rc)
    K = intr * torch.tensor([24.0, 24.0, 1.0])[:, None]
    rgb, alpha, _ = rasterize(means, None, None, g.opacities, g.harmonics, world_to_camera(c2w), K, 24, 24,
                              covars=g.covariances, **OFFICIAL_RENDER.kwargs())
    assert ours.shape == (2, 3, 24, 24)
    assert torch.equal(ours, rgb.clamp(0, 1).permute(0, 3, 1, 2) * 2 - 1)
    assert (alpha < 1e-6).any() and (ours.permute(0, 2, 3, 1)[alpha[..., 0] < 1e-6] == 1.0).all()  # white
    earlier = reward_renders(g, c2w, intr, 24, replace(rc, render_background=0.0, render_near=0.1, render_far=100.0,
                                                       render_radius_clip=0.0))
    assert (earlier.permute(0, 2, 3, 1)[alpha[..., 0] < 1e-6] == -1.0).all()  # black
    assert (ours[0, :, 12, 12] - earlier[0, :, 12, 12]).abs().max() > 0.1  # the 5 cm splat covers the centre
