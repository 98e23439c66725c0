"""Exports in the released formats, written where the nodes and the CLI find them.

* stitched decoder -> ``OUTPUT/export/stitched_decoder/``: ``anysplat_stitched.pth`` in the official
  layout (LoRA factors + trained biases, stitching conv, tokens; what the official loader reads),
  ``model.safetensors`` (the same decoder with the LoRA merged, what ``vist3a.decoders`` reads
  without needing the AnySplat base) and ``vist3a_manifest.json``;
* Wan LoRA -> ``OUTPUT/export/vist3a_lora_ema/`` (and ``vist3a_lora/`` for the raw weights): the PEFT
  folder ``PeftModel.save_pretrained`` writes (``adapter_model.safetensors`` with keys
  ``base_model.model.blocks.{i}.attn1.to_q.lora_A.weight`` ..., metadata ``{"format": "pt"}``,
  ``adapter_config.json``) plus ``vist3a_manifest.json``.

Each folder is assembled under a temporary name and renamed into place, so a reader never sees a
half-written export.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import torch

from vist3a import weights as wt

__all__ = ["atomic_folder", "export_stitched", "export_wan_lora", "STITCHED_EXPORT", "LORA_EMA_EXPORT", "LORA_EXPORT"]

STITCHED_EXPORT = "stitched_decoder"
LORA_EMA_EXPORT = "vist3a_lora_ema"
LORA_EXPORT = "vist3a_lora"


@contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            trash = final.parent / f".trash-{final.name}-{os.getpid()}"
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_stitched(folder: Path, *, base_state: Mapping[str, torch.Tensor], trained: Mapping[str, torch.Tensor],
                    cfg, lora_rank: int, lora_alpha: float, extra: dict | None = None) -> Path:
    """``base_state``: the frozen stitched weights (AnySplat after the cut); ``trained``: full fp32 values
    of every trainable parameter under stitched-decoder names (``M.lora_A``, ``M.bias``, tokens,
    ``stitching_layer.*``)."""
    from vist3a.decoders import save_stitched_export
    from vist3a.models import StitchedDecoder

    state = {k: v for k, v in base_state.items()}
    factors = {}
    for name, value in trained.items():
        if name.endswith(".lora_A"):
            module = name[: -len(".lora_A")]
            factors[module] = (value, trained[f"{module}.lora_B"])
        elif not name.endswith(".lora_B"):
            state[name] = value
    official = wt.make_stitched_checkpoint(state, factors, source="stitch.py export")
    merged = wt.merge_stitched_checkpoint(state, official, source="stitch.py export",
                                          lora_scale=float(lora_alpha) / float(lora_rank))
    decoder = StitchedDecoder(cfg)
    decoder.load_state_dict(merged, strict=True)
    with atomic_folder(folder) as tmp:
        save_stitched_export(decoder, tmp, official_pth=official, created_by="vist3a_train/stitch.py",
                             lora={"rank": int(lora_rank), "alpha": float(lora_alpha)}, **(extra or {}))
    return Path(folder)


def export_wan_lora(folder: Path, adapter: Mapping[str, torch.Tensor], adapter_config: dict, *,
                    architecture: dict, extra: dict | None = None) -> Path:
    with atomic_folder(folder) as tmp:
        wt.save_safetensors_atomic(adapter, tmp / "adapter_model.safetensors", metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(
            "# VIST3A Wan LoRA\n\nWritten by vist3a_train/align.py in the PEFT layout of the released "
            "`vist3a_*_lora_ema` folders. Load with `PeftModel.from_pretrained(transformer, this_folder)`, "
            "`vist3a.wan.apply_vist3a_lora`, or the VIST3A LoRA node (put the folder in ComfyUI's models/loras).\n")
        wt.write_manifest(tmp, wt.make_manifest("vist3a.wan_lora", architecture=architecture,
                                                files={"adapter": "adapter_model.safetensors", "config": "adapter_config.json"},
                                                created_by="vist3a_train/align.py", **(extra or {})))
    return Path(folder)
