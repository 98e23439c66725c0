"""The render settings of the official VIST3A code, for every number that comes from a render.

The official decoder (AnySplat's ``DecoderSplattingCUDA``) calls ``gsplat.rasterization`` with
``near_plane=1e-10``, ``radius_clip=0.1``, the far plane left at gsplat's default 1e10, a white background
(``splatting_cuda.yaml``), ``render_mode="RGB+D"`` (accumulated depth) and ``rasterize_mode="classic"``; the
near/far its callers pass (0.01 / 100 for novel views, 0.1 / 100 for the trajectory videos and the reward)
are ignored. The NVS evaluation, the ``gs.mp4`` / ``depth.mp4`` videos the generation metrics read and the
alignment reward render with :data:`OFFICIAL_RENDER`; previews of arbitrary splat files keep
:func:`vist3a.render.rasterize`'s defaults, gsplat's own (near 0.01, far 1e10, no radius clip), so a
Gaussian touching an orbit camera does not fill the frame.

Culling, as gsplat does it and the torch rasteriser reproduces it: a Gaussian is dropped when its centre's
camera z is < near or > far (one exactly on a plane is drawn), and when its projected radii in whole pixels
are both <= the radius clip (gsplat 1.5: per axis ``ceil(min(3.33, sqrt(2 ln(255 opacity))) * sd)``, sd from
the 2D covariance after the 0.3 px² blur). That blur makes sd >= 0.55 px, so every radius is >= 1 px unless
the opacity is 1/255 to rounding: the official 0.1 drops only such Gaussians (alpha at most 1/255, at their
very centre), and with gsplat 1.4.0, the official pin (radius ``ceil(3 sqrt(largest eigenvalue))``, always
>= 1), nothing at all. It is kept as the official code has it, for larger clips to mean what they mean
in gsplat.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Union

__all__ = ["OFFICIAL_NEAR", "OFFICIAL_FAR", "OFFICIAL_RADIUS_CLIP", "OFFICIAL_BACKGROUND", "RenderSettings",
           "OFFICIAL_RENDER"]

OFFICIAL_NEAR = 1e-10  # decoder_splatting_cuda.py: near_plane=1e-10
OFFICIAL_FAR = 1e10  # not passed there: gsplat.rasterization's default far_plane
OFFICIAL_RADIUS_CLIP = 0.1  # decoder_splatting_cuda.py: radius_clip=0.1
OFFICIAL_BACKGROUND = 1.0  # splatting_cuda.yaml: background_color [1.0, 1.0, 1.0]


@dataclass(frozen=True)
class RenderSettings:
    """Keyword arguments of :func:`vist3a.render.rasterize` that decide which Gaussians are drawn and on what."""

    near: float = 0.01
    far: float = 1e10
    radius_clip: float = 0.0
    background: Union[None, float, tuple] = None

    def kwargs(self) -> dict:
        return asdict(self)


OFFICIAL_RENDER = RenderSettings(OFFICIAL_NEAR, OFFICIAL_FAR, OFFICIAL_RADIUS_CLIP, OFFICIAL_BACKGROUND)
