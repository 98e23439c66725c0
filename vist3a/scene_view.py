"""What a viewer needs to show a splat scene: robust bounds, the up direction, a start camera, and a
compact copy of the scene with its most visible Gaussians.

The viewer in ComfyUI (web/) gets these with each scene so it can frame the whole scene and orbit
around its up axis. Up comes from the predicted cameras when the decoder gave them (a camera's up is
-y in OpenCV axes), else from the Gaussians: the axis of least spread (floors, tables and the ground
are wide and flat), snapped to a coordinate axis when close, its sign taken from the usual convention
of that axis (OpenCV -y for AnySplat scenes, +z for z-up captures, +x otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from .formats.spz import spz_bytes, widest_fractional_bits
from .gaussians import Gaussians
from .render.cameras import scene_bounds

__all__ = ["CameraSet", "PreviewScene", "up_from_cameras", "up_from_points", "view_hint", "most_visible", "preview_scene",
           "threejs_start_camera"]


@dataclass
class CameraSet:
    """The cameras of one scene: c2w [S, 4, 4] (OpenCV axes) and intrinsics [S, 3, 3] normalised by
    the image size, as AnySplat predicts them; ``image_size`` = (H, W) they were predicted for."""

    c2w: torch.Tensor
    intrinsics: torch.Tensor
    image_size: tuple[int, int]

    def start_view(self, index: int = 0) -> dict:
        """One predicted camera for a viewer's start view: c2w (OpenCV), vertical fov in degrees, aspect W/H."""
        H, W = self.image_size
        fy = float(self.intrinsics[index, 1, 1]) * H
        fov_y = 2 * math.degrees(math.atan(H / (2 * fy))) if fy > 0 else 50.0
        return {"c2w": self.c2w[index].tolist(), "fov_y": fov_y, "aspect": W / H}

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


def most_visible(gaussians: Gaussians, limit: int) -> Gaussians:
    """At most ``limit`` Gaussians: the ones with the largest opacity x geometric-mean scale (what covers the
    most screen), in their original order of importance; the scene itself when it is small enough."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if gaussians.num <= limit:
        return gaussians
    score = gaussians.opacities * gaussians.scales.prod(dim=1).clamp_min(0) ** (1 / 3)
    return gaussians.select(torch.topk(score, limit).indices)


@dataclass
class PreviewScene:
    """A scene packed for the browser viewer: .spz bytes plus what the viewer is told about it."""

    spz: bytes
    count: int  # Gaussians in the .spz
    total: int  # Gaussians in the scene before the most-visible cut
    hint: dict  # view_hint(): center, radius, up, up_source
    camera: Optional[dict]  # CameraSet.start_view() when cameras were given

    def fields(self) -> dict:
        """The JSON fields the viewer reads (besides where the file is)."""
        out = {"format": "spz", "count": self.count, "total": self.total, **self.hint}
        if self.camera is not None:
            out["camera"] = self.camera
        return out


def preview_scene(gaussians: Gaussians, max_splats: int, cameras: Optional[CameraSet] = None) -> PreviewScene:
    """The most visible ``max_splats`` Gaussians as a fast-compressed .spz (SH up to degree 3, what Spark reads;
    positions with as many fraction bits as the scene's extent allows), with bounds, up and the start camera."""
    if gaussians.num == 0:
        raise ValueError("there are no Gaussians to preview (all pruned?)")
    shown = most_visible(gaussians, max_splats)
    data = spz_bytes(shown, 3, widest_fractional_bits(shown.means), compresslevel=1)
    hint = view_hint(shown, cameras.c2w if cameras is not None else None)
    camera = cameras.start_view() if cameras is not None else None
    return PreviewScene(data, shown.num, gaussians.num, hint, camera)


def threejs_start_camera(gaussians: Gaussians, c2w: Optional[torch.Tensor] = None, fov_y_deg: float = 35.0, aspect: float = 1.0,
                         elevation_deg: float = 20.0, margin: float = 1.1) -> dict:
    """A start camera for three.js splat viewers that show a 3DGS scene (OpenCV axes, y down) turned 180 degrees
    about x, i.e. scene (x, y, z) at world (x, -y, -z) with world +y up, as Spark's examples and ComfyUI's Load3D
    viewers load it. They frame every splat, floaters and the far background included, so a generated scene
    often ends up a speck; this camera frames the robust bounds instead.

    The eye looks at the robust centre from the side of the first camera in ``c2w`` [S, 4, 4] (else from -z,
    where AnySplat's first view stands), ``elevation_deg`` above the horizon, far enough that the bounds fill
    the narrower side of a ``fov_y_deg`` x ``aspect`` view. Returns {position, target, fov, zoom, cameraType}
    with {x, y, z} points in the world frame (ComfyUI's camera_info layout).
    """
    if gaussians.num == 0:
        raise ValueError("there are no Gaussians to frame (all pruned?)")
    if not 0 < fov_y_deg < 180 or not aspect > 0:
        raise ValueError(f"need 0 < fov_y_deg < 180 and aspect > 0, got {fov_y_deg} and {aspect}")
    center, radius = scene_bounds(gaussians)
    center = center.double()
    up = torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)  # the viewer's world +y, in scene axes
    side = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
    if c2w is not None and c2w.ndim == 3 and c2w.shape[0] > 0:
        off = c2w[0, :3, 3].double().cpu() - center
        off = off - up * off.dot(up)  # horizontal part
        if float(off.norm()) > 1e-6 * max(radius, 1e-6):
            side = off / off.norm()
    e = math.radians(elevation_deg)
    direction = side * math.cos(e) + up * math.sin(e)
    half_v = math.radians(fov_y_deg) / 2
    half = min(half_v, math.atan(math.tan(half_v) * aspect))
    eye = center + direction * (margin * radius / math.sin(half))

    def world(p: torch.Tensor) -> dict:
        return {"x": float(p[0]), "y": -float(p[1]), "z": -float(p[2])}

    return {"position": world(eye), "target": world(center), "fov": float(fov_y_deg), "zoom": 1, "cameraType": "perspective"}
