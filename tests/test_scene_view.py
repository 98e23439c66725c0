"""view_hint: up from predicted cameras, else from the shape of the splats (flat axis, snapped, signed)."""

import math

import torch

from vist3a.gaussians import Gaussians
from vist3a.scene_view import up_from_cameras, up_from_points, view_hint


def _flat_cloud(n, normal_axis, seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(n, 3, generator=g) * 2.0
    pts[:, normal_axis] *= 0.15
    return pts


def _gaussians(means):
    n = means.shape[0]
    return Gaussians(means, torch.full((n, 3), 0.01), torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4).contiguous(),
                     torch.full((n,), 0.9), torch.zeros(n, 3, 1))


def test_up_from_cameras_is_minus_y_of_the_mean_camera():
    c2w = torch.eye(4).repeat(3, 1, 1)
    tilt = math.radians(20)
    c2w[1, :3, :3] = torch.tensor([[1, 0, 0], [0, math.cos(tilt), -math.sin(tilt)], [0, math.sin(tilt), math.cos(tilt)]])
    up = torch.tensor(up_from_cameras(c2w))
    assert up[1] < -0.95 and abs(float(up.norm()) - 1) < 1e-6
    assert up_from_cameras(torch.zeros(2, 4, 4)) is None


def test_flat_scenes_get_the_conventional_axis_sign():
    assert up_from_points(_flat_cloud(5000, 2)) == [0.0, 0.0, 1.0]   # z-up capture (a donut on a table)
    assert up_from_points(_flat_cloud(5000, 1)) == [0.0, -1.0, 0.0]  # OpenCV / AnySplat
    assert up_from_points(_flat_cloud(5000, 0)) == [1.0, 0.0, 0.0]


def test_tilted_flat_scene_keeps_its_normal_and_round_scene_falls_back():
    pts = _flat_cloud(5000, 1)
    a = math.radians(40)
    rot = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])
    up = torch.tensor(up_from_points(pts @ rot.T))
    normal = rot @ torch.tensor([0, -1.0, 0])
    assert float(up @ normal) > 0.98
    ball = torch.randn(5000, 3, generator=torch.Generator().manual_seed(1))
    assert up_from_points(ball) == [0.0, -1.0, 0.0]


def test_view_hint_prefers_cameras_and_reports_its_source():
    g = _gaussians(_flat_cloud(3000, 2))
    hint = view_hint(g)
    assert hint["up_source"] == "points" and hint["up"] == [0.0, 0.0, 1.0]
    assert hint["radius"] > 0 and len(hint["center"]) == 3
    cams = view_hint(g, torch.eye(4)[None])
    assert cams["up_source"] == "cameras" and cams["up"] == [0.0, -1.0, 0.0]
