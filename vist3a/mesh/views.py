"""Which cameras a scene is meshed from: the predicted ones, plus views that reach what they missed.

A decoder predicts the cameras of its frames; they see one side of an object, or one part of a room.
The far side comes from generated views: around an object (the cameras stand outside the scene's box),
a sphere of cameras looking at its centre from outside; inside a scene (most cameras stand in the box),
a panorama of cameras standing at their centroid looking in every direction, so walls behind the
predicted cameras are seen from the room side instead of from behind. A splat file carries no
cameras: it gets the outside sphere, or the cameras of a ``cameras.json`` written beside it by
``generate --views`` / ``batch``.

``cameras.json``: {"c2w": [S][4][4] camera-to-world (OpenCV axes), "intrinsics": [S][3][3] normalised
by the image size (fx/W, fy/H, cx/W, cy/H), "image_size": [H, W]} - the decoder's own convention.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..atomic import atomic_write
from ..errors import VIST3AError
from ..render.cameras import intrinsics_from_fov, look_at
from ..scene_view import CameraSet

__all__ = ["ViewSet", "fibonacci_directions", "sphere_views", "panorama_views", "mesh_views",
           "load_cameras", "save_cameras", "VIEW_MODES"]

VIEW_MODES = ("auto", "predicted", "orbit")
"""auto: predicted cameras + views of the far side (or the outside sphere alone without cameras);
predicted: only the given cameras; orbit: only generated views (outside sphere or inside panorama)."""


@dataclass
class ViewSet:
    """Cameras to render: c2w [C, 4, 4], pixel K [C, 3, 3], and the image size of each (H, W) per view."""

    c2w: torch.Tensor
    K: torch.Tensor
    sizes: list[tuple[int, int]]
    description: str

    def __len__(self) -> int:
        return self.c2w.shape[0]


def fibonacci_directions(n: int) -> torch.Tensor:
    """``n`` unit vectors spread evenly over the sphere (golden-angle spiral), float64 [n, 3]."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    y = 1 - 2 * i / n
    r = (1 - y * y).clamp_min(0).sqrt()
    phi = math.pi * (3 - math.sqrt(5)) * i
    return torch.stack([r * torch.cos(phi), y, r * torch.sin(phi)], dim=1)


def _up_for(direction: torch.Tensor) -> tuple[float, float, float]:
    """Image-up for a camera looking along ``direction``: -y (OpenCV scenes), or z when looking along y."""
    return (0.0, 0.0, 1.0) if abs(float(direction[1])) > 0.95 else (0.0, -1.0, 0.0)


def sphere_views(center: torch.Tensor, radius: float, n: int, fov_deg: float, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` cameras on a sphere around ``center``, each seeing the whole ball of ``radius`` (c2w, pixel K)."""
    distance = 1.05 * radius / math.sin(math.radians(fov_deg) / 2)
    dirs = fibonacci_directions(n)
    c = center.double()
    c2w = torch.stack([look_at((c + distance * d).float(), c.float(), _up_for(d)) for d in dirs])
    K = intrinsics_from_fov(fov_deg, size, size).expand(n, 3, 3).clone()
    return c2w, K


def panorama_views(position: torch.Tensor, n: int, fov_deg: float, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` cameras standing at ``position``, looking outwards in evenly spread directions (c2w, pixel K)."""
    dirs = fibonacci_directions(n)
    p = position.double()
    c2w = torch.stack([look_at(p.float(), (p + d).float(), _up_for(d)) for d in dirs])
    K = intrinsics_from_fov(fov_deg, size, size).expand(n, 3, 3).clone()
    return c2w, K


def _predicted_pixels(cams: CameraSet, size: int) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """The predicted cameras at a render size whose longer side is ``size`` (aspect kept)."""
    H, W = cams.image_size
    scale = size / max(H, W)
    h, w = max(8, round(H * scale)), max(8, round(W * scale))
    K = cams.intrinsics.detach().float().cpu() * torch.tensor([w, h, 1.0])[:, None]
    return cams.c2w.detach().float().cpu(), K, (h, w)


def mesh_views(lo: torch.Tensor, hi: torch.Tensor, cameras: Optional[CameraSet] = None, mode: str = "auto",
               extra_views: int = 48, size: int = 384) -> ViewSet:
    """The cameras to fuse for a scene in the box [lo, hi] (see the module docstring for the choice)."""
    if mode not in VIEW_MODES:
        raise VIST3AError(f"views must be one of {', '.join(VIEW_MODES)}, got {mode!r}")
    if mode == "predicted" and cameras is None:
        raise VIST3AError("views 'predicted' needs the scene's cameras (connect Decode Splats' cameras, or give "
                          "--cameras cameras.json); or use views 'auto' to mesh from an orbit")
    center = (lo + hi).float() / 2
    radius = float((hi - lo).norm()) / 2
    c2ws, Ks, sizes, parts = [], [], [], []
    inside = False
    if cameras is not None:
        c2w, K, hw = _predicted_pixels(cameras, size)
        if c2w.ndim != 3 or c2w.shape[0] == 0 or c2w.shape[1:] != (4, 4) or K.shape != (c2w.shape[0], 3, 3):
            raise VIST3AError(f"cameras must be c2w [S, 4, 4] with intrinsics [S, 3, 3], got {list(c2w.shape)} and "
                              f"{list(cameras.intrinsics.shape)}")
        if not bool(torch.isfinite(c2w).all() & torch.isfinite(K).all()):
            raise VIST3AError("the cameras hold NaN or infinite values; re-run the decoder or drop the cameras")
        positions = c2w[:, :3, 3]
        within = ((positions >= lo.float()) & (positions <= hi.float())).all(dim=1)
        inside = bool(within.float().mean() > 0.5)  # most cameras stand in the scene (a room), not around it
        if mode in ("auto", "predicted"):
            c2ws.append(c2w)
            Ks.append(K)
            sizes += [hw] * c2w.shape[0]
            parts.append(f"{c2w.shape[0]} predicted cameras")
    if mode in ("auto", "orbit") and extra_views > 0:
        if inside:
            c2w, K = panorama_views(positions[within].mean(dim=0), extra_views, 90.0, size)
            parts.append(f"{extra_views} panorama views from the cameras' centre")
        else:
            c2w, K = sphere_views(center, radius, extra_views, 50.0, size)
            parts.append(f"{extra_views} views on a sphere around the scene")
        c2ws.append(c2w)
        Ks.append(K)
        sizes += [(size, size)] * extra_views
    if not c2ws:
        raise VIST3AError("no views to mesh from: give cameras or at least one orbit view")
    return ViewSet(torch.cat(c2ws).float(), torch.cat(Ks).float(), sizes, " + ".join(parts))


def save_cameras(path, c2w: torch.Tensor, intrinsics: torch.Tensor, image_size: tuple[int, int]) -> Path:
    """Write a scene's predicted cameras as ``cameras.json`` (atomically)."""
    data = {"c2w": c2w.detach().double().cpu().tolist(), "intrinsics": intrinsics.detach().double().cpu().tolist(),
            "image_size": [int(image_size[0]), int(image_size[1])]}
    with atomic_write(path, "w") as f:
        json.dump(data, f)
    return Path(path)


def load_cameras(path) -> CameraSet:
    """Read ``cameras.json`` (see the module docstring); a malformed file is refused in one line."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        c2w = torch.tensor(data["c2w"], dtype=torch.float32)
        K = torch.tensor(data["intrinsics"], dtype=torch.float32)
        H, W = (int(v) for v in data["image_size"])
    except FileNotFoundError:
        raise FileNotFoundError(f"cameras file {p} does not exist") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VIST3AError(f"cameras file {p} is not a cameras.json ({type(exc).__name__}: {exc}); expected "
                          '{"c2w": [S][4][4], "intrinsics": [S][3][3] normalised, "image_size": [H, W]}') from None
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or K.shape != (c2w.shape[0], 3, 3) or H <= 0 or W <= 0:
        raise VIST3AError(f"cameras file {p}: expected c2w [S, 4, 4], intrinsics [S, 3, 3] and a positive image_size, "
                          f"got {list(c2w.shape)}, {list(K.shape)}, {[H, W]}")
    return CameraSet(c2w, K, (H, W))
