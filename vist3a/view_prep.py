"""Views for plain AnySplat reconstruction: pick at most N evenly spaced frames of an image batch and
bring them to the working size (centre square crop like AnySplat's demo, or aspect kept with sides
rounded to the 14-pixel patch grid)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import VIST3AError

__all__ = ["RESIZE_MODES", "ViewsError", "prepare_views"]

RESIZE_MODES = ("crop square", "keep aspect")
PATCH = 14  # AnySplat's DINO patch size: image sides must be multiples of it


class ViewsError(VIST3AError, ValueError):
    """The image batch cannot be used as views of one scene; the message says why."""


def prepare_views(images: torch.Tensor, max_views: int, size: int, resize: str = "crop square") -> torch.Tensor:
    """IMAGE batch [N, H, W, C>=3] in [0, 1] -> views [S, 3, h, w] in [0, 1], S = min(N, max_views)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] < 3:
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ViewsError(f"The images must be an IMAGE batch [N, H, W, 3], got {shape}.")
    if resize not in RESIZE_MODES:
        raise ViewsError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}.")
    if size < PATCH or size % PATCH:
        raise ViewsError(f"size must be a multiple of {PATCH} (AnySplat's patch), got {size}.")
    n = images.shape[0]
    if n < 2:
        raise ViewsError("At least 2 views of the scene are needed; give a video or an image batch.")
    if n > max_views:
        images = images[torch.linspace(0, n - 1, max_views).round().long()]
    x = images[..., :3].movedim(-1, 1).float()  # [S, 3, H, W]
    H, W = x.shape[-2:]
    if resize == "crop square":
        side = min(H, W)
        top, left = (H - side) // 2, (W - side) // 2
        x = x[..., top:top + side, left:left + side]
        out_hw = (size, size)
    else:
        scale = size / max(H, W)
        out_hw = (max(PATCH, round(H * scale / PATCH) * PATCH), max(PATCH, round(W * scale / PATCH) * PATCH))
    if tuple(x.shape[-2:]) != out_hw:
        x = F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0, 1)
