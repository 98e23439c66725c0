"""What a generated scene leaves on disk: the splat file and, optionally, rendered views (used by the CLI,
`make demo`, batch runs and bench)."""

from __future__ import annotations

from pathlib import Path

from .formats import write_splats
from .mesh.views import save_cameras
from .render import render_gaussians, render_orbit
from .render.cameras import cameras_from_normalized_intrinsics
from .render.media import save_orbit_video, save_png_grid
from .render.trajectory import render_trajectory
from .scene_view import CameraSet
from .share_html import save_html


def save_scene_outputs(scene, ply: Path, *, sh_degree: int | None = 3, views: Path | None = None, size: int = 256) -> list[Path]:
    """Splat file (.ply, .spz, .splat, .glb or an .html viewer page by extension) + (optionally) rendered views:
    predicted cameras grid, orbit grid and animation, the official trajectory + depth videos (interpolated
    predicted cameras) and the cameras themselves (cameras.json, for `python -m vist3a mesh`).

    ``sh_degree`` is capped at the scene's and the format's degree; the default 3 opens in every common
    viewer, None keeps all bands.
    """
    if Path(ply).suffix.lower() == ".html":  # the page starts from the predicted cameras' side and up
        written = [save_html(scene.gaussians, ply, sh_degree=sh_degree, cameras=CameraSet(scene.c2w, scene.intrinsics, scene.image_size))]
    else:
        written = [write_splats(scene.gaussians, ply, sh_degree=sh_degree)]
    if views is not None:
        views.mkdir(parents=True, exist_ok=True)
        written.append(save_cameras(views / "cameras.json", scene.c2w, scene.intrinsics, scene.image_size))
        H, W = scene.image_size
        c2w, K = cameras_from_normalized_intrinsics(scene.c2w, scene.intrinsics, W, H)
        rgb, _, _ = render_gaussians(scene.gaussians, c2w, K, W, H, background=1.0)
        written.append(save_png_grid(rgb, views / "predicted_views.png"))
        written.append(save_png_grid(scene.frames, views / "context_frames.png"))
        orbit, _, _ = render_orbit(scene.gaussians, n=8, width=size, height=size)
        written.append(save_png_grid(orbit, views / "orbit.png"))
        written.append(save_orbit_video(orbit, views / "orbit.webp"))
        video, depth = render_trajectory(scene.gaussians, c2w, K, W, H)  # the official gs.mp4 / depth.mp4
        written.append(save_orbit_video(video, views / "trajectory.webp", fps=20))
        written.append(save_orbit_video(depth, views / "trajectory_depth.webp", fps=20))
    return written
