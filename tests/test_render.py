"""Renderer, cameras and media: the torch rasteriser against a brute-force per-pixel reference."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import plain_gaussians, random_gaussians
from PIL import Image

from vist3a.gaussians import rgb_to_sh0
from vist3a.render import (
    cameras_from_normalized_intrinsics,
    look_at,
    media,
    orbit_cameras,
    rasterize,
    render_gaussians,
    render_orbit,
    scene_bounds,
    select_backend,
    world_to_camera,
)
from vist3a.render.torch_backend import sh_basis

# ---------------------------------------------------------------- independent reference (float64)


def textbook_real_sh(degree: int, d: np.ndarray) -> np.ndarray:
    """Real SH with the Condon-Shortley phase from associated Legendre recurrences, index l*l+l+m."""
    x, y, z = d
    theta, phi = math.acos(max(-1.0, min(1.0, z))), math.atan2(y, x)
    ct, st = math.cos(theta), math.sin(theta)

    def legendre(l: int, m: int) -> float:
        pmm = (-1) ** m * math.prod(range(1, 2 * m, 2)) * st**m
        if l == m:
            return pmm
        pm1 = ct * (2 * m + 1) * pmm
        for ll in range(m + 2, l + 1):
            pmm, pm1 = pm1, ((2 * ll - 1) * ct * pm1 - (ll + m - 1) * pmm) / (ll - m)
        return pm1

    out = []
    for l in range(degree + 1):
        for m in range(-l, l + 1):
            k = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - abs(m)) / math.factorial(l + abs(m)))
            if m == 0:
                out.append(k * legendre(l, 0))
            elif m > 0:
                out.append(math.sqrt(2) * k * math.cos(m * phi) * legendre(l, m))
            else:
                out.append(math.sqrt(2) * k * math.sin(-m * phi) * legendre(l, -m))
    return np.array(out)


def quat_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation of a wxyz quaternion via (w^2 - v.v) I + 2 v v^T + 2 w [v]x."""
    q = q / np.linalg.norm(q)
    w, v = q[0], q[1:]
    cross = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return (w * w - v @ v) * np.eye(3) + 2 * np.outer(v, v) + 2 * w * cross


def reference_radii(opacity: float, cov2: np.ndarray) -> tuple[int, int]:
    """gsplat 1.5's whole-pixel radii of a projected Gaussian: ceil(extent * sd) per axis, where the extent
    (in standard deviations) reaches alpha 1/255, at most 3.33."""
    extent = min(3.33, math.sqrt(2 * math.log(255 * opacity))) if 255 * opacity > 1 else 0.0
    return math.ceil(extent * math.sqrt(cov2[0, 0])), math.ceil(extent * math.sqrt(cov2[1, 1]))


def reference_render(means, quats, scales, opac, sh, viewmat, K, width, height, near=0.01, far=1e10, radius_clip=0.0):
    """Per-pixel loop over depth-sorted Gaussians, the 3DGS forward pass written out plainly, with gsplat's
    culling: centre z outside [near, far], or both whole-pixel radii <= radius_clip."""
    means, quats, scales, opac, sh, viewmat, K = (
        np.asarray(t, dtype=np.float64) for t in (means, quats, scales, opac, sh, viewmat, K)
    )
    W, t = viewmat[:3, :3], viewmat[:3, 3]
    campos = -W.T @ t
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    degree = int(round(math.sqrt(sh.shape[2]))) - 1
    splats = []
    for i in range(len(means)):
        p = W @ means[i] + t
        if p[2] < near or p[2] > far:
            continue
        R = quat_matrix(quats[i])
        cov = R @ np.diag(scales[i] ** 2) @ R.T
        J = np.array([[fx / p[2], 0, -fx * p[0] / p[2] ** 2], [0, fy / p[2], -fy * p[1] / p[2] ** 2]])
        cov2 = J @ W @ cov @ W.T @ J.T + 0.3 * np.eye(2)
        if max(reference_radii(opac[i], cov2)) <= radius_clip:
            continue
        mean2 = np.array([fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy])
        direction = means[i] - campos
        basis = textbook_real_sh(degree, direction / np.linalg.norm(direction))
        color = np.maximum(sh[i] @ basis + 0.5, 0.0)
        splats.append((p[2], mean2, np.linalg.inv(cov2), opac[i], color))
    splats.sort(key=lambda s: s[0])
    rgb, alpha, depth = np.zeros((height, width, 3)), np.zeros((height, width)), np.zeros((height, width))
    for v in range(height):
        for u in range(width):
            T, c, dep = 1.0, np.zeros(3), 0.0
            for z, mean2, conic, o, color in splats:
                d = np.array([u + 0.5, v + 0.5]) - mean2
                a = min(0.99, o * math.exp(-0.5 * d @ conic @ d))
                if a < 1 / 255:
                    continue
                if T * (1 - a) < 1e-4:
                    break
                c += a * T * color
                dep += a * T * z
                T *= 1 - a
            rgb[v, u], alpha[v, u] = c, 1 - T
            depth[v, u] = dep / (1 - T) if T < 1 else 0.0
    return rgb, alpha, depth


# ---------------------------------------------------------------------------------------- scenes


def random_scene(n: int, degree: int, seed: int, dtype=torch.float32):
    """n Gaussians 2.5-4.5 units in front of an identity camera, inside small_camera's view, as the rasteriser's
    tensors (means, quats, scales, opacities, sh)."""
    g = random_gaussians(n, degree, seed, in_view=(2.5, 4.5), scale_range=(0.05, 0.3), opacity=(0.3, 0.99), sh_std=0.4,
                         dtype=dtype)
    return g.means, g.rotations, g.scales, g.opacities, g.sh


def small_camera(width=24, height=20, dtype=torch.float32):
    K = torch.tensor([[22.0, 0.0, 12.3], [0.0, 21.0, 9.7], [0.0, 0.0, 1.0]], dtype=dtype)
    return torch.eye(4, dtype=dtype)[None], K[None], width, height


# ----------------------------------------------------------------------------------------- tests


def test_sh_basis_matches_textbook_real_harmonics():
    dirs = torch.nn.functional.normalize(torch.randn(40, 3, dtype=torch.float64), dim=-1)
    ours = sh_basis(4, dirs).numpy()
    ref = np.stack([textbook_real_sh(4, d) for d in dirs.numpy()])
    np.testing.assert_allclose(ours, ref, atol=1e-12)


@pytest.mark.parametrize("degree,seed,n", [(0, 0, 3), (1, 1, 4), (3, 2, 5), (4, 3, 5)])
def test_torch_backend_matches_brute_force_reference(degree, seed, n):
    means, quats, scales, opac, sh = random_scene(n, degree, seed)
    viewmats, Ks, W, H = small_camera()
    rgb, alpha, depth = rasterize(means, quats, scales, opac, sh, viewmats, Ks, W, H, backend="torch")
    ref_rgb, ref_alpha, ref_depth = reference_render(means, quats, scales, opac, sh, viewmats[0], Ks[0], W, H)
    assert rgb.shape == (1, H, W, 3) and alpha.shape == (1, H, W, 1) and depth.shape == (1, H, W, 1)
    assert ref_alpha.max() > 0.5, "scene should cover part of the image"
    assert np.abs(rgb[0].numpy() - ref_rgb).max() < 1e-4
    assert np.abs(alpha[0, ..., 0].numpy() - ref_alpha).max() < 1e-4
    assert np.abs(depth[0, ..., 0].numpy() - ref_depth).max() < 1e-4


def test_reference_agreement_with_a_moved_camera_and_termination():
    # Near-opaque splats (alpha capped at 0.99) plus a stack of four 0.95-opaque ones on the view
    # axis: where layers overlap, T falls below 1e-4, so the 3DGS stop rule decides those pixels.
    means, quats, scales, opac, sh = random_scene(5, 2, seed=7, dtype=torch.float64)
    opac = torch.full_like(opac, 0.999)
    scales = scales * 3
    stack = torch.tensor([[0.0, 0.0, z] for z in (2.6, 2.8, 3.0, 3.2)], dtype=torch.float64)
    means = torch.cat([means, stack + torch.tensor([0.3, -0.2, 0.0], dtype=torch.float64)])
    quats = torch.cat([quats, torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64).expand(4, 4)])
    scales = torch.cat([scales, torch.full((4, 3), 0.4, dtype=torch.float64)])
    opac = torch.cat([opac, torch.full((4,), 0.95, dtype=torch.float64)])
    sh = torch.cat([sh, torch.rand(4, 3, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)])
    c2w = look_at((0.3, -0.2, -0.5), (0.0, 0.0, 3.5)).double()
    viewmat = world_to_camera(c2w[None])
    _, Ks, W, H = small_camera(dtype=torch.float64)
    rgb, alpha, depth = rasterize(means, quats, scales, opac, sh, viewmat, Ks, W, H, backend="torch")
    ref_rgb, ref_alpha, ref_depth = reference_render(means, quats, scales, opac, sh, viewmat[0], Ks[0], W, H)
    assert ref_alpha.max() > 1 - 1e-3
    np.testing.assert_allclose(rgb[0].numpy(), ref_rgb, atol=1e-9)
    np.testing.assert_allclose(alpha[0, ..., 0].numpy(), ref_alpha, atol=1e-9)
    np.testing.assert_allclose(depth[0, ..., 0].numpy(), ref_depth, atol=1e-9)


def test_mixed_scene_matches_reference_with_and_without_autograd():
    # Behind the camera, below the 1/255 opacity floor, outside the view, and long thin rotated splats
    # (whose per-row spans are far narrower than their boxes): without autograd the renderer projects
    # everything and masks the invalid ones, under autograd it copies the valid ones out first.
    means, quats, scales, opac, sh = random_scene(14, 3, seed=21, dtype=torch.float64)
    means[0, 2], means[1, 2] = -3.0, 0.004  # behind the camera / before the near plane
    opac[2] = 1e-3  # can never reach alpha 1/255
    means[3, 0] = 40.0  # far off to the side
    scales[4:8] = torch.tensor([1.2, 0.02, 0.03], dtype=torch.float64)  # needles at random angles
    viewmats, Ks, W, H = small_camera(dtype=torch.float64)
    ref = reference_render(means, quats, scales, opac, sh, viewmats[0], Ks[0], W, H)
    assert ref[1].max() > 0.5
    with torch.no_grad():
        plain = rasterize(means, quats, scales, opac, sh, viewmats, Ks, W, H, backend="torch")
    params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, sh)]
    graphed = rasterize(*params, viewmats, Ks, W, H, backend="torch")
    sum(o.sum() for o in graphed).backward()
    assert all(torch.isfinite(p.grad).all() for p in params)
    for ours in (plain, graphed):
        for out, want in zip(ours, ref):
            np.testing.assert_allclose(out[0].detach().numpy().reshape(want.shape), want, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_spans_hold_every_pair_that_passes_the_alpha_test(dtype):
    # The spans are solved in float64 and widened by a rounding bound; brute force over each whole
    # box with the renderer's own test (in the render dtype) must find no pair outside them.
    from vist3a.render import torch_backend as tb

    g = torch.Generator().manual_seed(5)
    n, width, height = 300, 96, 80
    mx, my = torch.rand(n, generator=g, dtype=torch.float64) * width, torch.rand(n, generator=g, dtype=torch.float64) * height
    angle = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
    long, short = 10 ** (torch.rand(n, generator=g, dtype=torch.float64) * 3), 0.3 + torch.rand(n, generator=g, dtype=torch.float64)
    c, s = angle.cos(), angle.sin()
    a, b, cc = long * c * c + short * s * s, (long - short) * c * s, long * s * s + short * c * c  # 2D covariances
    op = 0.004 + 0.995 * torch.rand(n, generator=g, dtype=torch.float64)
    det = a * cc - b * b
    geo = torch.stack([mx, my, cc / det, -b / det, a / det, op, torch.ones(n, dtype=torch.float64)], 1).to(dtype)
    reach = torch.sqrt(2 * torch.log(op * 255).clamp_min(0))
    ex, ey = reach * a.sqrt() + 1.5, reach * cc.sqrt() + 1.5
    x0, x1 = (mx - ex).clamp(0, width - 1).floor(), (mx + ex).clamp(0, width - 1).ceil()
    y0, y1 = (my - ey).clamp(0, height - 1).floor(), (my + ey).clamp(0, height - 1).ceil()
    boxes = torch.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1]).int()
    rows = torch.arange(n)
    owner, pix = tb._pixel_pairs(geo, boxes, rows, torch.zeros(width * height, dtype=torch.bool), width)
    spans = set(zip(owner.tolist(), pix.tolist()))
    passing, total = 0, 0
    for i in range(n):
        bx0, by0, bw, bh = boxes[:, i].tolist()
        ys, xs = torch.meshgrid(torch.arange(by0, by0 + bh), torch.arange(bx0, bx0 + bw), indexing="ij")
        dx, dy = (xs.to(dtype) + 0.5) - geo[i, 0], (ys.to(dtype) + 0.5) - geo[i, 1]
        sigma = 0.5 * (geo[i, 2] * dx * dx + geo[i, 4] * dy * dy) + geo[i, 3] * dx * dy
        alpha = (geo[i, 5] * torch.exp(-sigma)).clamp_max(tb.ALPHA_MAX)
        hit = (alpha >= tb.ALPHA_MIN) & (sigma >= 0)
        pixels = (ys * width + xs)[hit].tolist()
        passing += len(pixels)
        total += bw * bh
        assert all((i, p) in spans for p in pixels), f"Gaussian {i}: a pair passing the alpha test is outside its spans"
    assert total > 3 * passing and len(spans) < 1.1 * passing, (total, len(spans), passing)  # tight, unlike boxes


def test_depth_keys_sort_like_the_depths():
    from vist3a.render.torch_backend import _depth_keys

    depth = torch.cat([torch.rand(1000) * 50, torch.tensor([0.0, -0.0, 1e-30, 3.0, 3.0])])
    for d in (depth, depth.double()):
        assert torch.equal(torch.sort(_depth_keys(d), stable=True).indices, torch.sort(d, stable=True).indices)
    negative = torch.tensor([0.5, -0.2, 0.1])  # only below a negative near plane: float keys
    assert torch.equal(torch.sort(_depth_keys(negative)).indices, torch.tensor([1, 2, 0]))


def test_torch_rasteriser_runs_on_the_cpu_for_devices_without_float64(monkeypatch):
    # Apple MPS has no float64, which the transmittance scan needs: the torch backend computes on the CPU
    # there and hands the images back on the caller's device. Elsewhere it stays where the tensors are.
    import vist3a.render as render

    assert render.torch_compute_device(torch.device("mps")) == torch.device("cpu")
    for name in ("cpu", "cuda:1"):
        assert render.torch_compute_device(torch.device(name)) == torch.device(name)
    asked = []
    monkeypatch.setattr(render, "torch_compute_device", lambda d: asked.append(torch.device(d)) or torch.device("cpu"))
    means, quats, scales, opac, sh = random_scene(4, 1, seed=3)
    viewmats, Ks, W, H = small_camera()
    params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, sh)]
    rgb, alpha, _ = rasterize(*params, viewmats, Ks, W, H, backend="torch")
    assert asked == [torch.device("cpu")] and rgb.device == alpha.device == means.device
    (rgb.sum() + alpha.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


# --------------------------------------------------------------- culling rules (gsplat) and official settings


def _splats_at(pixels_z, scales, opacities, degree=0, seed=0):
    """Float64 Gaussians centred on the given (u, v, z) pixels of small_camera, axis-aligned."""
    _, Ks, _, _ = small_camera(dtype=torch.float64)
    K = Ks[0]
    means = torch.tensor([[(u + 0.5 - float(K[0, 2])) * z / float(K[0, 0]), (v + 0.5 - float(K[1, 2])) * z / float(K[1, 1]), z]
                          for u, v, z in pixels_z], dtype=torch.float64)
    n = means.shape[0]
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64).expand(n, 4).contiguous()
    scales = torch.tensor(scales, dtype=torch.float64).reshape(n, -1).expand(n, 3).contiguous()
    sh = 0.5 * torch.randn(n, 3, (degree + 1) ** 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return means, quats, scales, torch.tensor(opacities, dtype=torch.float64), sh


def _drawn(alpha, pixels):
    return [bool(alpha[0, v, u, 0] > 1e-3) for u, v, _ in pixels]


def test_near_and_far_planes_cull_like_gsplat():
    """gsplat drops a centre with z < near or z > far: one exactly on a plane is drawn, one 1e-9 beyond is not.
    The official near 1e-10 / far 1e10 draw what our former 0.01 / 100 (and 0.1 / 100) culled."""
    from vist3a.render import OFFICIAL_RENDER

    viewmats, Ks, W, H = small_camera(dtype=torch.float64)
    pixels = [(5, 5, 0.5), (15, 5, 0.5 - 1e-9), (5, 14, 4.0), (15, 14, 4.0 + 1e-9)]
    scene = _splats_at(pixels, [0.02, 0.02, 0.2, 0.2], [0.9] * 4, degree=1)
    ours = rasterize(*scene, viewmats, Ks, W, H, near=0.5, far=4.0, backend="torch")
    ref = reference_render(*scene, viewmats[0], Ks[0], W, H, near=0.5, far=4.0)
    for out, want in zip(ours, ref):
        np.testing.assert_allclose(out[0].numpy().reshape(want.shape), want, atol=1e-9)
    assert _drawn(ours[1], pixels) == [True, False, True, False]

    # a splat 5 mm in front of the camera and one 200 units away: both drawn only with the official planes
    pixels = [(12, 10, 0.005), (4, 4, 200.0), (18, 15, 3.0)]
    scene = _splats_at(pixels, [0.0005, 10.0, 0.1], [0.8, 0.9, 0.9], degree=2, seed=1)
    official = {k: v for k, v in OFFICIAL_RENDER.kwargs().items() if k != "background"}
    for planes, drawn in ((official, [True, True, True]), (dict(near=0.01, far=100.0), [False, False, True]),
                          (dict(near=0.1, far=100.0), [False, False, True])):
        ours = rasterize(*scene, viewmats, Ks, W, H, backend="torch", **planes)
        ref = reference_render(*scene, viewmats[0], Ks[0], W, H, **planes)
        for out, want in zip(ours, ref):
            np.testing.assert_allclose(out[0].numpy().reshape(want.shape), want, atol=1e-9)
        assert _drawn(ours[1], pixels) == drawn, planes


def test_radius_clip_drops_gaussians_whose_whole_pixel_radii_are_both_at_most_the_clip():
    """gsplat 1.5: radius per axis = ceil(min(3.33, sqrt(2 ln(255 o))) * sd), dropped when both are <= the clip
    (<=, not <: a radius of exactly 2 goes at clip 2). The official 0.1 drops nothing here (radii are >= 1 px)."""
    viewmats, Ks, W, H = small_camera(dtype=torch.float64)
    pixels = [(4, 4, 3.0), (12, 4, 3.0), (20, 4, 3.0), (6, 14, 3.0), (17, 14, 3.0)]
    sizes = [[0.02] * 3, [0.02] * 3, [0.1] * 3, [0.01, 0.2, 0.01], [0.05] * 3]
    scene = _splats_at(pixels, sizes, [0.012, 0.3, 0.3, 0.05, 0.9], degree=1, seed=2)
    means, quats, scales, opac, sh = scene
    K = Ks[0].numpy()
    radii = []
    for (u, v, z), s, o in zip(pixels, scales.numpy(), opac.numpy()):  # the scene hits radii 1 to 4
        x, y = means[len(radii), 0].item(), means[len(radii), 1].item()
        J = np.array([[K[0, 0] / z, 0, -K[0, 0] * x / z**2], [0, K[1, 1] / z, -K[1, 1] * y / z**2]])
        radii.append(reference_radii(o, J @ np.diag(s**2) @ J.T + 0.3 * np.eye(2)))
    assert radii == [(1, 1), (2, 2), (3, 3), (2, 4), (3, 3)]
    drawn_at = {}
    for clip in (0.0, 0.1, 0.99, 1.0, 1.5, 1.999, 2.0, 2.5, 3.0, 4.0):
        ours = rasterize(*scene, viewmats, Ks, W, H, radius_clip=clip, backend="torch")
        ref = reference_render(*scene, viewmats[0], Ks[0], W, H, radius_clip=clip)
        for out, want in zip(ours, ref):
            np.testing.assert_allclose(out[0].numpy().reshape(want.shape), want, atol=1e-9)
        drawn_at[clip] = _drawn(ours[1], pixels)
        assert drawn_at[clip] == [max(r) > clip for r in radii], clip
    assert drawn_at[0.1] == [True] * 5 and drawn_at[2.0] == [False, False, True, True, True]
    assert drawn_at[1.999][1] and drawn_at[3.0] == [False, False, False, True, False]


def test_official_render_settings_match_the_reference():
    """OFFICIAL_RENDER (white background, near 1e-10, far 1e10, radius clip 0.1) with the accumulated depth
    the official depth video shows, against the brute-force reference."""
    from vist3a.render import OFFICIAL_RENDER, RenderSettings

    assert OFFICIAL_RENDER == RenderSettings(near=1e-10, far=1e10, radius_clip=0.1, background=1.0)
    means, quats, scales, opac, sh = random_scene(6, 3, seed=11, dtype=torch.float64)
    means[0] = torch.tensor([0.0, 0.0, 0.006], dtype=torch.float64)  # in front of 0.01: only official draws it
    scales[0] = 0.0004
    viewmats, Ks, W, H = small_camera(dtype=torch.float64)
    rgb, alpha, acc = rasterize(means, quats, scales, opac, sh, viewmats, Ks, W, H, backend="torch",
                                depth_mode="accumulated", **OFFICIAL_RENDER.kwargs())
    ref_rgb, ref_alpha, ref_depth = reference_render(means, quats, scales, opac, sh, viewmats[0], Ks[0], W, H,
                                                     near=1e-10, far=1e10, radius_clip=0.1)
    assert ref_alpha.max() > 0.5 and (ref_alpha < 0.5).any()
    np.testing.assert_allclose(rgb[0].numpy(), ref_rgb + (1 - ref_alpha)[..., None], atol=1e-9)  # over white
    np.testing.assert_allclose(alpha[0, ..., 0].numpy(), ref_alpha, atol=1e-9)
    np.testing.assert_allclose(acc[0, ..., 0].numpy(), ref_depth * ref_alpha, atol=1e-9)  # sum of w z
    old = rasterize(means, quats, scales, opac, sh, viewmats, Ks, W, H, backend="torch", near=0.01, far=100.0)
    assert (old[1] - alpha).abs().max() > 0.1  # the near splat covers the centre only with the official plane


def test_background_and_plain_colors():
    means, quats, scales, opac, _ = random_scene(4, 0, seed=5)
    colors = torch.rand(4, 3)
    viewmats, Ks, W, H = small_camera()
    bg = torch.tensor([0.2, 0.4, 0.6])
    rgb, alpha, _ = rasterize(means, quats, scales, opac, colors, viewmats, Ks, W, H, background=bg)
    plain, _, _ = rasterize(means, quats, scales, opac, colors, viewmats, Ks, W, H)
    torch.testing.assert_close(rgb, plain + (1 - alpha) * bg)
    # colours given directly equal SH degree 0 encoding the same colours
    sh0 = rgb_to_sh0(colors)[:, :, None]
    via_sh, _, _ = rasterize(means, quats, scales, opac, sh0, viewmats, Ks, W, H, background=bg)
    torch.testing.assert_close(via_sh, rgb, atol=1e-5, rtol=0)


def test_covariances_replace_quats_and_scales():
    means, quats, scales, opac, sh = random_scene(4, 1, seed=9)
    viewmats, Ks, W, H = small_camera()
    rgb, _, _ = rasterize(means, quats, scales, opac, sh, viewmats, Ks, W, H)
    R = torch.tensor(np.stack([quat_matrix(q) for q in quats.double().numpy()]), dtype=torch.float32)
    covars = R @ torch.diag_embed(scales**2) @ R.transpose(1, 2)
    rgb_cov, _, _ = rasterize(means, None, None, opac, sh, viewmats, Ks, W, H, covars=covars)
    torch.testing.assert_close(rgb_cov, rgb, atol=1e-5, rtol=0)


def test_gradients_flow_to_all_gaussian_parameters():
    means, quats, scales, opac, sh = random_scene(5, 3, seed=11)
    params = [p.clone().requires_grad_(True) for p in (means, quats, scales, opac, sh)]
    viewmats, Ks, W, H = small_camera()
    rgb, alpha, depth = rasterize(*params, viewmats, Ks, W, H)
    (rgb.square().sum() + alpha.sum() + 0.1 * depth.sum()).backward()
    for name, p in zip(("means", "quats", "scales", "opacities", "sh"), params):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gradients_match_finite_differences():
    means, quats, scales, opac, sh = random_scene(3, 1, seed=13, dtype=torch.float64)
    viewmats, Ks, W, H = small_camera(12, 10, dtype=torch.float64)
    Ks = Ks * torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64)[:, None]

    gen = torch.Generator().manual_seed(0)
    weights = [torch.rand(1, H, W, c, generator=gen, dtype=torch.float64) for c in (3, 1, 1)]

    def render(m, o, s):  # one random projection of all outputs keeps gradcheck to one backward
        outputs = rasterize(m, quats, scales, o, s, viewmats, Ks, W, H)
        return sum((out * w).sum() for out, w in zip(outputs, weights))

    inputs = tuple(t.clone().requires_grad_(True) for t in (means, opac, sh))
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5)


def test_blob_in_front_of_camera_covers_the_centre_only():
    g = torch.Generator().manual_seed(0)
    n = 300
    means = torch.randn(n, 3, generator=g) * 0.4 + torch.tensor([0.0, 0.0, 4.0])
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    scales = torch.full((n, 3), 0.15)
    opac = torch.full((n,), 0.8)
    sh = rgb_to_sh0(torch.tensor([1.0, 0.0, 0.0])).expand(n, 3)[:, :, None].clone()
    K = torch.tensor([[40.0, 0, 32], [0, 40.0, 32], [0, 0, 1]])[None]
    rgb, alpha, depth = rasterize(means, quats, scales, opac, sh, torch.eye(4)[None], K, 64, 64)
    centre, corner = alpha[0, 28:36, 28:36], alpha[0, :8, :8]
    assert centre.min() > 0.95 and corner.max() < 1e-6
    torch.testing.assert_close(rgb[0, 32, 32], torch.tensor([1.0, 0.0, 0.0]), atol=0.02, rtol=0)
    assert 3.0 < depth[0, 32, 32, 0] < 4.0
    # behind the camera nothing is drawn
    flipped = means * torch.tensor([1.0, 1.0, -1.0])
    _, alpha_behind, _ = rasterize(flipped, quats, scales, opac, sh, torch.eye(4)[None], K, 64, 64)
    assert alpha_behind.max() == 0


def test_many_gaussians_render_in_bounded_batches(monkeypatch):
    from vist3a.render import torch_backend

    means, quats, scales, opac, sh = random_scene(60, 1, seed=17)
    opac[::2] = 0.999  # many pixels terminate early, in one batch or across several
    viewmats, Ks, W, H = small_camera()
    one_go = rasterize(means, quats, scales, opac, sh, viewmats, Ks, W, H)
    monkeypatch.setattr(torch_backend, "PAIR_BUDGET", 1000)  # forces several batches
    seen = []
    real_batches = torch_backend._batches
    monkeypatch.setattr(torch_backend, "_batches", lambda *a: seen.append(real_batches(*a)) or seen[-1])
    batched = rasterize(means, quats, scales, opac, sh, viewmats, Ks, W, H)
    assert len(seen[0]) > 3
    for a, b in zip(one_go, batched):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=0)


@pytest.mark.parametrize("budget", [1 << 20, 1])
def test_termination_rule_holds_within_and_across_batches(monkeypatch, budget):
    from vist3a.render import torch_backend

    monkeypatch.setattr(torch_backend, "PAIR_BUDGET", budget)  # 1: every Gaussian is its own batch
    means = torch.tensor([[0.0, 0.0, z] for z in (2.0, 2.5, 3.0, 3.5)], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64).expand(4, 4)
    scales = torch.full((4, 3), 0.5, dtype=torch.float64)
    opac = torch.tensor([0.99, 0.98, 0.9, 0.2], dtype=torch.float64)
    colors = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.5, 0.5, 0.5]], dtype=torch.float64)
    K = torch.tensor([[[20.0, 0.0, 12.5], [0.0, 20.0, 9.5], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    viewmat = torch.eye(4, dtype=torch.float64)[None]
    rgb, alpha, _ = rasterize(means, quats, scales, opac, colors, viewmat, K, 24, 20)
    # At the pixel the splats are centred on: T = 0.01, then 2e-4; the third would take T to 2e-5 < 1e-4,
    # so the pixel stops there and the faint fourth splat (T would stay above 1e-4) must not be added.
    expected = 0.99 * colors[0] + 0.01 * 0.98 * colors[1]
    torch.testing.assert_close(rgb[0, 9, 12], expected, atol=1e-12, rtol=0)
    assert float(alpha[0, 9, 12, 0]) == pytest.approx(1 - 0.01 * 0.02, abs=1e-12)


MEMORY_SCRIPT = """
import torch
from vist3a.render import orbit_cameras, rasterize, world_to_camera
g = torch.Generator().manual_seed(0)
n = 50_000
params = [torch.randn(n, 3, generator=g) * 0.5,
          torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
          torch.rand(n, 3, generator=g) * 0.05,
          torch.rand(n, generator=g) * 0.9 + 0.05,
          torch.randn(n, 3, 16, generator=g) * 0.3]
c2w, K = orbit_cameras((0.0, 0.0, 0.0), 4.0, 1, width=64, height=64)
with torch.no_grad():
    rgb, alpha, _ = rasterize(*params, world_to_camera(c2w), K, 64, 64)
assert alpha.mean() > 0.3
for p in params:
    p.requires_grad_(True)
rgb, alpha, depth = rasterize(*params, world_to_camera(c2w), K, 64, 64)
(rgb.sum() + depth.sum()).backward()
assert all(torch.isfinite(p.grad).all() for p in params)
# VmHWM belongs to this exec'd address space; ru_maxrss would inherit the parent's (pytest's) peak.
print([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0])
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads VmHWM from /proc/self/status (Linux)")
def test_50k_gaussians_at_64px_stay_under_2gb():
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, env=env, check=True
    )
    peak_kib = int(out.stdout.split()[-1])  # Linux reports KiB; includes torch itself
    assert peak_kib < 2 * 1024 * 1024


def test_rasterize_rejects_bad_inputs():
    means, quats, scales, opac, sh = random_scene(3, 1, seed=1)
    viewmats, Ks, W, H = small_camera()
    with pytest.raises(ValueError, match="quats"):
        rasterize(means, quats[:2], scales, opac, sh, viewmats, Ks, W, H)
    with pytest.raises(ValueError, match="sh_degree"):
        rasterize(means, quats, scales, opac, sh, viewmats, Ks, W, H, sh_degree=2)
    with pytest.raises(ValueError, match="Ks"):
        rasterize(means, quats, scales, opac, sh, viewmats, Ks[0], W, H)
    with pytest.raises(RuntimeError, match="gsplat"):
        rasterize(means, quats, scales, opac, sh, viewmats, Ks, W, H, backend="gsplat")
    with pytest.raises(ValueError, match="depth_mode"):
        rasterize(means, quats, scales, opac, sh, viewmats, Ks, W, H, depth_mode="median")
    assert select_backend("auto", torch.device("cpu"), torch.float32) == "torch"


def test_look_at_uses_opencv_axes():
    c2w = look_at((0.0, 0.0, -3.0), (0.0, 0.0, 0.0))  # default up is -y: an identity rotation
    torch.testing.assert_close(c2w[:3, :3], torch.eye(3))
    torch.testing.assert_close(c2w[:3, 3], torch.tensor([0.0, 0.0, -3.0]))
    side = look_at((3.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    torch.testing.assert_close(side[:3, 2], torch.tensor([-1.0, 0.0, 0.0]))  # z looks at the target
    torch.testing.assert_close(side[:3, 1], torch.tensor([0.0, 1.0, 0.0]))  # y down = -up


def test_orbit_cameras_look_at_the_centre():
    center = torch.tensor([0.5, -1.0, 2.0])
    c2w, K = orbit_cameras(center, 3.0, 6, elevation_deg=20, fov_deg=60, width=80, height=60)
    assert c2w.shape == (6, 4, 4) and K.shape == (6, 3, 3)
    R = c2w[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(6, 3, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(6))
    torch.testing.assert_close((c2w[:, :3, 3] - center).norm(dim=1), torch.full((6,), 3.0))
    cam = world_to_camera(c2w) @ torch.cat([center, torch.ones(1)])
    pix = (K @ cam[:, :3, None])[..., 0]
    centre_px = torch.tensor([[40.0, 30.0]]).expand(6, 2)
    torch.testing.assert_close(pix[:, :2] / pix[:, 2:], centre_px, atol=1e-4, rtol=0)
    # elevation 20 degrees: the cameras sit above the centre, i.e. on the -y side
    assert (c2w[:, 1, 3] < center[1]).all()
    assert float(K[0, 0, 0]) == pytest.approx(40 / math.tan(math.radians(30)))


def test_world_to_camera_inverts_c2w():
    c2w, _ = orbit_cameras((1.0, 2.0, 3.0), 2.0, 3)
    torch.testing.assert_close(world_to_camera(c2w), torch.linalg.inv(c2w), atol=1e-5, rtol=0)


def test_normalized_intrinsics_scale_to_pixels():
    K_norm = torch.tensor([[[0.62, 0.0, 0.5], [0.0, 0.61, 0.5], [0.0, 0.0, 1.0]]]).expand(2, 3, 3)
    c2w = torch.eye(4).expand(2, 4, 4)
    _, K = cameras_from_normalized_intrinsics(c2w, K_norm, 448, 224)
    torch.testing.assert_close(K[1], torch.tensor([[0.62 * 448, 0, 224.0], [0, 0.61 * 224, 112.0], [0, 0, 1]]))


def test_scene_bounds_ignore_floaters():
    g = torch.Generator().manual_seed(0)
    means = torch.rand(1000, 3, generator=g) * 2 - 1 + torch.tensor([5.0, 0.0, 0.0])
    means[:5] = 1000.0
    center, radius = scene_bounds(means)
    torch.testing.assert_close(center, torch.tensor([5.0, 0.0, 0.0]), atol=0.1, rtol=0)
    assert 1.4 < radius < 1.8  # half the diagonal of the [-0.96, 0.96]^3 percentile box


@pytest.mark.parametrize("width,height", [(64, 64), (96, 48), (40, 90)])
def test_framing_distance_fits_the_bounding_sphere_in_the_narrower_view(width, height):
    """Points on the sphere of radius r around the centre project inside the image, and with margin 1 the
    sphere touches the narrower border (within a pixel)."""
    from vist3a.render import framing_distance

    radius, fov = 2.0, 50.0
    for margin in (1.0, 1.1):
        d = framing_distance(radius, fov, width, height, margin)
        c2w, K = orbit_cameras((0.0, 0.0, 0.0), d, 1, 0.0, fov, width, height)
        dirs = torch.nn.functional.normalize(torch.randn(4000, 3, generator=torch.Generator().manual_seed(0)), dim=1)
        cam = (world_to_camera(c2w)[0] @ torch.cat([dirs * radius, torch.ones(4000, 1)], 1).T).T[:, :3]
        px = (K[0] @ cam.T).T
        uv = px[:, :2] / px[:, 2:]
        assert (uv[:, 0] >= -0.5).all() and (uv[:, 0] <= width + 0.5).all()
        assert (uv[:, 1] >= -0.5).all() and (uv[:, 1] <= height + 0.5).all()
        if margin == 1.0:  # the silhouette reaches the narrower border
            narrow = 0 if width <= height else 1
            reach = (uv[:, narrow] - (width, height)[narrow] / 2).abs().max()
            assert reach > min(width, height) / 2 - 1.0
    half = min(math.radians(fov) / 2, math.atan(math.tan(math.radians(fov) / 2) * height / width))
    assert framing_distance(radius, fov, width, height, 1.0) == pytest.approx(radius / math.sin(half))
    with pytest.raises(ValueError, match="radius > 0"):
        framing_distance(0.0, fov, width, height)


def test_framing_orbit_is_the_render_orbit_framing():
    from vist3a.render import framing_orbit

    g = torch.Generator().manual_seed(3)
    scene = plain_gaussians(torch.randn(200, 3, generator=g) + torch.tensor([1.0, 2.0, 3.0]), scale=0.05)
    c2w, K = framing_orbit(scene, 4, 48, 32, fov_deg=60.0, elevation_deg=10.0)
    _, c2w_orbit, K_orbit = render_orbit(scene, n=4, width=48, height=32, fov_deg=60.0, elevation_deg=10.0)
    torch.testing.assert_close(c2w, c2w_orbit)
    torch.testing.assert_close(K, K_orbit)
    center, radius = scene_bounds(scene)
    torch.testing.assert_close((c2w[:, :3, 3] - center).norm(dim=1),
                               torch.full((4,), 1.1 * radius / math.sin(math.atan(math.tan(math.radians(30)) * 32 / 48))))


def test_render_orbit_frames_the_scene():
    n = 64
    g = torch.Generator().manual_seed(1)
    scene = plain_gaussians(torch.randn(n, 3, generator=g) * 0.3, scale=0.2, opacity=0.99, sh_degree=1)
    rgb, c2w, K = render_orbit(scene, n=3, width=32, height=24, background=1.0)
    assert rgb.shape == (3, 24, 32, 3)
    grey = (rgb - 0.5).abs().amax(-1) < 0.05  # SH 0 renders as 0.5 grey over a white background
    assert grey[:, 8:16, 12:20].all() and not grey[:, 0, :].any()
    again, _, _ = render_gaussians(scene, c2w, K, 32, 24, background=1.0)
    torch.testing.assert_close(again, rgb)


def test_png_grid_and_animations(tmp_path, monkeypatch):
    frames = torch.linspace(0, 1, 5)[:, None, None, None].expand(5, 6, 8, 3)
    png = media.save_png_grid(frames, tmp_path / "grid.png", cols=3)
    with Image.open(png) as im:
        assert im.size == (24, 12)
        assert im.getpixel((0, 0)) == (0, 0, 0) and im.getpixel((8, 6)) == (255, 255, 255)
    for suffix in (".webp", ".gif"):
        path = media.save_orbit_video(frames, tmp_path / f"orbit{suffix}", fps=10)
        with Image.open(path) as im:
            assert im.n_frames == 5 and im.size == (8, 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "orbit.gif", "orbit.webp"]
    monkeypatch.setattr(media, "mp4_available", lambda: False)
    with pytest.raises(RuntimeError, match="imageio-ffmpeg"):
        media.save_orbit_video(frames, tmp_path / "orbit.mp4")
    with pytest.raises(ValueError, match=".avi"):
        media.save_orbit_video(frames, tmp_path / "orbit.avi")
    assert not (tmp_path / "orbit.mp4").exists()


def test_gsplat_backend_passes_gsplat_conventions(monkeypatch):
    """No CUDA here: a stand-in `gsplat` module checks what the backend hands to gsplat."""
    import types

    from vist3a.render import gsplat_backend

    calls = {}

    def fake_rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kw):
        calls.update(colors=colors, quats=quats, **kw)
        out = torch.arange(viewmats.shape[0] * height * width * 4, dtype=torch.float32)
        cams = viewmats.shape[0]
        return out.reshape(cams, height, width, 4), torch.full((cams, height, width, 1), 0.5), {}

    monkeypatch.setitem(sys.modules, "gsplat", types.SimpleNamespace(rasterization=fake_rasterization))
    means, quats, scales, opac, sh = random_scene(3, 2, seed=2)
    viewmats, Ks, W, H = small_camera()
    feats, alpha, depth_sum = gsplat_backend.rasterize_gsplat(
        means, quats, scales, opac, sh, viewmats, Ks, W, H, sh_degree=1, near=0.1, far=50.0, radius_clip=0.1
    )
    assert torch.equal(calls["colors"], sh.transpose(1, 2))  # gsplat wants SH as [N, K, 3]
    assert calls["sh_degree"] == 1 and calls["render_mode"] == "RGB+D" and calls["eps2d"] == 0.3
    assert calls["near_plane"] == 0.1 and calls["far_plane"] == 50.0 and "covars" not in calls
    assert calls["radius_clip"] == 0.1 and calls["rasterize_mode"] == "classic"
    assert feats.shape == (1, H, W, 3) and depth_sum.shape == (1, H, W, 1) and alpha.shape == (1, H, W, 1)
    assert float(depth_sum[0, 0, 0, 0]) == 3.0 and float(feats[0, 0, 1, 0]) == 4.0

    monkeypatch.setattr(gsplat_backend, "is_available", lambda device=None: True)
    assert select_backend("auto", torch.device("cuda"), torch.float32) == "gsplat"
    assert select_backend("auto", torch.device("cuda"), torch.float64) == "torch"  # gsplat is float32 only
