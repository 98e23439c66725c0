"""gsplat backend: the fast CUDA rasteriser, used when gsplat is installed and tensors are on CUDA.

gsplat is optional (``pip install vist3a[gsplat]``); it JIT-compiles its kernels on first use (which
can fail without a CUDA toolkit) and cannot render on CPU. So it is only imported when a CUDA render
asks for it, and a gsplat that cannot load its kernels counts as unavailable, with the reason kept.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from typing import Optional, Tuple

import torch

__all__ = ["is_available", "unavailable_reason", "rasterize_gsplat"]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def unavailable_reason() -> Optional[str]:
    """None if gsplat's CUDA kernels load, else one sentence saying why not (probed once)."""
    if not torch.cuda.is_available():
        return "CUDA is not available"
    if importlib.util.find_spec("gsplat") is None:
        return "gsplat is not installed (pip install 'vist3a[gsplat]')"
    try:
        from gsplat.cuda._backend import _C  # triggers the one-time JIT build
    except Exception as e:  # a failed build surfaces as many exception types
        reason = f"gsplat could not load its CUDA kernels ({type(e).__name__}: {e})"
    else:
        if _C is not None:
            return None
        reason = "gsplat found no CUDA toolkit to build its kernels"
    log.warning("%s; rendering with the pure-torch rasteriser instead", reason)
    return reason


def is_available(device: Optional[torch.device] = None) -> bool:
    """True if ``device`` (default: any) is a CUDA device and gsplat's kernels load."""
    if device is not None and torch.device(device).type != "cuda":
        return False
    return unavailable_reason() is None


def rasterize_gsplat(
    means: torch.Tensor,  # [N, 3]
    quats: Optional[torch.Tensor],  # [N, 4] wxyz
    scales: Optional[torch.Tensor],  # [N, 3] linear
    opacities: torch.Tensor,  # [N]
    colors: torch.Tensor,  # [N, D] or SH [N, 3, K] (our channel-major layout)
    viewmats: torch.Tensor,  # [C, 4, 4] world-to-camera
    Ks: torch.Tensor,  # [C, 3, 3] pixels
    width: int,
    height: int,
    sh_degree: Optional[int] = None,
    near: float = 0.01,
    far: float = 1e10,
    covars: Optional[torch.Tensor] = None,  # [N, 3, 3]
    radius_clip: float = 0.0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same contract as :func:`vist3a.render.torch_backend.rasterize_torch`, computed by gsplat."""
    try:
        from gsplat import rasterization
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the gsplat backend needs the gsplat package (pip install 'vist3a[gsplat]'); "
            "use backend='torch' instead"
        ) from e
    if sh_degree is not None:
        colors = colors.transpose(1, 2)  # gsplat wants SH as [N, K, 3]
    extra = {} if covars is None else {"covars": covars}  # gsplat then ignores quats/scales
    rendered, alphas, _ = rasterization(
        means,
        quats,
        scales,
        opacities,
        colors,
        viewmats,
        Ks,
        width,
        height,
        near_plane=near,
        far_plane=far,
        radius_clip=radius_clip,
        eps2d=0.3,
        sh_degree=sh_degree,
        render_mode="RGB+D",
        rasterize_mode="classic",
        **extra,
    )
    return rendered[..., :-1], alphas, rendered[..., -1:]
