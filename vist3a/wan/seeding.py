"""Initial noise the two ways a user may want it: portable (ours) or exactly as the official script.

- ``portable`` (default): ``torch.randn`` from a CPU generator seeded per call, then moved to the device,
  so a seed gives the same latent on any machine (what ``WanPipeline(generator=Generator('cpu'))`` does).
- ``official``: ``inference_t23d.py`` calls ``seed_everything(12413)`` once (Python ``random``, NumPy,
  torch CPU and every CUDA device) and lets ``WanPipeline.prepare_latents`` draw each prompt's noise with
  no generator, i.e. from the global RNG of the execution device (the GPU), one draw per prompt in the
  order of its prompt list, nothing else touching that RNG in between.  :func:`official_noise` reseeds the
  same way and replays the stream up to prompt ``index``, so the ``index``-th prompt of an official run
  (one GPU, world size 1) gets bit-identical noise on the same GPU model and torch version.  It reseeds
  the process-wide RNGs, exactly as the official script does.
"""

from __future__ import annotations

import random
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import VIST3AError

__all__ = ["SEED_MODES", "OFFICIAL_SEED", "seed_everything", "official_noise", "portable_noise", "initial_noise"]

SEED_MODES = ("portable", "official")
OFFICIAL_SEED = 12413  # inference_t23d.py


def seed_everything(seed: int) -> None:
    """What ``pytorch_lightning.seed_everything(seed)`` does to the RNGs: random, NumPy, torch (CPU + CUDA)."""
    seed = int(seed)
    if not 0 <= seed <= 2**32 - 1:
        raise VIST3AError(f"seed={seed} is out of range: the official seeding takes 0 .. 4294967295")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def official_noise(shape: Sequence[int], device, seed: int = OFFICIAL_SEED, index: int = 0) -> torch.Tensor:
    """The noise of prompt ``index`` (0-based) of an official run: reseed the globals, replay the draws."""
    if int(index) != index or index < 0:
        raise VIST3AError(f"prompt index {index} is not possible: use 0 for the first prompt of the run, 1 for the next")
    seed_everything(seed)
    device = torch.device(device)
    noise = None
    for _ in range(int(index) + 1):
        # diffusers' randn_tensor(shape, generator=None, device, float32) is exactly this call.
        noise = torch.randn(tuple(shape), device=device, dtype=torch.float32)
    return noise


def portable_noise(shape: Sequence[int], device, seed: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``randn`` from a CPU generator seeded with ``seed`` (or ``generator``), moved to ``device``."""
    from diffusers.utils.torch_utils import randn_tensor

    if generator is None:
        generator = torch.Generator("cpu").manual_seed(int(seed))
    return randn_tensor(tuple(shape), generator=generator, device=torch.device(device), dtype=torch.float32)


def initial_noise(mode: str, shape: Sequence[int], device, seed: Optional[int], index: int = 0,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Dispatch on ``mode`` (one of :data:`SEED_MODES`); ``seed=None`` in official mode means 12413."""
    if mode == "official":
        return official_noise(shape, device, OFFICIAL_SEED if seed is None else seed, index)
    if mode == "portable":
        if seed is None and generator is None:
            raise VIST3AError("portable noise needs a seed (or a torch.Generator)")
        return portable_noise(shape, device, seed, generator)
    raise VIST3AError(f"seed mode {mode!r} is not known: use one of {', '.join(SEED_MODES)}")
