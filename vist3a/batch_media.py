"""The per-prompt videos of a batch run: the splats seen along the predicted camera path, and its depth.

The official `inference_t23d.py` writes `gs.mp4` and `depth.mp4`: the predicted cameras with `t` views
interpolated between each neighbouring pair (translation and intrinsics linearly, rotation matrices
linearly then projected back onto SO(3) by SVD), rendered with near 0.1 / far 100, 20 fps, frames quantised
by truncation; the depth is normalised by its 1% / 99% quantiles over every `S`-th frame and coloured with
the turbo map. The evaluation samples its frames from `gs.mp4`, so we follow the same path and timing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .render import render_gaussians
from .render.cameras import denormalize_intrinsics
from .render.media import save_orbit_video

VIDEO_FPS = 20
NEAR, FAR = 0.1, 100.0

# Turbo colormap, polynomial approximation (Mikhailov 2019, public domain): coefficients of x^0..x^5.
_TURBO = np.array([
    [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
    [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
    [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
])


def interpolate_cameras(c2w: torch.Tensor, K: torch.Tensor, t: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """c2w [S, 4, 4], K [S, 3, 3] -> (S - 1) * (t + 1) + 1 cameras with `t` in-betweens per pair."""
    c2w, K = c2w.float(), K.float()
    out_c, out_k = [], []
    for i in range(c2w.shape[0] - 1):
        out_c.append(c2w[i])
        out_k.append(K[i])
        for j in range(1, t + 1):
            a = j / (t + 1)
            rot = (1 - a) * c2w[i, :3, :3] + a * c2w[i + 1, :3, :3]
            u, _, vh = torch.linalg.svd(rot)
            m = torch.eye(4, dtype=c2w.dtype, device=c2w.device)
            m[:3, :3] = u @ vh
            m[:3, 3] = (1 - a) * c2w[i, :3, 3] + a * c2w[i + 1, :3, 3]
            out_c.append(m)
            out_k.append((1 - a) * K[i] + a * K[i + 1])
    out_c.append(c2w[-1])
    out_k.append(K[-1])
    return torch.stack(out_c), torch.stack(out_k)


def turbo(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped) -> RGB [..., 3] in [0, 1] on the turbo colour map."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    powers = np.stack([x**k for k in range(6)], axis=-1)
    return np.clip(powers @ _TURBO.T, 0.0, 1.0)


def colorize_depth(depth: torch.Tensor, stride: int) -> torch.Tensor:
    """Depth [N, H, W] -> turbo RGB [N, H, W, 3], normalised by the 1%/99% quantiles of every `stride`-th frame."""
    ref = depth[:: max(1, stride)].float().flatten()
    lo, hi = torch.quantile(ref, 0.01), torch.quantile(ref, 0.99)
    norm = (depth.float() - lo) / (hi - lo).clamp_min(1e-12)
    return torch.from_numpy(turbo(norm.cpu().numpy())).float()


def truncate_to_uint8_levels(images: torch.Tensor) -> torch.Tensor:
    """Quantise like the official writers (`(x * 255).astype(uint8)`, i.e. truncation); values stay floats
    on the 1/255 grid so our rounding writers store exactly those levels."""
    return torch.floor(images.clamp(0, 1) * 255) / 255


@torch.no_grad()
def render_trajectory(scene, t: int = 10, size: tuple[int, int] | None = None):
    """Scene -> (rgb [N, H, W, 3], depth RGB [N, H, W, 3]) along the interpolated predicted cameras."""
    H, W = size or scene.image_size
    c2w, K = interpolate_cameras(scene.c2w.cpu(), scene.intrinsics.cpu(), t)
    g = scene.gaussians
    c2w, Kpx = c2w.to(g.means.device), denormalize_intrinsics(K, W, H).to(g.means.device)
    rgb, _, depth = render_gaussians(g, c2w, Kpx, W, H, background=1.0, near=NEAR, far=FAR)
    depth = depth[..., 0] if depth.dim() == 4 else depth
    return rgb.clamp(0, 1).cpu(), colorize_depth(depth.cpu(), stride=scene.c2w.shape[0])


def save_trajectory_videos(scene, folder: Path, *, t: int = 10, ext: str = "mp4") -> list[Path]:
    """Write `gs.<ext>` and `depth.<ext>` (official names) into `folder`."""
    rgb, depth = render_trajectory(scene, t)
    return [save_orbit_video(truncate_to_uint8_levels(rgb), folder / f"gs.{ext}", fps=VIDEO_FPS),
            save_orbit_video(truncate_to_uint8_levels(depth), folder / f"depth.{ext}", fps=VIDEO_FPS)]
