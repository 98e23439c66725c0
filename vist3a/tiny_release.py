"""Write tiny random-weight models under the RELEASED file names, in a ComfyUI ``models/`` layout.

The ComfyUI tests and ``make serve`` (when no real weights are present) need every weight file a
shipped workflow names, in exactly the released formats, without the multi-GB downloads. This writes:

    diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors        tiny Wan transformer, original key names
    diffusion_models/wan2.1_t2v_14B_fp8_e4m3fn.safetensors   the same architecture stored as plain fp8
    text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors     tiny UMT5, fp8 "scaled", spiece_model inside
    vae/wan_2.1_vae.safetensors                              tiny Wan 2.1 VAE (ComfyUI's VAELoader reads it)
    diffusers/Wan2.1-T2V-1.3B-Diffusers/                     tiny diffusers pipeline folder
    loras/vist3a_1.3b_lora_ema/, loras/vist3a_14b_lora_ema/  PEFT LoRA folders (r8, alpha 16)
    vist3a/anysplat/{model.safetensors,config.json}          tiny AnySplat (lhjiang/anysplat layout)
    vist3a/anysplat_stitched.pth                             official stitched checkpoint layout
    vist3a/vist3a_stitched_export/                           our own export (manifest + merged weights)

The weights are random: outputs are noise-like splats, but every loader, shape and file format is
the real one. ``python -m vist3a.tiny_release MODELS_DIR`` writes them (skipping files that exist).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Union

import torch
from safetensors.torch import load_file, save_file

from . import weights as wt
from .decoders import save_stitched_export
from .tiny import build_tiny_anysplat, build_tiny_decoder, write_tiny_stitched_pth
from .wan.tiny import build_tiny_wan, save_tiny_vist3a_lora, save_tiny_wan_comfy_single_files, save_tiny_wan_diffusers

__all__ = ["TINY_RELEASE_FILES", "write_tiny_release"]

TINY_RELEASE_FILES = {
    "wan_1_3b": "diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors",
    "wan_14b_fp8": "diffusion_models/wan2.1_t2v_14B_fp8_e4m3fn.safetensors",
    "text_encoder": "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    "vae": "vae/wan_2.1_vae.safetensors",
    "wan_diffusers": "diffusers/Wan2.1-T2V-1.3B-Diffusers",
    "lora_1_3b": "loras/vist3a_1.3b_lora_ema",
    "lora_14b": "loras/vist3a_14b_lora_ema",
    "anysplat": "vist3a/anysplat",
    "stitched_pth": "vist3a/anysplat_stitched.pth",
    "stitched_export": "vist3a/vist3a_stitched_export",
}
_STAMP = ".vist3a_tiny_release"


def _anysplat_config_json(cfg) -> dict:
    """A config.json shaped like the released one (encoder_cfg with the fields AnySplatConfig reads),
    plus the ``architecture`` block our loader accepts for non-release sizes."""
    return {
        "encoder_cfg": {
            "name": "anysplat",
            "pred_head_type": "depth",
            "voxel_size": cfg.voxel_size,
            "voxelize": cfg.voxelize,
            "intermediate_layer_idx": list(cfg.intermediate_layer_idx),
            "gaussian_adapter": {"sh_degree": cfg.sh_degree},
            "opacity_mapping": {"initial": cfg.opacity_mapping[0], "final": cfg.opacity_mapping[1],
                                "warm_up": cfg.opacity_mapping[2]},
        },
        "architecture": cfg.to_dict(),
    }


def write_tiny_release(models_dir: Union[str, Path], seed: int = 0, overwrite: bool = False) -> dict[str, Path]:
    """Write every file of :data:`TINY_RELEASE_FILES` under ``models_dir``; returns name -> path.

    Existing files are kept unless ``overwrite``; the global RNG is left untouched.
    """
    root = Path(models_dir)
    paths = {k: root / v for k, v in TINY_RELEASE_FILES.items()}
    if not overwrite and (root / _STAMP).is_file() and all(p.exists() for p in paths.values()):
        return paths
    root.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        wan = build_tiny_wan(seed=seed)
        tmp = root / ".tiny_wan_tmp"
        files = save_tiny_wan_comfy_single_files(tmp, wan)
        for key, src in (("wan_1_3b", "transformer"), ("text_encoder", "text_encoder"), ("vae", "vae")):
            paths[key].parent.mkdir(parents=True, exist_ok=True)
            files[src].replace(paths[key])
        sd = load_file(str(paths["wan_1_3b"]))
        fp8 = {k: (v.to(torch.float8_e4m3fn) if v.ndim >= 2 and hasattr(torch, "float8_e4m3fn") else v)
               for k, v in sd.items()}
        save_file(fp8, str(paths["wan_14b_fp8"]), metadata={"format": "pt"})
        for leftover in tmp.glob("*"):
            leftover.unlink()
        tmp.rmdir()
        if overwrite or not paths["wan_diffusers"].exists():
            save_tiny_wan_diffusers(paths["wan_diffusers"], wan)
        save_tiny_vist3a_lora(paths["lora_1_3b"], wan.transformer, seed=seed + 11)
        save_tiny_vist3a_lora(paths["lora_14b"], wan.transformer, seed=seed + 12)

        anysplat = build_tiny_anysplat(seed=seed)
        paths["anysplat"].mkdir(parents=True, exist_ok=True)
        anysplat_sd = {k: v.detach().contiguous() for k, v in anysplat.state_dict().items()}
        wt.save_safetensors_atomic(anysplat_sd, paths["anysplat"] / "model.safetensors")
        (paths["anysplat"] / "config.json").write_text(json.dumps(_anysplat_config_json(anysplat.cfg), indent=2))
        decoder = build_tiny_decoder(seed=seed)
        stitched = wt.stitched_from_anysplat(anysplat_sd, decoder.cfg.cut_block)
        write_tiny_stitched_pth(paths["stitched_pth"], stitched, rank=4, seed=seed + 21)
        save_stitched_export(decoder, paths["stitched_export"], created_by="vist3a.tiny_release")
    (root / _STAMP).write_text("tiny random weights written by vist3a.tiny_release; not real models\n")
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models_dir", help="a ComfyUI-style models folder to write into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    for name, path in write_tiny_release(args.models_dir, seed=args.seed, overwrite=args.overwrite).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
