"""Where to put a viewer's camera for a splat scene: robust bounds and the scene's up direction.

The viewer in ComfyUI (web/) gets these with each scene so it can frame the whole scene and orbit
around its up axis. Up comes from the predicted cameras when the decoder gave them (a camera's up is
-y in OpenCV axes), else from the Gaussians: the axis of least spread (floors, tables and the ground
are wide and flat), snapped to a coordinate axis when close, its sign taken from the usual convention
of that axis (OpenCV -y for AnySplat scenes, +z for z-up captures, +x otherwise).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .render.cameras import scene_bounds

__all__ = ["up_from_cameras", "up_from_points", "view_hint"]

_SNAP_COS = math.cos(math.radians(25.0))
_AXIS_SIGN = (1.0, -1.0, 1.0)  # +x, -y (OpenCV), +z


def up_from_cameras(c2w: torch.Tensor) -> Optional[list[float]]:
    """Mean up vector (-y column in OpenCV axes) of camera-to-world matrices [S, 4, 4]; None if degenerate."""
    if c2w is None or c2w.ndim != 3 or c2w.shape[0] == 0:
        return None
    up = -c2w[:, :3, 1].double().mean(dim=0)
    n = float(up.norm())
    if not math.isfinite(n) or n < 1e-6:
        return None
    return (up / n).tolist()


def up_from_points(means: torch.Tensor, opacities: Optional[torch.Tensor] = None, max_points: int = 200_000) -> list[float]:
    """Up direction from the shape of the point cloud (axis of least spread, snapped and signed as above)."""
    pts = means.detach().double().cpu()
    if opacities is not None:
        solid = opacities.detach().cpu() >= 0.05
        if int(solid.sum()) >= 16:
            pts = pts[solid]
    if pts.shape[0] > max_points:
        pts = pts[:: pts.shape[0] // max_points + 1]
    if pts.shape[0] < 4:
        return [0.0, -1.0, 0.0]
    lo, hi = torch.quantile(pts, torch.tensor([0.02, 0.98], dtype=pts.dtype), dim=0)
    inside = ((pts >= lo) & (pts <= hi)).all(dim=1)
    if int(inside.sum()) >= 4:
        pts = pts[inside]
    cov = torch.cov((pts - pts.mean(dim=0)).T)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    if evals[1] <= 0 or evals[0] / evals[1] > 0.8:  # no clearly flat direction: keep the OpenCV convention
        return [0.0, -1.0, 0.0]
    axis = evecs[:, 0]
    k = int(axis.abs().argmax())
    if float(axis[k].abs()) >= _SNAP_COS:
        up = [0.0, 0.0, 0.0]
        up[k] = _AXIS_SIGN[k]
        return up
    if float(axis[k]) * _AXIS_SIGN[k] < 0:
        axis = -axis
    return (axis / axis.norm()).tolist()


def view_hint(gaussians, c2w: Optional[torch.Tensor] = None) -> dict:
    """{center, radius, up, up_source} for a viewer: robust bounds plus up from cameras or points."""
    center, radius = scene_bounds(gaussians)
    up = up_from_cameras(c2w) if c2w is not None else None
    source = "cameras"
    if up is None:
        up = up_from_points(gaussians.means, getattr(gaussians, "opacities", None))
        source = "points"
    return {"center": [float(v) for v in center], "radius": float(radius), "up": [float(v) for v in up], "up_source": source}
