"""Key layout of AnySplat, the stitched decoder and the official ``anysplat_stitched.pth``.

Why a module of its own: detection, validation and the LoRA merge all name the same prefixes, so
they live in one place (see ``tests/fixtures/stitched_checkpoint_format.md``).
"""

from __future__ import annotations

import re
from typing import Iterable

OFFICIAL_LORA_RANK = 64
OFFICIAL_LORA_ALPHA = 32
OFFICIAL_LORA_SCALE = OFFICIAL_LORA_ALPHA / OFFICIAL_LORA_RANK  # 0.5

DINO_BLOCKS_PREFIX = "encoder.aggregator.patch_embed.blocks."
PATCH_CONV_PREFIX = "encoder.aggregator.patch_embed.patch_embed."
DISTILL_PREFIX = "encoder.distill_"
STITCHING_PREFIX = "stitching_layer."

# Top-level token entries of the official .pth -> their key in the stitched decoder state dict.
TOKEN_KEYS = {
    "mask_token": "encoder.aggregator.patch_embed.mask_token",
    "cls_token": "encoder.aggregator.patch_embed.cls_token",
    "register_tokens": "encoder.aggregator.patch_embed.register_tokens",
}
STITCHED_PTH_TOP_KEYS = ("lora", "stitching_layer", "mask_token", "cls_token", "register_tokens")

DINO_RE = re.compile(r"^encoder\.aggregator\.patch_embed\.blocks\.(\d+)\.(.+)$")
# ConvTranspose2d layers of the DPT heads: 4-D weights that the official add_lora does NOT wrap.
CONV_TRANSPOSE_RE = re.compile(r"(^|\.)resize_layers\.[01]\.weight$")


def dino_block_count(keys: Iterable[str]) -> int:
    """Number of DINO blocks named in ``keys`` (highest index + 1; 0 when there are none)."""
    ids = [int(m.group(1)) for k in keys if (m := DINO_RE.match(k))]
    return max(ids) + 1 if ids else 0


def looks_anysplat(keys: Iterable[str]) -> bool:
    """True when ``keys`` hold both the AnySplat aggregator and its camera head."""
    keys = set(keys)
    return any(k.startswith("encoder.aggregator.") for k in keys) and any(
        k.startswith("encoder.camera_head.") for k in keys
    )
