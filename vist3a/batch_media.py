"""The per-prompt videos of a batch run: the splats seen along the predicted camera path, and its depth.

The official `inference_t23d.py` writes `gs.mp4` and `depth.mp4`: the predicted cameras with `t` views
interpolated between each neighbouring pair (translation and intrinsics linearly, rotation matrices
linearly then projected back onto SO(3) by SVD), rendered with its decoder's settings (white, near 1e-10,
far 1e10, radius clip 0.1; the 0.1 / 100 it passes are ignored), 20 fps, frames quantised by truncation; the
accumulated depth is normalised by its 1% / 99% quantiles over every `S`-th frame and coloured with
matplotlib's turbo. The evaluation samples its frames from `gs.mp4`, so we follow the same path and timing
(vist3a.render.trajectory; tests/test_official_render.py holds it against the official writer).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .render.cameras import denormalize_intrinsics
from .render.media import save_orbit_video
from .render.trajectory import render_trajectory as render_along

VIDEO_FPS = 20


def truncate_to_uint8_levels(images: torch.Tensor) -> torch.Tensor:
    """Quantise like the official writers (`(x * 255).astype(uint8)`, i.e. truncation); values stay floats
    on the 1/255 grid so our rounding writers store exactly those levels."""
    return torch.floor(images.clamp(0, 1) * 255) / 255


def render_trajectory(scene, t: int = 10, size: tuple[int, int] | None = None):
    """Scene -> (rgb [N, H, W, 3], depth RGB [N, H, W, 3]) along the interpolated predicted cameras
    (vist3a.render.trajectory: the official interpolation, render settings and depth colours)."""
    H, W = size or scene.image_size
    Kpx = denormalize_intrinsics(scene.intrinsics.cpu().float(), W, H)
    return render_along(scene.gaussians, scene.c2w.cpu().float(), Kpx, W, H, between=t)


def save_trajectory_videos(scene, folder: Path, *, t: int = 10, ext: str = "mp4") -> list[Path]:
    """Write `gs.<ext>` and `depth.<ext>` (official names) into `folder`."""
    rgb, depth = render_trajectory(scene, t)
    return [save_orbit_video(truncate_to_uint8_levels(rgb), folder / f"gs.{ext}", fps=VIDEO_FPS),
            save_orbit_video(truncate_to_uint8_levels(depth), folder / f"depth.{ext}", fps=VIDEO_FPS)]
