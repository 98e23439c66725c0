"""Reading find_layer.py's result for stitch.py: the cut to use and the ridge-solved conv for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from .config import Config, ConfigError, resolve_path

__all__ = ["load_layer_search"]


def load_layer_search(cfg: Config, out_dir: Path, cut_spec) -> tuple[int, Optional[dict], str]:
    """-> (cut, {"weight", "bias"} or None, description). ``models.layer_search: none`` skips the file
    (PyTorch's default conv init; the cut must then be a number)."""
    value = cfg.models.layer_search
    if isinstance(value, str) and value.lower() == "none":
        if not isinstance(cut_spec, int):
            raise ConfigError("stitch.cut must be a number when models.layer_search is none")
        return int(cut_spec), None, "default conv init (models.layer_search: none)"
    path = resolve_path(cfg, value) if value not in (None, "") else Path(out_dir) / "layer_search.json"
    if not path.is_file():
        raise ConfigError(f"layer search result '{path}' does not exist; run find_layer.py with the same --output-dir "
                          "first, point models.layer_search at its layer_search.json, or set models.layer_search: none")
    try:
        result = json.loads(path.read_text())
        chosen = int(result["chosen_cut"])
        files = result["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"layer search result '{path}' is malformed ({exc}); re-run find_layer.py") from None
    if cut_spec == "chosen":
        cut = chosen
    elif isinstance(cut_spec, int):
        cut = cut_spec
    else:
        raise ConfigError(f"stitch.cut must be a number or 'chosen', got {cut_spec!r}")
    from vist3a.weights import read_safetensors

    if cut == chosen:
        weights = read_safetensors(path.parent / files["chosen_weights"])
    else:
        if "all_weights" not in files:
            raise ConfigError(f"'{path}' holds only the chosen layer {chosen}; stitch.cut {cut} needs "
                              "find_layer.keep_all_layer_weights: true")
        every = read_safetensors(path.parent / files["all_weights"])
        key = f"enc_blocks_{cut}"
        if f"{key}.weight" not in every:
            raise ConfigError(f"'{path.parent / files['all_weights']}' has no solution for {key}; "
                              "add it to find_layer.candidate_layers")
        weights = {"weight": every[f"{key}.weight"], "bias": every[f"{key}.bias"]}
    mse = result.get("mse_per_layer", {}).get(f"enc_blocks_{cut}")
    return cut, {k: v.to(torch.float32) for k, v in weights.items()}, f"ridge init from {path} (MSE {mse})"
