"""Weights I/O: every file VIST3A reads or writes goes through this package (no model code imported).

Why a package: the released files come in several formats (AnySplat safetensors, the official
``anysplat_stitched.pth`` LoRA checkpoint, Wan diffusers folders / ComfyUI single files, PEFT LoRA
folders, our own exports); a wrong or unsafe file must fail with one clear sentence instead of a
shape error deep in ``load_state_dict`` or code execution from a pickle. One concern per module:

* :mod:`.readers`  -- safe .pth loading (weights_only), validated safetensors headers, atomic writers
* :mod:`.detect`   -- what a path holds (``sniff``) and the one Wan single-file classifier
* :mod:`.manifest` -- ``vist3a_manifest.json`` of our exports
* :mod:`.validate` -- state dict vs expected keys/shapes, in one sentence
* :mod:`.stitched` -- cutting AnySplat, the LoRA-wrapped layers, merging/writing the official checkpoint
* :mod:`.keys`     -- the key layout constants all of the above share
"""

from __future__ import annotations

from .detect import KINDS, Detected, WanFile, classify_wan, sniff
from .keys import (
    OFFICIAL_LORA_ALPHA,
    OFFICIAL_LORA_RANK,
    OFFICIAL_LORA_SCALE,
    STITCHED_PTH_TOP_KEYS,
    TOKEN_KEYS,
)
from .manifest import (
    MANIFEST_FORMATS,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    make_manifest,
    read_manifest,
    write_manifest,
)
from .readers import (
    SafetensorsHeader,
    TensorInfo,
    read_pth_state_dict,
    read_safetensors,
    read_safetensors_header,
    safe_torch_load,
    save_safetensors_atomic,
    save_torch_atomic,
)
from .stitched import (
    WrappedModule,
    expected_lora_keys,
    make_stitched_checkpoint,
    merge_stitched_checkpoint,
    stitched_from_anysplat,
    wrapped_modules,
)
from .validate import validate_state_dict

__all__ = [
    "KINDS",
    "Detected",
    "WanFile",
    "classify_wan",
    "sniff",
    "OFFICIAL_LORA_ALPHA",
    "OFFICIAL_LORA_RANK",
    "OFFICIAL_LORA_SCALE",
    "STITCHED_PTH_TOP_KEYS",
    "TOKEN_KEYS",
    "MANIFEST_FORMATS",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "make_manifest",
    "read_manifest",
    "write_manifest",
    "SafetensorsHeader",
    "TensorInfo",
    "read_pth_state_dict",
    "read_safetensors",
    "read_safetensors_header",
    "safe_torch_load",
    "save_safetensors_atomic",
    "save_torch_atomic",
    "WrappedModule",
    "expected_lora_keys",
    "make_stitched_checkpoint",
    "merge_stitched_checkpoint",
    "stitched_from_anysplat",
    "wrapped_modules",
    "validate_state_dict",
]
