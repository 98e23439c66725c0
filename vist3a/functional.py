"""The functional API: decoder outputs -> per-scene results, with no model loading or placement.

Why separate from the pipeline: callers mix sources. The ComfyUI "Decode Splats" node hands us a
latent from any sampler and frames decoded by ComfyUI's own VAE, "AnySplat from images" has only
images, training eval has its own models; all of them call these functions directly, as gsplat's
``rendering.py`` exposes ``rasterization``. :class:`vist3a.pipeline.VIST3APipeline` uses them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .block_hooks import block_checks
from .finite import check_finite
from .gaussians import Gaussians
from .models import AnySplat, SplatOutput, StitchedDecoder
from .models.gaussian_adapter import RawGaussians

ProgressFn = Callable[[str, int, int], None]  # (stage, step, total)
CancelFn = Callable[[], bool]


@dataclass
class Scene:
    """One reconstructed scene: Gaussians plus the cameras/depth the decoder predicted for each frame."""

    gaussians: Gaussians
    c2w: torch.Tensor  # [S, 4, 4] camera-to-world, OpenCV axes
    intrinsics: torch.Tensor  # [S, 3, 3] normalised by image width/height
    depth: torch.Tensor  # [S, H, W]
    frames: torch.Tensor  # [S, H, W, 3] in [0, 1]: the RGB context the decoder saw
    info: dict = field(default_factory=dict)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def to_gaussians(raw: RawGaussians) -> Gaussians:
    return Gaussians.from_xyzw(raw.means, raw.scales, raw.rotations, raw.opacities, raw.harmonics, raw.covariances)


def scenes_from_output(out: SplatOutput, images01: torch.Tensor, *, min_opacity: float = 0.0) -> list[Scene]:
    """Split a batched decoder output into per-scene results; prune faint Gaussians if asked."""
    check_finite(min_opacity, "min_opacity")
    scenes = []
    for b, raw in enumerate(out.gaussians):
        g = to_gaussians(raw)
        n_before = g.num
        if min_opacity > 0:
            g = g.prune(min_opacity=min_opacity)
        scenes.append(
            Scene(
                gaussians=g,
                c2w=out.extrinsics[b],
                intrinsics=out.intrinsics[b],
                depth=out.depth[b, ..., 0],
                frames=images01[b].permute(0, 2, 3, 1).clamp(0, 1),
                info={"gaussians_before_pruning": n_before, "scene_scale": float(out.scene_scale)},
            )
        )
    return scenes


def context_from_video(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Decoded video [B, 3, F, H, W] in [-1, 1] -> the decoder context at `size`, resized exactly as the
    official inference does (trilinear, align_corners=False, frame count kept)."""
    if tuple(video.shape[-2:]) == tuple(size):
        return video
    return F.interpolate(video.float(), size=(video.shape[2], *size), mode="trilinear", align_corners=False)


@torch.no_grad()
def splats_from_latent(
    decoder: StitchedDecoder,
    latent: torch.Tensor,
    video: torch.Tensor,
    *,
    voxelize: bool | None = None,
    min_opacity: float = 0.0,
    should_cancel: CancelFn | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Scene]:
    """Raw Wan latent [B, 16, T, h, w] + its decoded video [B, 3, F, H, W] in [-1, 1] -> scenes.
    ``should_cancel()`` is asked before every block (raising Cancelled); ``progress(done, total)`` counts the
    transformer blocks."""
    device = next(decoder.parameters()).device
    size = decoder.cfg.context_size(latent.shape[-2:])
    context = context_from_video(video.to(device), size)
    with block_checks(decoder, should_cancel, progress, counted=decoder.encoder.transformer_blocks(),
                      what="Decoding splats"):
        out = decoder.forward_with_latent(latent.to(device).float(), context, voxelize_output=voxelize)
    return scenes_from_output(out, (context.permute(0, 2, 1, 3, 4) + 1) / 2, min_opacity=min_opacity)


@torch.no_grad()
def splats_from_images(anysplat: AnySplat, images01: torch.Tensor, *, voxelize: bool | None = None, min_opacity: float = 0.0,
                       should_cancel: CancelFn | None = None, progress: Callable[[int, int], None] | None = None) -> list[Scene]:
    """Images [S, H, W, 3] or [B, S, 3, H, W] in [0, 1] -> scenes (plain AnySplat). Sizes that are not
    multiples of 14 are resized down to the nearest multiple (aspect ratio kept within a patch). Cancel and
    progress as :func:`splats_from_latent`."""
    if images01.dim() == 4:
        images01 = images01.permute(0, 3, 1, 2).unsqueeze(0)
    if images01.dim() != 5 or images01.shape[2] != 3:
        raise ValueError(f"images must be [S, H, W, 3] or [B, S, 3, H, W], got {list(images01.shape)}")
    if images01.shape[1] < 2:
        raise ValueError("AnySplat needs at least 2 views (frames) of the scene; give a video or several images")
    patch = anysplat.cfg.patch_size
    H, W = images01.shape[-2:]
    Hn, Wn = max(patch, H // patch * patch), max(patch, W // patch * patch)
    device = next(anysplat.parameters()).device
    x = images01.to(device).float()
    if (Hn, Wn) != (H, W):
        B, S = x.shape[:2]
        x = F.interpolate(x.flatten(0, 1), size=(Hn, Wn), mode="bilinear", align_corners=False, antialias=True)
        x = x.reshape(B, S, 3, Hn, Wn)
    with block_checks(anysplat, should_cancel, progress, counted=anysplat.encoder.transformer_blocks(),
                      what="Images to splats"):
        out = anysplat(x.clamp(0, 1), voxelize_output=voxelize)
    return scenes_from_output(out, x, min_opacity=min_opacity)
