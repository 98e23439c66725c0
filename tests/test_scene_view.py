"""scene_view: up from predicted cameras, else from the shape of the splats (flat axis, snapped, signed); the start
camera, the most-visible cut and the packed preview the browser viewer gets."""

import math

import pytest
import torch
from helpers import plain_gaussians

from vist3a.formats.spz import SpzError, load_spz, spz_bytes, widest_fractional_bits
from vist3a.gaussians import Gaussians
from vist3a.scene_view import (
    CameraSet,
    most_visible,
    preview_scene,
    threejs_start_camera,
    up_from_cameras,
    up_from_points,
    view_hint,
)


def _flat_cloud(n, normal_axis, seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(n, 3, generator=g) * 2.0
    pts[:, normal_axis] *= 0.15
    return pts


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
    g = plain_gaussians(_flat_cloud(3000, 2))
    hint = view_hint(g)
    assert hint["up_source"] == "points" and hint["up"] == [0.0, 0.0, 1.0]
    assert hint["radius"] > 0 and len(hint["center"]) == 3
    cams = view_hint(g, torch.eye(4)[None])
    assert cams["up_source"] == "cameras" and cams["up"] == [0.0, -1.0, 0.0]


def test_most_visible_keeps_the_largest_most_opaque_gaussians():
    n = 10
    g = plain_gaussians(torch.arange(n, dtype=torch.float32)[:, None].expand(n, 3).contiguous())
    opacities = torch.linspace(0.1, 1.0, n)
    scales = torch.full((n, 3), 0.01)
    scales[0] = 1.0  # faint but huge: 0.1 * 1.0 beats 1.0 * 0.01
    g = Gaussians(g.means, scales, g.rotations, opacities, g.sh)
    top = most_visible(g, 3)
    assert top.num == 3 and sorted(top.means[:, 0].tolist()) == [0.0, 8.0, 9.0]
    assert most_visible(g, 10) is g and most_visible(g, 50) is g
    with pytest.raises(ValueError, match="limit must be >= 1"):
        most_visible(g, 0)


def test_widest_fractional_bits_fit_24_bit_positions():
    for extent in (0.0, 0.4, 1.0, 3.0, 100.0, 3000.0, 1e6):
        means = torch.tensor([[extent, -extent, 0.5 * extent]])
        bits = widest_fractional_bits(means)
        assert 0 <= bits <= 12
        assert abs(extent) * 2 ** bits < 2 ** 22  # a bit of headroom below the 24-bit signed limit
        if 0 < bits < 12:  # one more bit would leave no headroom
            assert abs(extent) * 2 ** (bits + 1) >= 2 ** 21
    spz_bytes(plain_gaussians(torch.tensor([[3000.0, 0.0, 0.0]])), 0, widest_fractional_bits(torch.tensor([[3000.0, 0, 0]])))
    with pytest.raises((SpzError, ValueError)):  # 12 bits overflow at this extent
        spz_bytes(plain_gaussians(torch.tensor([[3000.0, 0.0, 0.0]])), 0, 12)


def test_start_view_gives_the_vertical_fov_of_the_first_camera():
    K = torch.tensor([[[0.5, 0, 0.5], [0, 0.5, 0.5], [0, 0, 1.0]]])  # f = H/2: vertical fov 90 degrees
    cams = CameraSet(torch.eye(4)[None], K, (64, 128))
    view = cams.start_view()
    assert view["fov_y"] == pytest.approx(90.0) and view["aspect"] == 2.0 and view["c2w"] == torch.eye(4).tolist()


def test_preview_scene_packs_the_cut_scene_with_its_hint(tmp_path):
    pts = _flat_cloud(400, 1)
    g = plain_gaussians(pts)
    cams = CameraSet(torch.eye(4)[None], torch.tensor([[[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]]]), (32, 32))
    preview = preview_scene(g, 100, cams)
    assert preview.count == 100 and preview.total == 400
    (tmp_path / "p.spz").write_bytes(preview.spz)
    back = load_spz(tmp_path / "p.spz")
    assert back.num == 100 and back.sh_degree == 0
    fields = preview.fields()
    assert fields["format"] == "spz" and fields["up_source"] == "cameras" and "camera" in fields
    assert set(fields) >= {"center", "radius", "up", "count", "total"}
    assert "camera" not in preview_scene(g, 1000).fields()
    with pytest.raises(ValueError, match="no Gaussians to preview"):
        preview_scene(g.select(torch.zeros(400, dtype=torch.bool)), 10)


def _project(camera: dict, points: torch.Tensor, aspect: float = 1.0) -> torch.Tensor:
    """NDC (x, y) of scene points seen by a three.js camera dict (world = scene turned 180 deg about x, +y up)."""
    v = lambda d: torch.tensor([d["x"], d["y"], d["z"]], dtype=torch.float64)  # noqa: E731
    eye, target = v(camera["position"]), v(camera["target"])
    world = points.double() * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
    f = (target - eye) / (target - eye).norm()
    right = torch.linalg.cross(f, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    right = right / right.norm()
    up = torch.linalg.cross(right, f)
    d = world - eye
    z = d @ f
    assert bool((z > 0).all()), "points behind the camera"
    tan_v = math.tan(math.radians(camera["fov"]) / 2)
    return torch.stack([(d @ right) / z / (tan_v * aspect), (d @ up) / z / tan_v], dim=1)


@pytest.mark.parametrize("aspect", [1.0, 0.5])
def test_threejs_start_camera_frames_the_robust_scene_from_the_first_camera_side(aspect):
    """The start camera for three.js splat viewers (ComfyUI's Preview Splat): it looks at the robust centre, from
    the first camera's side and above (world +y = scene -y), and every inlier is in view; floaters 100 units
    away neither move it nor shrink the scene to a speck."""
    g = torch.Generator().manual_seed(0)
    centre = torch.tensor([1.0, 0.5, 3.0])
    pts = centre + (torch.rand(5000, 3, generator=g) - 0.5) * torch.tensor([2.0, 1.0, 2.0])
    floaters = torch.randn(40, 3, generator=g) * 100.0
    scene = plain_gaussians(torch.cat([pts, floaters]))
    cam = threejs_start_camera(scene, torch.eye(4)[None], fov_y_deg=35.0, aspect=aspect)
    assert cam["cameraType"] == "perspective" and cam["fov"] == 35.0 and cam["zoom"] == 1
    t = cam["target"]
    assert abs(t["x"] - 1.0) < 0.1 and abs(t["y"] + 0.5) < 0.1 and abs(t["z"] + 3.0) < 0.1, t
    eye = cam["position"]
    assert eye["y"] > t["y"] and eye["z"] > t["z"], (eye, t)  # above, and on the side of the camera at the origin
    ndc = _project(cam, pts, aspect)
    assert float(ndc.abs().max()) < 1.0, float(ndc.abs().max())  # everything inside the view
    assert float(ndc.abs().max()) > 0.4, float(ndc.abs().max())  # and filling it, not a speck
    # without cameras the eye stands on the -z side of the scene (AnySplat's first view)
    free = threejs_start_camera(scene)
    assert free["position"]["z"] > free["target"]["z"]
    with pytest.raises(ValueError, match="fov"):
        threejs_start_camera(scene, fov_y_deg=0)
