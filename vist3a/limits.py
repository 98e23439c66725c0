"""Up-front resource checks: refuse a job that cannot fit, with numbers, before any model runs.

The estimates are deliberately simple upper-bound models of the stitched decoder's dominant
buffers (per-pixel Gaussians, DPT feature maps of one chunk of 8 frames, aggregator tokens);
they are checked against free device memory (CUDA) or MemAvailable (CPU) minus a safety margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ResourceError
from .models.config import StitchConfig

MAX_FRAMES = 81  # Wan 2.1's longest video (and far beyond the 21-frame extended decoder)
MAX_SIDE = 1280
GAUSSIAN_BYTES = 4 * (3 + 9 + 75 + 1 + 3 + 4 + 3)  # means, cov, SH deg 4, opacity, scales, rot, + voxel pts
GIB = 1024**3



@dataclass(frozen=True)
class Estimate:
    gaussians: int
    decoder_bytes: int

    @property
    def decoder_gib(self) -> float:
        return self.decoder_bytes / GIB


def estimate(frames: int, height: int, width: int, *, embed_dim: int = 1024, features: int = 256, sh_degree: int = 4) -> Estimate:
    ch, cw = StitchConfig().context_size((height // 8, width // 8))  # video -> latent (/8) -> context (512 -> 448)
    pixels = frames * ch * cw
    chunk = min(frames, 8) * ch * cw
    d_sh = (sh_degree + 1) ** 2
    raw_gs = pixels * (8 + 3 * d_sh) * 4  # Gaussian head output, fp32
    gaussians = pixels * GAUSSIAN_BYTES * 2  # per-pixel fields + voxel fusion temporaries
    dpt = chunk * features * 4 * 4  # a few live full-resolution feature maps of one chunk
    tokens = frames * (ch // 14) * (cw // 14) * 2 * embed_dim * 4 * 8  # 4 kept layers x2 + working set
    return Estimate(gaussians=pixels, decoder_bytes=raw_gs + gaussians + dpt + tokens)


def available_bytes(device: torch.device | str) -> int:
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown platform: do not block


def check_generation(frames: int, height: int, width: int, *, device="cpu", margin: float = 0.9, max_gaussians: int | None = None) -> Estimate:
    """Raise ResourceError (what is asked, what fits, what to do) before a job that cannot succeed."""
    if not 1 <= frames <= MAX_FRAMES:
        raise ResourceError(f"{frames} frames is outside 1..{MAX_FRAMES}; VIST3A uses 13 (or 21 with the extended decoder)")
    if max(height, width) > MAX_SIDE:
        raise ResourceError(f"{width}x{height} exceeds the {MAX_SIDE}-pixel limit; VIST3A uses 512x512")
    est = estimate(frames, height, width)
    if max_gaussians is not None and est.gaussians > max_gaussians:
        raise ResourceError(
            f"{frames} frames at {width}x{height} give {est.gaussians:,} per-pixel Gaussians, over the limit of "
            f"{max_gaussians:,}; use fewer frames or a smaller size"
        )
    free = available_bytes(device)
    if est.decoder_bytes > margin * free:
        raise ResourceError(
            f"decoding {frames} frames at {width}x{height} needs about {est.decoder_gib:.1f} GiB but only "
            f"{free / GIB:.1f} GiB is free on {torch.device(device)}; use fewer frames or a smaller size "
            f"(13 frames at 512x512 needs about {estimate(13, 512, 512).decoder_gib:.1f} GiB)"
        )
    return est
