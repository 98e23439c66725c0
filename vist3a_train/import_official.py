#!/usr/bin/env python
"""Bring the official training scripts' outputs into this project's formats (nothing in them is executed).

    python vist3a_train/import_official.py layer-search FEATURE_SAVE_PATH --output-dir RUN
        -> RUN/layer_search.json + stitching_layer(s).safetensors: stitch.py (models.layer_search, stitch.cut
           chosen or a number) starts from the official ridge fit
    python vist3a_train/import_official.py stitch SAVE_PATH/epoch_N --output-dir OUT
        -> OUT/anysplat_stitched.pth (the released layout): `python -m vist3a generate --decoder OUT/anysplat_stitched.pth
           --anysplat ANYSPLAT ...`, the ComfyUI loader, or align.py (models.decoder)
    python vist3a_train/import_official.py align SAVE_PATH/checkpoints/checkpoint-N --output-dir OUT
        -> OUT/vist3a_lora_ema/ and OUT/vist3a_lora/ (PEFT folders with our manifest), as align.py exports them

The optimizer/scheduler states and the step are reported (and the EMA shadow is checked against lora_ema);
continuing an official run's optimizer inside our engines is not supported: a run started from these files
begins with fresh Adam moments.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from vist3a_train.common.config import ConfigError
from vist3a_train.common.official_artifacts import read_align_checkpoint, read_layer_search, read_stitch_epoch


def import_layer_search(src: Path, out: Path) -> dict:
    from vist3a.atomic import atomic_write
    from vist3a.weights import save_safetensors_atomic

    weights, mse = read_layer_search(src)
    if set(mse) != set(weights):
        raise ConfigError(f"'{src}' lacks mse_<layer>.txt for {sorted(set(weights) - set(mse))[0]}; the official run "
                          "writes one per fitted layer")
    chosen = min(mse, key=mse.get)
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors_atomic({k: v.contiguous() for k, v in weights[chosen].items()}, out / "stitching_layer.safetensors",
                            metadata={"layer": chosen})
    save_safetensors_atomic({f"{k}.{p}": v.contiguous() for k, w in weights.items() for p, v in w.items()},
                            out / "stitching_layers.safetensors")
    w = weights[chosen]["weight"]
    result = {"mse_per_layer": mse, "chosen_layer": chosen, "chosen_cut": int(chosen.rsplit("_", 1)[1]), "ridge": 1e-4,
              "conv": {"in_channels": int(w.shape[1]), "out_channels": int(w.shape[0]), "kernel": list(w.shape[2:]),
                       "padding_mode": "replicate", "fit_padding_mode": "zeros"},
              "files": {"chosen_weights": "stitching_layer.safetensors", "all_weights": "stitching_layers.safetensors"},
              "imported_from": str(src)}
    with atomic_write(out / "layer_search.json", "w") as f:
        json.dump(result, f, indent=2)
    return result


def import_stitch(src: Path, out: Path) -> dict:
    from vist3a.weights import save_torch_atomic

    ck = read_stitch_epoch(src)
    out.mkdir(parents=True, exist_ok=True)
    save_torch_atomic(ck["model"], out / "anysplat_stitched.pth")
    steps = [int(s["step"]) for s in (ck["optimizer"] or {}).get("state", {}).values() if "step" in s]
    return {"epoch": ck["epoch"], "optimizer_steps": max(steps) if steps else None, "file": str(out / "anysplat_stitched.pth")}


def _wan_architecture(adapter: dict, config: dict) -> dict:
    blocks = {int(m.group(1)) for k in adapter if (m := re.search(r"\.blocks\.(\d+)\.", k))}
    a = next(v for k, v in adapter.items() if k.endswith("attn1.to_q.lora_A.weight"))
    inner = int(a.shape[1])
    return {"base": "Wan2.1-T2V-14B" if inner == 5120 else "Wan2.1-T2V-1.3B" if inner == 1536 else f"Wan (dim {inner})",
            "num_blocks": len(blocks), "inner_dim": inner, "lora_rank": int(config.get("r", a.shape[0])),
            "lora_alpha": float(config.get("lora_alpha", 2 * a.shape[0]))}


def import_align(src: Path, out: Path) -> dict:
    from vist3a_train.common.export import LORA_EMA_EXPORT, LORA_EXPORT, export_wan_lora

    ck = read_align_checkpoint(src)
    arch = _wan_architecture(ck["lora_ema"], ck["adapter_config"])
    # the EMA shadow (names as the FSDP-wrapped PEFT model's parameters) must agree with the saved lora_ema
    agree = 0
    for name, shadow in ck["ema"].items():
        key = next((k for k in ck["lora_ema"] if k.replace(".weight", "") in name.replace(".default", "")), None)
        if key is not None and torch.allclose(ck["lora_ema"][key].float(), shadow.float(), atol=1e-2):
            agree += 1
    extra = {"step": ck["step"], "imported_from": str(src)}
    export_wan_lora(out / LORA_EMA_EXPORT, ck["lora_ema"], ck["adapter_config"], architecture=arch, extra=extra)
    export_wan_lora(out / LORA_EXPORT, ck["lora"], ck["adapter_config"], architecture=arch, extra=extra)
    return {"step": ck["step"], "ema_tensors": len(ck["ema"]), "ema_matching_lora_ema": agree,
            "optimizer_entries": len(ck["optimizer"].get("state", {})), "architecture": arch}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="vist3a_train/import_official.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=("layer-search", "stitch", "align"))
    p.add_argument("source", help="the official output folder (see above)")
    p.add_argument("--output-dir", required=True)
    args = p.parse_args(argv)
    fn = {"layer-search": import_layer_search, "stitch": import_stitch, "align": import_align}[args.kind]
    try:
        result = fn(Path(args.source), Path(args.output_dir))
    except ConfigError as exc:
        print(f"vist3a_train/import_official.py: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
