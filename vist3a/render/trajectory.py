"""The official inference's trajectory and depth videos: views interpolated between the predicted cameras.

Like ``save_interpolated_video`` in the official code (AnySplat's image_io, called by inference_t23d.py):
between each pair of neighbouring predicted cameras, ``between`` (10) extra views; positions and
intrinsics interpolated linearly, rotations by linearly blending the matrices and projecting back onto a
rotation with an SVD (U V^T); each pair contributes its first camera and the in-between views, so the last
predicted camera itself is not rendered, as there. Rendered with the official decoder's settings
(``vist3a.render.settings``: white, near 1e-10, far 1e10, radius clip 0.1; the 0.1 / 100 the official call
passes are ignored by its decoder). The depth video shows gsplat's accumulated depth (sum of w z, 0 where
nothing is drawn), normalised between its 1% and 99% quantiles over every V-th frame and coloured by
matplotlib's ``turbo`` (256 colours, ``floor(256 x)``, out-of-range values take the end colours, NaN black),
as the official ``plt.cm.turbo`` call does; without matplotlib a polynomial fit of Turbo stands in (up to
26/255 off per channel).
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import numpy as np
import torch

from . import render_gaussians
from .settings import OFFICIAL_BACKGROUND, OFFICIAL_FAR, OFFICIAL_NEAR, OFFICIAL_RADIUS_CLIP

__all__ = ["interpolate_cameras", "turbo", "turbo_colormap", "depth_colormap_name", "colorize_depth",
           "render_trajectory"]

# Polynomial fit of Google's Turbo colour map (Anton Mikhailov's published approximation), per channel:
# c(x) = sum_i a_i x^i for i = 0..5.
_TURBO = torch.tensor([
    [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
    [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
    [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
], dtype=torch.float64)


def interpolate_cameras(c2w: torch.Tensor, K: torch.Tensor, between: int = 10) -> Tuple[torch.Tensor, torch.Tensor]:
    """[V, 4, 4] cameras (and [V, 3, 3] intrinsics) -> [(V-1)(between+1), ...] along the trajectory."""
    if c2w.shape[0] < 2:
        return c2w.clone(), K.clone()
    dtype = c2w.dtype
    c2w, K = c2w.double(), K.double()
    out_c2w, out_K = [], []
    for i in range(c2w.shape[0] - 1):
        out_c2w.append(c2w[i])
        out_K.append(K[i])
        a, b = c2w[i], c2w[i + 1]
        for j in range(1, between + 1):
            t = j / (between + 1)
            blend = (1 - t) * a[:3, :3] + t * b[:3, :3]
            u, _, vh = torch.linalg.svd(blend)
            m = torch.eye(4, dtype=torch.float64)
            m[:3, :3] = u @ vh
            m[:3, 3] = (1 - t) * a[:3, 3] + t * b[:3, 3]
            out_c2w.append(m)
            out_K.append((1 - t) * K[i] + t * K[i + 1])
    return torch.stack(out_c2w).to(dtype), torch.stack(out_K).to(dtype)


def turbo(x: torch.Tensor) -> torch.Tensor:
    """Turbo colours [..., 3] in [0, 1] for values [...] (clamped to [0, 1])."""
    x = x.double().clamp(0, 1)
    powers = torch.stack([x ** i for i in range(6)], dim=-1)
    return (powers @ _TURBO.T).clamp(0, 1).float()


@functools.lru_cache(maxsize=None)
def _matplotlib_turbo() -> Optional[torch.Tensor]:
    """matplotlib's turbo as a [N + 3, 3] table: its N colours, then the under, over and bad colours;
    None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    cmap = matplotlib.colormaps["turbo"]
    ends = (cmap.get_under(), cmap.get_over(), cmap.get_bad())
    rows = [cmap(np.arange(cmap.N))[:, :3], *(np.asarray(c)[None, :3] for c in ends)]  # integers index the table
    return torch.from_numpy(np.concatenate(rows)).double()


def depth_colormap_name() -> str:
    """Which Turbo :func:`turbo_colormap` uses here (recorded next to batch outputs)."""
    return "matplotlib turbo" if _matplotlib_turbo() is not None else "turbo polynomial fit (matplotlib not installed)"


def turbo_colormap(x: torch.Tensor) -> torch.Tensor:
    """Colours [..., 3] of float values [...] as ``matplotlib.colormaps["turbo"]`` gives them (index
    ``floor(N x)`` computed in x's precision, 1.0 -> the last colour, below 0 / from 1 on -> the under / over
    colours, NaN -> black), as float32 copies of its float64 colours (each truncates to the same 8-bit level,
    which is what the videos keep); the polynomial :func:`turbo` where matplotlib is not installed."""
    table = _matplotlib_turbo()
    if table is None:
        return turbo(torch.nan_to_num(x, nan=0.0))
    n = table.shape[0] - 3
    scaled = x * n  # matplotlib scales in the array's own dtype (a power of two: exact)
    scaled = torch.where(scaled == n, torch.full_like(scaled, n - 1), scaled)
    index = torch.nan_to_num(scaled, nan=0.0).clamp(0, n - 1).long()  # truncation = floor from 0 up
    index = torch.where(scaled < 0, n, torch.where(scaled >= n, n + 1, index))
    index = torch.where(torch.isnan(scaled), n + 2, index)
    return table.to(device=x.device, dtype=torch.float32)[index]


def colorize_depth(depth: torch.Tensor, sample_every: int = 1) -> torch.Tensor:
    """Depth [N, H, W, 1] -> Turbo RGB [N, H, W, 3], normalised between the 1% and 99% quantiles of
    every ``sample_every``-th frame, in float32 and without guarding a zero range, as the official video
    (an all-empty video is then NaN, i.e. black)."""
    d = depth[..., 0].float()
    sample = d[:: max(1, sample_every)].reshape(-1)
    if sample.numel() > 1 << 24:  # torch.quantile's input limit (the official call would fail there)
        sample = sample[torch.linspace(0, sample.numel() - 1, 1 << 24).long()]
    lo, hi = torch.quantile(sample, 0.01), torch.quantile(sample, 0.99)
    return torch.cat([turbo_colormap((d[i:i + 16] - lo) / (hi - lo)) for i in range(0, d.shape[0], 16)])


@torch.no_grad()
def render_trajectory(gaussians, c2w: torch.Tensor, K: torch.Tensor, width: int, height: int, between: int = 10,
                      background=OFFICIAL_BACKGROUND, chunk: int = 4, progress=None, *, near: float = OFFICIAL_NEAR,
                      far: float = OFFICIAL_FAR, radius_clip: float = OFFICIAL_RADIUS_CLIP,
                      depth_mode: str = "accumulated") -> Tuple[torch.Tensor, torch.Tensor]:
    """Render the interpolated trajectory through pixel cameras ``c2w`` [V, 4, 4], ``K`` [V, 3, 3].

    Returns (rgb [M, H, W, 3] in [0, 1], coloured depth [M, H, W, 3]), M = (V-1)(between+1).
    ``progress(done, total)`` is called after each chunk of views (a node's progress bar / Cancel).
    The defaults are the official settings; ``depth_mode="expected"`` colours sum(w z) / alpha instead.
    """
    cams, Ks = interpolate_cameras(c2w, K, between)
    rgbs, depths = [], []
    for s in range(0, cams.shape[0], chunk):
        rgb, _, depth = render_gaussians(gaussians, cams[s:s + chunk].to(gaussians.means), Ks[s:s + chunk].to(gaussians.means),
                                         width, height, background=background, near=near, far=far,
                                         radius_clip=radius_clip, depth_mode=depth_mode)
        rgbs.append(rgb.clamp(0, 1).float().cpu())
        depths.append(depth.float().cpu())
        if progress is not None:
            progress(min(s + chunk, cams.shape[0]), cams.shape[0])
    return torch.cat(rgbs), colorize_depth(torch.cat(depths), sample_every=c2w.shape[0])
