"""The pack's socket types and the values that travel on them: Wan/decoder handles, CAMERAS, and splats as
the SPLAT contract (ComfyUI's native type where it has one, our look-alike under the same name elsewhere).

Every socket type of the pack is declared here, once.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from comfy_api.latest import io

from vist3a.scene_view import CameraSet
from vist3a.splat_contract import SplatBatch, gaussians_to_splat, is_splat, splat_to_gaussians

from .errors import NodeError

CATEGORY = "VIST3A"
LOADERS = "VIST3A/loaders"
SPLATS = "VIST3A/splats"

WanModel = io.Custom("VIST3A_WAN")  # Wan 2.1 (diffusers classes) + LoRA stack: WanHandle
StitchedDecoder = io.Custom("VIST3A_DECODER")  # ModelHandle of vist3a.models.StitchedDecoder
AnySplatModel = io.Custom("VIST3A_ANYSPLAT")  # ModelHandle of vist3a.models.AnySplat
Cameras = io.Custom("CAMERAS")  # list[CameraSet], one per scene


def _native_splat():
    """ComfyUI's own (socket, class) for splats where it has them (2026+), else None."""
    try:
        from comfy_api.latest import Types
    except ImportError:
        return None
    cls, socket = getattr(Types, "SPLAT", None), getattr(io, "Splat", None)
    return (socket, cls) if cls is not None and socket is not None else None


# Splats travel as the SPLAT contract (vist3a.splat_contract) on every ComfyUI: the native type where
# it exists, so every native splat node connects both ways, else our look-alike under the same name,
# so one workflow JSON loads on old and new ComfyUI.
_NATIVE = _native_splat()
NATIVE_SPLAT = _NATIVE is not None
Splat = _NATIVE[0] if NATIVE_SPLAT else io.Custom("SPLAT")
SPLAT_CLASS = _NATIVE[1] if NATIVE_SPLAT else SplatBatch

# SH degree of the SPLAT our producers output (Decode Splats, Images to Splats, Load PLY): 3 by default, the highest
# that ComfyUI's splat viewers (Spark: Preview Splat, Save Splat), SuperSplat and the 3DGS tools read; AnySplat
# predicts degree 4, which those viewers refuse ("Invalid number of f_rest properties: 72"). Render Views and Save
# PLY 'full' use what the SPLAT carries, so sh_degree full keeps the model's own bands end to end.
SPLAT_SH_CHOICES = ["3", "full"]
SPLAT_SH_TIP = ("Spherical-harmonic degree of the SPLAT output. 3 (default): what ComfyUI's Preview Splat / Save Splat, "
                "SuperSplat and most 3DGS viewers read. full: every band the model predicts (AnySplat: degree 4) for Render "
                "Views and Save PLY 'full'; ComfyUI's Preview Splat and Save Splat cannot load degree 4.")


def sh_input():
    """The sh_degree widget of every node that outputs a SPLAT; optional, so API prompts written before it
    existed still validate (ComfyUI 0.28 refuses a missing required input)."""
    return io.Combo.Input("sh_degree", options=SPLAT_SH_CHOICES, default="3", optional=True, tooltip=SPLAT_SH_TIP)


def scenes_to_outputs(scenes, sh_degree: str = "3") -> tuple[Any, list, torch.Tensor]:
    """vist3a Scenes -> (SPLAT batch, CAMERAS list, frames IMAGE [sum S, H, W, 3])."""
    cams = [CameraSet(s.c2w.detach().float().cpu(), s.intrinsics.detach().float().cpu(), s.image_size) for s in scenes]
    frames = torch.cat([s.frames.detach().float().cpu() for s in scenes], dim=0)
    return to_splat([s.gaussians for s in scenes], sh_degree), cams, frames


def to_splat(scenes, sh_degree: str = "3") -> Any:
    """list[vist3a Gaussians] -> the SPLAT socket value of this ComfyUI (native class or SplatBatch), fp32 on
    the CPU (native splat nodes go through numpy, which has no bf16), SH cut to ``sh_degree`` ("3" or "full")."""
    if sh_degree not in SPLAT_SH_CHOICES:
        raise NodeError(f"sh_degree must be one of {', '.join(SPLAT_SH_CHOICES)}, got {sh_degree!r}.")
    out = []
    for g in scenes:
        g = g.detach().to("cpu", torch.float32)
        if sh_degree != "full" and g.sh_degree > int(sh_degree):
            g = g.truncate_sh(int(sh_degree))
        out.append(g)
    return gaussians_to_splat(out, make=SPLAT_CLASS)


def check_splat(value) -> list:
    """Any SPLAT (ours, a native node's such as Get Splat / TripoSplat, a batch) -> list[vist3a Gaussians]."""
    if not is_splat(value):
        raise NodeError(
            f"The splat input ({type(value).__name__}) is not a SPLAT; connect Decode Splats, Images to Splats, Load PLY "
            "or a ComfyUI splat node.")
    return splat_to_gaussians(value)


def check_cameras(value) -> Optional[list]:
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(c, CameraSet) for c in items):
        raise NodeError("The CAMERAS input does not come from a VIST3A node; connect Decode Splats or Images to Splats.")
    return list(items)
