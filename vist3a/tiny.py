"""Tiny models: the real classes at toy sizes with deterministic weights, for tests and `make demo`.

The decoder weights use the parity fill rule (fan-in scaled, sane camera head), so the tiny demo
produces a well-formed scene instead of degenerate cameras. The same builders are used by
`python -m vist3a generate --tiny` and the training config `vist3a_train/configs/tiny_cpu.yaml`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from .errors import CheckpointError
from .models import AnySplat, AnySplatConfig, StitchConfig, StitchedDecoder
from .parity import fill_model
from .weights.common import PathLike, shape_of
from .weights.keys import TOKEN_KEYS
from .weights.readers import save_torch_atomic
from .weights.stitched import make_stitched_checkpoint, wrapped_modules

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


def write_tiny_stitched_pth(
    path: PathLike,
    stitched_sd: Mapping[str, Any],
    rank: int = 4,
    seed: int = 0,
    *,
    latent_channels: int = 16,
) -> dict:
    """Write a random checkpoint in the official layout for ``stitched_sd`` (tests, demos).

    Random LoRA factors (non-zero B, so merging is observable), random biases, tokens and
    stitching conv; only the shapes of ``stitched_sd`` are used. Returns the saved dict.
    """
    g = torch.Generator().manual_seed(seed)

    def rand(shape: Sequence[int], scale: float) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=g, dtype=torch.float32) * scale

    modules = wrapped_modules(stitched_sd)
    factors = {}
    trained: dict[str, Any] = {}
    for m in modules:
        a, b = m.lora_shapes(rank)
        factors[m.name] = (rand(a, a[1] ** -0.5), rand(b, 0.1 * b[1] ** -0.5))
        trained[f"{m.name}.weight"] = m.weight_shape
        if m.has_bias:
            trained[f"{m.name}.bias"] = rand((m.weight_shape[0],), 0.02)
    for key in TOKEN_KEYS.values():
        if key not in stitched_sd:
            raise CheckpointError(
                f"The stitched decoder state dict has no '{key}'; build it with stitched_from_anysplat().",
                key=key,
            )
        trained[key] = rand(shape_of(stitched_sd[key]), 0.02)
    embed = shape_of(stitched_sd[TOKEN_KEYS["mask_token"]])[-1]
    w_shape = shape_of(stitched_sd.get("stitching_layer.weight", (embed, latent_channels, 5, 3, 3)))
    trained["stitching_layer.weight"] = rand(w_shape, math.prod(w_shape[1:]) ** -0.5)
    trained["stitching_layer.bias"] = rand(w_shape[:1], 0.02)
    ckpt = make_stitched_checkpoint(trained, factors, source=str(path))
    save_torch_atomic(ckpt, path)
    return ckpt
