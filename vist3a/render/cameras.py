"""Camera helpers in the project's conventions: camera-to-world 4x4 with OpenCV axes (x right, y down,
z forward) and pinhole intrinsics in pixels; AnySplat's size-normalised intrinsics convert here.

AnySplat's world frame is its first camera's frame, so "up" defaults to -y (OpenCV's y points down).
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..finite import check_finite_values

__all__ = [
    "look_at",
    "orbit_cameras",
    "framing_distance",
    "framing_orbit",
    "scene_bounds",
    "intrinsics_from_fov",
    "denormalize_intrinsics",
    "cameras_from_normalized_intrinsics",
    "world_to_camera",
]

Vec3 = Union[Sequence[float], torch.Tensor]
DEFAULT_UP = (0.0, -1.0, 0.0)


def _vec(v: Vec3, dtype=torch.float32, device=None) -> torch.Tensor:
    return torch.as_tensor(v, dtype=dtype, device=device).reshape(3)


def look_at(eye: Vec3, target: Vec3, up: Vec3 = DEFAULT_UP) -> torch.Tensor:
    """Camera-to-world [4, 4] (OpenCV axes) at ``eye`` looking at ``target``, image-up along ``up``."""
    eye_t = _vec(eye)
    forward = F.normalize(_vec(target) - eye_t, dim=0)
    up_t = F.normalize(_vec(up), dim=0)
    if torch.cross(forward, up_t, dim=0).norm() < 1e-6:  # looking straight along up: pick any side
        up_t = F.normalize(_vec((1.0, 0.0, 0.0)) if up_t[0].abs() < 0.9 else _vec((0.0, 0.0, 1.0)), dim=0)
    right = F.normalize(torch.cross(forward, up_t, dim=0), dim=0)
    down = torch.cross(forward, right, dim=0)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, eye_t
    return c2w


def intrinsics_from_fov(fov_deg: float, width: int, height: int) -> torch.Tensor:
    """Pixel intrinsics [3, 3] for a horizontal field of view, square pixels, centred principal point."""
    if not 0 < fov_deg < 180:
        raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_deg}")
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    return torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def orbit_cameras(
    center: Vec3,
    radius: float,
    n: int,
    elevation_deg: float = 15.0,
    fov_deg: float = 50.0,
    width: int = 512,
    height: int = 512,
    up: Vec3 = DEFAULT_UP,
    start_azimuth_deg: float = 0.0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``n`` cameras evenly spaced on a circle around ``center``, all looking at it.

    Elevation lifts the cameras towards ``up``; azimuth 0 puts the first camera on the -z side of the
    centre looking along +z (AnySplat's first view looks along +z). ``fov_deg`` is horizontal.
    Returns (c2w [n, 4, 4], K [n, 3, 3]) in float32.
    """
    check_finite_values([("orbit radius", radius), ("elevation", elevation_deg), ("azimuth", start_azimuth_deg)],
                        where="orbit cameras")
    if n < 1 or radius <= 0:
        raise ValueError(f"orbit needs n >= 1 and radius > 0, got n={n}, radius={radius}")
    c = _vec(center)
    u = F.normalize(_vec(up), dim=0)
    a = _vec((0.0, 0.0, -1.0))
    a = a - (a @ u) * u
    if a.norm() < 1e-6:
        a = _vec((1.0, 0.0, 0.0)) - u[0] * u
    a = F.normalize(a, dim=0)
    b = torch.cross(u, a, dim=0)
    elev = math.radians(elevation_deg)
    c2ws = []
    for i in range(n):
        az = math.radians(start_azimuth_deg) + 2 * math.pi * i / n
        offset = math.cos(elev) * (math.cos(az) * a + math.sin(az) * b) + math.sin(elev) * u
        c2ws.append(look_at(c + radius * offset, c, u))
    K = intrinsics_from_fov(fov_deg, width, height)
    return torch.stack(c2ws), K.expand(n, 3, 3).clone()


def framing_distance(radius: float, fov_deg: float, width: int, height: int, margin: float = 1.1) -> float:
    """Camera distance at which a sphere of ``radius`` (times ``margin``) just fits the narrower field of view.

    ``fov_deg`` is horizontal, as in :func:`orbit_cameras`; for a portrait image the vertical half-angle is the
    smaller one. A sphere of radius r seen from distance d fills a half-angle asin(r / d), hence d = r / sin.
    """
    if radius <= 0 or not 0 < fov_deg < 180 or width <= 0 or height <= 0:
        raise ValueError(f"framing needs radius > 0, 0 < fov < 180 and a positive size, got {radius}, {fov_deg}, {width}x{height}")
    half_h = math.radians(fov_deg) / 2
    half = min(half_h, math.atan(math.tan(half_h) * height / width))
    return margin * radius / math.sin(half)


def framing_orbit(
    gaussians,
    n: int,
    width: int,
    height: int,
    fov_deg: float = 50.0,
    elevation_deg: float = 15.0,
    margin: float = 1.1,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``n`` orbit cameras around a scene's robust centre, far enough that its robust bounds fill the view.

    The one framing rule of the CLI's ``render --orbit``, the Render Views node and the benchmarks.
    Returns (c2w [n, 4, 4], K [n, 3, 3]).
    """
    center, radius = scene_bounds(gaussians)
    distance = framing_distance(radius, fov_deg, width, height, margin)
    return orbit_cameras(center, distance, n, elevation_deg, fov_deg, width, height)


def scene_bounds(
    gaussians_or_means, low_pct: float = 2.0, high_pct: float = 98.0, min_opacity: float = 0.05
) -> Tuple[torch.Tensor, float]:
    """Robust (center [3], radius) of a scene, ignoring stray floaters.

    Takes :class:`~vist3a.gaussians.Gaussians` (near-transparent ones are ignored when enough remain)
    or means [N, 3]. The centre is the midpoint of the per-axis ``low_pct``..``high_pct`` percentiles,
    the radius half the diagonal of that box.
    """
    means = getattr(gaussians_or_means, "means", gaussians_or_means)
    opacities = getattr(gaussians_or_means, "opacities", None)
    means = means.detach().float().cpu()
    if opacities is not None:
        solid = opacities.detach().cpu() >= min_opacity
        if int(solid.sum()) >= 16:
            means = means[solid]
    if means.shape[0] == 0:
        raise ValueError("cannot compute scene bounds of an empty scene")
    if means.shape[0] > 1_000_000:  # torch.quantile is limited to 16M elements; a subsample suffices
        means = means[:: means.shape[0] // 1_000_000 + 1]
    q = torch.tensor([low_pct / 100.0, high_pct / 100.0])
    lo, hi = torch.quantile(means, q, dim=0)
    center = (lo + hi) / 2
    radius = float((hi - lo).norm() / 2)
    return center, max(radius, 1e-6)


def denormalize_intrinsics(K_norm: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pixel intrinsics [..., 3, 3] from size-normalised ones (fx/w, fy/h, cx/w, cy/h)."""
    scale = torch.tensor([width, height, 1.0], dtype=K_norm.dtype, device=K_norm.device)
    return K_norm * scale[:, None]


def cameras_from_normalized_intrinsics(
    c2w: torch.Tensor, K_norm: torch.Tensor, width: int, height: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """AnySplat cameras (c2w [..., 4, 4], normalised K [..., 3, 3]) -> (c2w, pixel K) for a render size."""
    if c2w.shape[-2:] != (4, 4) or K_norm.shape[-2:] != (3, 3) or c2w.shape[:-2] != K_norm.shape[:-2]:
        raise ValueError(
            f"expected c2w [..., 4, 4] and K [..., 3, 3] with equal leading dims, "
            f"got {list(c2w.shape)} and {list(K_norm.shape)}"
        )
    return c2w, denormalize_intrinsics(K_norm, width, height)


def world_to_camera(c2w: torch.Tensor) -> torch.Tensor:
    """Invert rigid camera-to-world matrices [..., 4, 4] (exactly, via R^T) into view matrices."""
    R, t = c2w[..., :3, :3], c2w[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    top = torch.cat([Rt, -Rt @ t], dim=-1)
    bottom = torch.zeros_like(c2w[..., 3:, :])
    bottom[..., 3] = 1
    return torch.cat([top, bottom], dim=-2)
