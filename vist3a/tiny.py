"""Tiny models: the real classes at toy sizes with deterministic weights, for tests and `make demo`.

The decoder weights use the parity fill rule (fan-in scaled, sane camera head), so the tiny demo
produces a well-formed scene instead of degenerate cameras. The same builders are used by
`python -m vist3a generate --tiny` and the training config `vist3a_train/configs/tiny_cpu.yaml`.
"""

from __future__ import annotations

import torch

from .models import AnySplat, AnySplatConfig, StitchConfig, StitchedDecoder
from .parity import fill_model

TINY_VIDEO_SIZE = 64  # px; latent 8x8 -> 4x4 tokens -> 56 px decoder context
TINY_FRAMES = 5


def tiny_anysplat_config() -> AnySplatConfig:
    return AnySplatConfig.tiny()


def tiny_stitch_config(cut_block: int = 2) -> StitchConfig:
    return StitchConfig(cut_block=cut_block, anysplat=tiny_anysplat_config())


def build_tiny_anysplat(seed: int = 0) -> AnySplat:
    model = AnySplat(tiny_anysplat_config())
    fill_model(model, "A", seed, None)
    return model.eval()


def build_tiny_decoder(seed: int = 0, cut_block: int = 2) -> StitchedDecoder:
    model = StitchedDecoder(tiny_stitch_config(cut_block))
    fill_model(model, "A", seed, None)
    return model.eval()


@torch.no_grad()
def random_latent(frames: int = TINY_FRAMES, size: int = TINY_VIDEO_SIZE, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 16, (frames - 1) // 4 + 1, size // 8, size // 8, generator=g)
