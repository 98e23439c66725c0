"""antimatter15's ``.splat``: 32 bytes per Gaussian, no header, colour only (SH degree 0), 8-bit colour and rotation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_save_bytes
from ..errors import PlyError
from ..gaussians import SH_C0, Gaussians
from .common import PathLike, cpu_float32

__all__ = ["save_splat", "load_splat"]

def save_splat(g: Gaussians, path: PathLike) -> Path:
    """Write the compact antimatter15 ``.splat`` format (32 bytes per Gaussian), atomically.

    Per Gaussian: position f32x3, scale f32x3 (linear), RGBA u8x4 (colour from SH degree 0, alpha =
    opacity), rotation u8x4 (unit wxyz quaternion * 128 + 128). Sorted by descending
    scale-product * opacity like the reference converter, so viewers stream big splats first.
    """
    g.validate()
    scales, opacity = cpu_float32(g.scales), cpu_float32(g.opacities)
    importance = scales[:, 0] * scales[:, 1] * scales[:, 2] * opacity  # >= 0: its bit patterns sort like it
    # stable descending = stable ascending of the negated bit patterns (>= 0, so no overflow); torch radix-sorts
    # ascending integer keys only (a descending sort took 4.5x longer)
    order = torch.sort(importance.view(torch.int32).neg(), stable=True).indices
    n = g.num
    record = torch.empty(n, 8, dtype=torch.float32)  # 32 bytes: position, scale, then 8 bytes of u8
    record[:, 0:3] = cpu_float32(g.means)
    record[:, 3:6] = scales
    packed = record.view(torch.uint8)[:, 24:]
    rgba = torch.cat([0.5 + SH_C0 * cpu_float32(g.sh[:, :, 0]), opacity[:, None]], dim=1)
    packed[:, 0:4] = rgba.mul_(255).clamp_(0, 255).to(torch.uint8)  # truncating, as the reference converter
    rot = cpu_float32(g.rotations)
    rot = rot / torch.linalg.vector_norm(rot, dim=1, keepdim=True)
    packed[:, 4:8] = rot.mul_(128).add_(128).clamp_(0, 255).to(torch.uint8)
    return atomic_save_bytes(path, record.index_select(0, order).numpy())  # one gather of whole records


_SPLAT_RECORD = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])


def load_splat(path: PathLike) -> Gaussians:
    """Read an antimatter15 ``.splat`` (32 bytes per Gaussian, no header) into float32 CPU Gaussians.

    Colour and opacity come back quantised to 8 bits, rotations to 1/128; SH degree 0.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0 or size % _SPLAT_RECORD.itemsize:
        raise PlyError(f"{path} is not a .splat file: its size ({size} bytes) is not a positive multiple of 32")
    raw = torch.from_numpy(np.fromfile(path, dtype=np.uint8)).view(-1, 32)  # torch: threaded conversions
    floats = raw.view(torch.float32)  # [N, 8]: position, scale, then the 8 bytes of u8
    means, scales = floats[:, 0:3].clone(), floats[:, 3:6].clone()
    for name, values in (("positions", means), ("scales", scales)):
        if not bool(torch.isfinite(values).all()):
            raise PlyError(f"{path} has {int((~torch.isfinite(values)).sum())} non-finite {name}; it is not a valid .splat")
    if bool((scales < 0).any()):
        raise PlyError(f"{path} has negative scales; it is not a valid .splat (scales are stored linear)")
    rot = raw[:, 28:32].float().sub_(128.0).div_(128.0)
    norms = torch.linalg.vector_norm(rot, dim=1, keepdim=True)
    if bool((norms <= 1e-6).any()):
        raise PlyError(f"{path} has {int((norms <= 1e-6).sum())} zero-length rotation quaternions")
    rgba = raw[:, 24:28].float().div_(255.0)
    return Gaussians(
        means=means,
        scales=scales,
        rotations=rot.div_(norms),
        opacities=rgba[:, 3].contiguous(),
        sh=rgba[:, :3].sub(0.5).div_(SH_C0)[:, :, None],
    )
