"""Trajectory videos (vist3a.render.trajectory): cameras interpolated by the official rule, RGB and turbo-coloured depth frames."""

from __future__ import annotations

import math

import torch
from helpers import QUANTISABLE_SH, random_gaussians


def test_interpolated_trajectory_follows_the_official_rule():
    from vist3a.render import look_at
    from vist3a.render.trajectory import interpolate_cameras

    eyes = torch.tensor([[3.0, 0, 0], [0, 0, 3.0], [-3.0, 0.5, 0]])
    c2w = torch.stack([look_at(e, torch.zeros(3)) for e in eyes])
    K = torch.tensor([[[100.0, 0, 32], [0, 100, 32], [0, 0, 1]], [[120.0, 0, 32], [0, 120, 32], [0, 0, 1]],
                      [[80.0, 0, 30], [0, 80, 34], [0, 0, 1]]])
    cams, Ks = interpolate_cameras(c2w, K, between=10)
    assert cams.shape == (22, 4, 4) and Ks.shape == (22, 3, 3)  # (V-1)(t+1): the last camera is not rendered
    torch.testing.assert_close(cams[0], c2w[0])
    torch.testing.assert_close(cams[11], c2w[1], atol=1e-6, rtol=0)
    t = 3 / 11
    torch.testing.assert_close(cams[3, :3, 3], (1 - t) * c2w[0, :3, 3] + t * c2w[1, :3, 3])
    torch.testing.assert_close(Ks[3], (1 - t) * K[0] + t * K[1])
    R = cams[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(22, 3, 3), atol=1e-5, rtol=0)
    assert (torch.linalg.det(R) > 0).all()
    # the projection of the blended matrix is the closest rotation: for two rotations about one axis it is
    # the rotation by the blended angle's direction (here the halfway one, 45 degrees)
    mid = interpolate_cameras(c2w[:2], K[:2], between=1)[0][1, :3, :3]
    angle = torch.arccos(((c2w[0, :3, :3].T @ mid).trace() - 1) / 2)
    assert abs(float(angle) - math.pi / 4) < 1e-4


def test_trajectory_and_depth_videos_render(tmp_path):
    from vist3a.render import orbit_cameras, scene_bounds
    from vist3a.render.trajectory import colorize_depth, render_trajectory, turbo

    g = random_gaussians(400, 1, 2, **QUANTISABLE_SH)
    center, radius = scene_bounds(g)
    c2w, K = orbit_cameras(center, 3 * radius, 3, 10.0, 50.0, 32, 32)
    seen = []
    rgb, depth = render_trajectory(g, c2w, K, 32, 32, between=2, progress=lambda d, t: seen.append((d, t)))
    assert rgb.shape == depth.shape == (6, 32, 32, 3) and seen[-1] == (6, 6)
    assert (rgb < 0.99).any() and rgb.min() >= 0 and rgb.max() <= 1
    low, mid, high = turbo(torch.tensor([0.15, 0.5, 0.9]))  # blue -> green -> red
    assert low[2] > low[0] and mid[1] > max(mid[0], mid[2]) and high[0] > high[2]
    ramp = colorize_depth(torch.linspace(1, 2, 100).reshape(1, 10, 10, 1))
    assert ramp[0, 2, 0, 2] > ramp[0, 2, 0, 0] and ramp[0, -2, 0, 0] > ramp[0, -2, 0, 2]  # near blue, far red
