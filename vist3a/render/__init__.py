"""Render 3D Gaussians: one functional API, gsplat on CUDA when installed, pure torch everywhere else.

    rgb, alpha, depth = rasterize(means, quats, scales, opacities, sh, viewmats, Ks, W, H)

Both backends get the same checked inputs and return the same outputs, so callers (previews, the
ComfyUI nodes, reward alignment) never care which one ran.
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional, Sequence, Tuple, Union

import torch

from . import gsplat_backend
from .cameras import (
    cameras_from_normalized_intrinsics,
    denormalize_intrinsics,
    framing_distance,
    framing_orbit,
    intrinsics_from_fov,
    look_at,
    orbit_cameras,
    scene_bounds,
    world_to_camera,
)
from .settings import OFFICIAL_RENDER, RenderSettings
from .threads import cpu_render_threads
from .torch_backend import rasterize_torch

__all__ = [
    "rasterize",
    "render_gaussians",
    "render_orbit",
    "select_backend",
    "RenderSettings",
    "OFFICIAL_RENDER",
    "DEPTH_MODES",
    "torch_compute_device",
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

Background = Union[None, float, Sequence[float], torch.Tensor]
DEPTH_MODES = ("expected", "accumulated")


def select_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """Resolve "auto" | "torch" | "gsplat" to the backend that will run."""
    if backend not in ("auto", "torch", "gsplat"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'gsplat', got {backend!r}")
    usable = dtype == torch.float32 and gsplat_backend.is_available(device)
    if backend == "gsplat" and not usable:
        why = gsplat_backend.unavailable_reason() if torch.device(device).type == "cuda" else None
        raise RuntimeError(
            "backend='gsplat' needs the gsplat package, CUDA tensors and float32; "
            f"got device {device}, dtype {dtype}{'; ' + why if why else ''} (use backend='torch' or 'auto')"
        )
    if backend == "auto":
        return "gsplat" if usable else "torch"
    return backend


def torch_compute_device(device: torch.device) -> torch.device:
    """Where the torch rasteriser runs for tensors on ``device``: there, unless the device has no
    float64 (Apple MPS), which its transmittance scan needs to stay exact; then on the CPU."""
    device = torch.device(device)
    return torch.device("cpu") if device.type == "mps" else device


def _check(name: str, t: torch.Tensor, shape: Tuple) -> None:
    ok = t.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape))
    if not ok:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"rasterize: {name} must have shape {want}, got {list(t.shape)}")


def rasterize(
    means: torch.Tensor,  # [N, 3] world positions
    quats: Optional[torch.Tensor],  # [N, 4] unit quaternions, wxyz (may be None when covars is given)
    scales: Optional[torch.Tensor],  # [N, 3] linear scales
    opacities: torch.Tensor,  # [N] in (0, 1)
    colors: torch.Tensor,  # SH [N, 3, K] channel-major (K = (d+1)^2), or features [N, D]
    viewmats: torch.Tensor,  # [C, 4, 4] world-to-camera, OpenCV axes (x right, y down, z forward)
    Ks: torch.Tensor,  # [C, 3, 3] intrinsics in pixels
    width: int,
    height: int,
    sh_degree: Optional[int] = None,  # SH bands to use; default all K bands; must be None for [N, D]
    background: Background = None,  # [D], [C, D] or a scalar; default black
    near: float = 0.01,  # camera-space z below which a Gaussian's centre is dropped (gsplat's near_plane)
    far: float = 1e10,  # and above which (far_plane)
    covars: Optional[torch.Tensor] = None,  # [N, 3, 3] world covariances, replaces quats/scales
    backend: str = "auto",  # "auto" (gsplat on CUDA if installed) | "torch" | "gsplat"
    radius_clip: float = 0.0,  # drop Gaussians whose projected radii (whole pixels) are both <= this
    depth_mode: str = "expected",  # "expected": sum w z / alpha; "accumulated": sum w z (gsplat's "D")
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render N Gaussians into C views.

    Returns ``rgb`` [C, H, W, D] (D = 3 for SH) composited over ``background``, ``alpha`` [C, H, W, 1]
    and ``depth`` [C, H, W, 1]: the expected camera-space z of what is visible (0 where alpha is 0), or
    with ``depth_mode="accumulated"`` the alpha-weighted sum of z (what the official depth video shows).
    Gaussians are kept as gsplat keeps them: centre z in [near, far], radius above ``radius_clip``
    (:mod:`vist3a.render.settings` has the rule and the official values). Outputs are float64 for float64
    inputs and float32 otherwise. Differentiable w.r.t. the Gaussian parameters on both backends.
    """
    n = means.shape[0] if means.ndim == 2 else -1
    _check("means", means, (None, 3))
    if covars is None:
        if quats is None or scales is None:
            raise ValueError("rasterize: give quats and scales, or covars")
        _check("quats", quats, (n, 4))
        _check("scales", scales, (n, 3))
    else:
        _check("covars", covars, (n, 3, 3))
    _check("opacities", opacities, (n,))
    if colors.ndim == 3:
        _check("colors (SH)", colors, (n, 3, None))
        k = colors.shape[2]
        full = math.isqrt(k) - 1
        if (full + 1) ** 2 != k:
            raise ValueError(f"rasterize: SH colors need (degree+1)^2 coefficients, got {k}")
        sh_degree = full if sh_degree is None else sh_degree
        if not 0 <= sh_degree <= min(full, 4):
            raise ValueError(f"rasterize: sh_degree {sh_degree} is outside 0..{min(full, 4)} for K={k}")
    else:
        _check("colors", colors, (n, None))
        if sh_degree is not None:
            raise ValueError("rasterize: sh_degree is set but colors are [N, D] features, not SH [N, 3, K]")
    _check("viewmats", viewmats, (None, 4, 4))
    cams = viewmats.shape[0]
    _check("Ks", Ks, (cams, 3, 3))
    if depth_mode not in DEPTH_MODES:
        raise ValueError(f"rasterize: depth_mode must be one of {', '.join(DEPTH_MODES)}, got {depth_mode!r}")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"rasterize: image size must be positive, got {width}x{height}")
    width, height = int(width), int(height)

    device = means.device
    dtype = means.dtype if means.dtype in (torch.float32, torch.float64) else torch.float32  # no fp16 maths
    means, quats, scales, opacities, colors, viewmats, Ks, covars = (
        None if t is None else t.to(dtype=dtype, device=device)
        for t in (means, quats, scales, opacities, colors, viewmats, Ks, covars)
    )
    use_torch = select_backend(backend, device, dtype) == "torch"
    run = rasterize_torch if use_torch else gsplat_backend.rasterize_gsplat
    work = torch_compute_device(device) if use_torch else device
    if work != device:  # differentiable moves: gradients flow back to the caller's device
        means, quats, scales, opacities, colors, viewmats, Ks, covars = (
            None if t is None else t.to(work) for t in (means, quats, scales, opacities, colors, viewmats, Ks, covars)
        )
    # On the CPU, as many threads as pay off right now: a busy machine makes extra threads a loss (threads.py).
    busy = cpu_render_threads(max(width * height, means.shape[0])) if use_torch and work.type == "cpu" else contextlib.nullcontext()
    with busy:
        feats, alpha, depth_sum = run(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            sh_degree=sh_degree, near=near, far=far, covars=covars, radius_clip=radius_clip,
        )
    feats, alpha, depth_sum = (t.to(device) for t in (feats, alpha, depth_sum))
    if background is not None:
        bg = torch.as_tensor(background, dtype=feats.dtype, device=feats.device)
        bg = bg.expand(cams, feats.shape[-1]) if bg.ndim < 2 else bg
        _check("background", bg, (cams, feats.shape[-1]))
        feats = feats + (1.0 - alpha) * bg[:, None, None, :]
    depth = depth_sum if depth_mode == "accumulated" else depth_sum / alpha.clamp_min(1e-10)
    return feats, alpha, depth


def render_gaussians(
    gaussians,
    c2w: torch.Tensor,  # [C, 4, 4] camera-to-world, OpenCV axes
    Ks: torch.Tensor,  # [C, 3, 3] pixels
    width: int,
    height: int,
    **kwargs,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`rasterize` for a :class:`~vist3a.gaussians.Gaussians` scene seen from c2w cameras."""
    g = gaussians
    viewmats = world_to_camera(c2w.to(dtype=g.means.dtype, device=g.means.device))
    return rasterize(
        g.means, g.rotations, g.scales, g.opacities, g.sh, viewmats, Ks, width, height, **kwargs
    )


def render_orbit(
    gaussians,
    n: int = 8,
    width: int = 256,
    height: int = 256,
    fov_deg: float = 50.0,
    elevation_deg: float = 15.0,
    background: Background = 1.0,
    **kwargs,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Preview a scene from ``n`` cameras orbiting its robust centre, framing its robust bounds.

    Returns (rgb [n, H, W, 3], c2w [n, 4, 4], K [n, 3, 3]).
    """
    c2w, K = framing_orbit(gaussians, n, width, height, fov_deg, elevation_deg)
    with torch.no_grad():
        rgb, _, _ = render_gaussians(gaussians, c2w, K, width, height, background=background, **kwargs)
    return rgb, c2w, K
