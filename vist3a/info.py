"""`python -m vist3a info PATH`: what a file or folder is, whether it fits our architectures, a summary.

Weights are validated from safetensors headers (shapes only), so `info` on a 14 GB file is instant.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import weights as wt
from .decoders import anysplat_config
from .errors import CheckpointError
from .formats import read_ply, read_splats
from .models import AnySplat, AnySplatConfig, StitchConfig, StitchedDecoder
from .wan import load_vist3a_lora


def _meta_shapes(factory) -> dict:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in factory().state_dict().items()}


def _header_shapes(path: Path) -> dict:
    return {k: tuple(v.shape) for k, v in wt.read_safetensors_header(path).tensors.items()}


def _params(shapes: dict) -> str:
    n = sum(int(torch.Size(s).numel()) for s in shapes.values())
    return f"{n / 1e6:,.1f}M parameters in {len(shapes)} tensors"


def describe(path: str | Path) -> list[str]:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"'{p}' does not exist.", path=str(p))
    if p.suffix.lower() == ".ply":
        return _describe_ply(p)
    if p.suffix.lower() in (".spz", ".splat", ".glb"):
        return _describe_compact(p)
    detected = wt.sniff(p)
    kind = detected.kind
    lines = [f"{p}: {kind} ({detected.detail})"]
    if kind == "anysplat":
        weights = p / "model.safetensors" if p.is_dir() else p
        config = weights.with_name("config.json")
        cfg = anysplat_config(config)
        shapes = wt.validate_state_dict(_header_shapes(weights), _meta_shapes(lambda: AnySplat(cfg)), source=str(weights),
                                        what="the AnySplat architecture", ignore_prefixes=("encoder.distill_",))
        lines += [f"valid AnySplat weights: {_params(shapes)}", f"config: sh_degree {cfg.sh_degree}, voxel_size {cfg.voxel_size}, "
                  f"voxelize {cfg.voxelize}{'' if config.is_file() else ' (no config.json beside it: release defaults)'}"]
    elif kind == "stitched_pth":
        ckpt = wt.safe_torch_load(p)
        full = _meta_shapes(lambda: StitchedDecoder(StitchConfig()))
        expected = wt.expected_lora_keys({k: v for k, v in full.items() if not k.startswith("stitching_layer.")})
        lora = {k: tuple(v.shape) for k, v in ckpt["lora"].items() if not k.startswith("encoder.distill_")}
        wt.validate_state_dict(lora, expected, source=str(p), what="the official stitched decoder (cut enc_blocks_2, LoRA r64)",
                               allow_missing=[k for k in expected if k.endswith(".bias")])
        lines += [f"valid official stitched decoder: {len(lora)} LoRA tensors (r64, merged at scale 0.5), "
                  f"stitching conv {list(ckpt['stitching_layer']['weight'].shape)}",
                  "needs the AnySplat base weights (lhjiang/anysplat) to load"]
    elif kind == "stitched_export":
        manifest = wt.read_manifest(p if p.is_dir() else p.parent)
        lines.append(f"export: {manifest['format']} v{manifest['version']}, files {manifest['files']}")
        folder = p if p.is_dir() else p.parent
        if manifest["format"] == "vist3a.stitched":
            cfg = StitchConfig.from_dict(manifest["architecture"])
            shapes = wt.validate_state_dict(_header_shapes(folder / manifest["files"]["weights"]),
                                            _meta_shapes(lambda: StitchedDecoder(cfg)), source=str(folder), what="its manifest's architecture")
            lines.append(f"valid stitched decoder (cut {cfg.location}, embed {cfg.anysplat.embed_dim}): {_params(shapes)}")
        elif manifest["format"] == "vist3a.anysplat":
            cfg = AnySplatConfig.from_dict(manifest["architecture"])
            shapes = wt.validate_state_dict(_header_shapes(folder / manifest["files"]["weights"]),
                                            _meta_shapes(lambda: AnySplat(cfg)), source=str(folder), what="its manifest's architecture")
            lines.append(f"valid AnySplat (embed {cfg.embed_dim}): {_params(shapes)}")
        elif manifest["format"] == "vist3a.wan_lora":
            lines += _describe_wan_lora(folder)
    elif kind == "wan_lora_peft":
        lines += _describe_wan_lora(p)
    elif kind == "wan_single_file":
        usable = detected.subkind in ("transformer", "vae", "text_encoder")
        lines.append(f"Wan 2.1 {detected.subkind}: {'loadable' if usable else 'not loadable'} by the VIST3A Wan loaders")
    elif kind == "wan_diffusers":
        lines.append("Wan 2.1 diffusers pipeline folder: load it with the Wan loader (diffusers layout)")
    else:
        raise CheckpointError(
            f"'{p}' is not a file this project reads ({detected.detail}); expected AnySplat weights, anysplat_stitched.pth, "
            "a VIST3A LoRA folder, a Wan 2.1 model or a 3DGS .ply.",
            path=str(p),
        )
    return lines


def _describe_wan_lora(p: Path) -> list[str]:
    lora = load_vist3a_lora(p)
    return [f"valid VIST3A Wan LoRA for Wan 2.1 {lora.size_name}: {len(lora.modules)} modules, r{lora.rank} alpha {lora.alpha:g}"]


def _describe_ply(p: Path) -> list[str]:
    scene = read_ply(p)
    g = scene.gaussians
    lo, hi = g.means.min(0).values.tolist(), g.means.max(0).values.tolist()
    convention = ("opacity stored linear in [0, 1]: the official VIST3A/AnySplat exporter's layout (DC colour only)"
                  if scene.opacity == "linear" else "opacity stored as a logit: the standard 3DGS layout")
    return [
        f"{p}: 3DGS PLY, {g.num} Gaussians, SH degree {g.sh_degree}",
        convention,
        "bounds: " + ", ".join(f"{a:.3g}..{b:.3g}" for a, b in zip(lo, hi)),
        f"opacity {float(g.opacities.min()):.3g}..{float(g.opacities.max()):.3g}, "
        f"scale {float(g.scales.min()):.3g}..{float(g.scales.max()):.3g}",
    ]


def _describe_compact(p: Path) -> list[str]:
    g = read_splats(p)
    return [f"{p}: {p.suffix.lower()[1:]} splats, {g.num} Gaussians, SH degree {g.sh_degree}",
            f"opacity {float(g.opacities.min()):.3g}..{float(g.opacities.max()):.3g}, "
            f"scale {float(g.scales.min()):.3g}..{float(g.scales.max()):.3g}"]
