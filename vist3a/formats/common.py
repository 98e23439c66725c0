"""What every splat file format shares: the default SH degree we write and the float32 CPU view writers encode from."""

from __future__ import annotations

import os
from typing import Union

import torch

__all__ = ["VIEWER_SH_DEGREE", "PathLike", "cpu_float32"]

VIEWER_SH_DEGREE = 3
"""Default SH degree of the files we write: the highest the common viewers read (3DGS SIBR viewer,
PlayCanvas splat-transform / SuperSplat, Spark in ComfyUI's frontend all stop at 45 ``f_rest``)."""

PathLike = Union[str, os.PathLike]


def cpu_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached, as float32 on the CPU (what every file writer encodes from)."""
    return t.detach().to(device="cpu", dtype=torch.float32)
