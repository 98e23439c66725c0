"""What a generated scene leaves on disk: the PLY and, optionally, rendered views (used by the CLI, `make demo`, bench)."""

from __future__ import annotations

from pathlib import Path

from .gaussians import save_ply
from .render import render_gaussians, render_orbit
from .render.cameras import cameras_from_normalized_intrinsics
from .render.media import save_orbit_video, save_png_grid


def save_scene_outputs(scene, ply: Path, *, sh_degree: int | None, views: Path | None, size: int = 256) -> list[Path]:
    """PLY + (optionally) rendered views: predicted cameras grid, orbit grid and orbit animation."""
    written = [save_ply(scene.gaussians, ply, sh_degree=sh_degree)]
    if views is not None:
        views.mkdir(parents=True, exist_ok=True)
        H, W = scene.image_size
        c2w, K = cameras_from_normalized_intrinsics(scene.c2w, scene.intrinsics, W, H)
        rgb, _, _ = render_gaussians(scene.gaussians, c2w, K, W, H, background=1.0)
        written.append(save_png_grid(rgb, views / "predicted_views.png"))
        written.append(save_png_grid(scene.frames, views / "context_frames.png"))
        orbit, _, _ = render_orbit(scene.gaussians, n=8, width=size, height=size)
        written.append(save_png_grid(orbit, views / "orbit.png"))
        written.append(save_orbit_video(orbit, views / "orbit.webp"))
    return written
