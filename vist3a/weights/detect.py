"""Say what a weights file or folder holds (AnySplat, stitched checkpoint, our exports, Wan files, PEFT LoRA).

Why: the nodes list whatever users put in their model folders, ``python -m vist3a info`` explains a
path, and the Wan loaders pick a converter; all three ask this module, which reads headers only
(and .pth pickles memory-mapped), so the answer is cheap and always the same.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Optional

import torch

from ..errors import CheckpointError
from .common import PathLike, first_line, fmt_shape, shape_of
from .keys import DISTILL_PREFIX, STITCHED_PTH_TOP_KEYS, dino_block_count, looks_anysplat
from .manifest import MANIFEST_METADATA_KEY, MANIFEST_NAME, check_manifest, read_manifest
from .readers import SafetensorsHeader, read_safetensors_header, safe_torch_load


class _DetectedPair(NamedTuple):
    kind: str
    detail: str


class Detected(_DetectedPair):
    """What a path holds: ``(kind, detail)``, so ``kind, detail = sniff(p)`` works.

    ``kind`` is one of :data:`KINDS`; ``detail`` is a human sentence for the UI. The extra attribute
    ``subkind`` refines it (Wan single file: the :class:`WanFile` kind, e.g. "transformer" / "vae" /
    "text_encoder"; our export: the manifest format) without changing the pair.
    """

    subkind: str

    def __new__(cls, kind: str, detail: str, subkind: str = "") -> "Detected":
        self = super().__new__(cls, kind, detail)
        self.subkind = subkind
        return self

    def __repr__(self) -> str:
        return f"Detected(kind={self.kind!r}, detail={self.detail!r}, subkind={self.subkind!r})"


KINDS = (
    "anysplat",
    "stitched_pth",
    "stitched_export",
    "wan_lora_peft",
    "wan_diffusers",
    "wan_single_file",
    "unknown",
)


# ---------------------------------------------------------------------------------------------
# Wan 2.1 single files: the one classifier used by sniff() (nodes, `info`) and by vist3a.wan's loaders

_WAN_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "first_stage_model.", "vae.")
_T5_Q_RE = re.compile(r"(?:^|\.)encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.q\.weight$")
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


class WanFile(NamedTuple):
    """What one Wan single file holds, as far as the loaders care.

    ``kind``: transformer | transformer_i2v | transformer_vace | vae | vae_wan22 | text_encoder |
    text_encoder_wan (UMT5 with the original Wan key names, which the loaders do not convert).
    ``key_format``: "original" (Wan/ComfyUI/transformers names, converted by the loader) or "diffusers".
    """

    kind: str
    key_format: str
    detail: str


def _strip_prefix(keys: Iterable[str]) -> dict[str, str]:
    """Map stripped key -> original key, removing the wrapper prefixes ComfyUI files may carry."""
    out = {}
    for k in keys:
        s = k
        for pre in _WAN_PREFIXES:
            if s.startswith(pre):
                s = s[len(pre):]
                break
        out[s] = k
    return out


def _dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


def classify_wan(tensors: Mapping[str, Any]) -> Optional[WanFile]:
    """Recognise the Wan transformer, Wan VAE and (U)MT5 text encoder from names and shapes.

    ``tensors`` maps key -> anything with ``.shape`` and ``.dtype`` (a safetensors
    :class:`TensorInfo` or a tensor), so headers alone are enough. ``None``: not a Wan component.
    """
    stripped = _strip_prefix(tensors)
    dt = "/".join(sorted({_dtype_name(t.dtype) for t in tensors.values()}))

    def shape(k: str) -> tuple[int, ...]:
        return tuple(tensors[stripped[k]].shape)

    if "patch_embedding.weight" in stripped and any(_BLOCK_RE.match(k) for k in stripped):
        dim, in_ch = shape("patch_embedding.weight")[:2]
        n = max(int(m.group(1)) for k in stripped if (m := _BLOCK_RE.match(k))) + 1
        diffusers = "scale_shift_table" in stripped or any(".attn1." in k for k in stripped)
        layout = "diffusers" if diffusers else "original/ComfyUI"
        size = {(1536, 30): "Wan2.1 1.3B", (5120, 40): "Wan2.1 14B"}.get((dim, n), "unrecognised size")
        if "img_emb.proj.0.weight" in stripped or "condition_embedder.image_embedder.ff.net.0.proj.weight" in stripped:
            kind, what = "transformer_i2v", "image-to-video (not T2V)"
        elif "vace_patch_embedding.weight" in stripped:
            kind, what = "transformer_vace", "VACE (not plain T2V)"
        else:
            kind, what = "transformer", "T2V" if in_ch == 16 else f"{in_ch}-channel input (not T2V)"
        return WanFile(
            kind,
            "diffusers" if diffusers else "original",
            f"Wan transformer ({layout} keys, {size}, {what}): {n} blocks, dim {dim}, {dt}",
        )

    if "decoder.upsamples.0.upsamples.0.residual.2.weight" in stripped:
        return WanFile("vae_wan22", "original", f"Wan 2.2 VAE (Wan 2.1 needs z_dim 16), {dt}")
    vae_layouts = (  # (first encoder conv, conv whose out-channels are z_dim, marker): original, diffusers
        ("encoder.conv1.weight", "conv2.weight", "decoder.middle.0.residual.0.gamma", "original"),
        ("encoder.conv_in.weight", "post_quant_conv.weight", "decoder.mid_block.resnets.0.norm1.gamma", "diffusers"),
    )
    for enc, z_key, marker, fmt in vae_layouts:
        has_encoder = enc in stripped and len(shape(enc)) == 5 and any(k.startswith("decoder.") for k in stripped)
        if has_encoder or (marker in stripped and (fmt == "original" or z_key in stripped)):
            z = shape(z_key)[0] if z_key in stripped else "?"
            note = "" if z == 16 else " (Wan 2.1 needs z_dim 16)"
            return WanFile("vae", fmt, f"Wan VAE (3-D causal convs, {fmt} keys), z_dim {z}{note}, {dt}")

    t5_blocks = [int(m.group(1)) for k in tensors if (m := _T5_Q_RE.search(k))]
    if t5_blocks:
        n = max(t5_blocks) + 1
        q = next(k for k in tensors if _T5_Q_RE.search(k))
        rel_in_block1 = any("block.1.layer.0.SelfAttention.relative_attention_bias" in k for k in tensors)
        family = "UMT5" if rel_in_block1 else "T5 (not UMT5; Wan needs umt5-xxl)"
        fp8 = ", fp8 scaled" if any(k.endswith("scaled_fp8") for k in tensors) else ""
        return WanFile(
            "text_encoder",
            "original",
            f"{family} text encoder: {n} blocks, d_model {tuple(tensors[q].shape)[1]}, {dt}{fp8}",
        )
    if "token_embedding.weight" in stripped and "blocks.0.attn.q.weight" in stripped:
        n = max(int(m.group(1)) for k in stripped if (m := _BLOCK_RE.match(k))) + 1
        d = shape("token_embedding.weight")[1]
        return WanFile(
            "text_encoder_wan",
            "original",
            f"UMT5 text encoder (original Wan keys): {n} blocks, d_model {d}, {dt}",
        )
    return None


_PEFT_RE = re.compile(
    r"^base_model\.model\.blocks\.(\d+)\.(attn[12])\.(to_[a-z]+(?:\.0)?)\.lora_([AB])\.weight$"
)


def _describe_peft(header: SafetensorsHeader, config: Optional[dict]) -> str:
    blocks = set()
    dim = rank = None
    for k, t in header.tensors.items():
        m = _PEFT_RE.match(k)
        if m:
            blocks.add(int(m.group(1)))
            if m.group(4) == "A":
                rank, dim = t.shape[0], t.shape[1]
    size = {(1536, 30): " (Wan2.1-T2V-1.3B)", (5120, 40): " (Wan2.1-T2V-14B)"}.get((dim, len(blocks)), "")
    if config is not None:
        r, a = config.get("r"), config.get("lora_alpha")
        scale = f" (scale {a / r:g})" if isinstance(r, int) and r and isinstance(a, (int, float)) else ""
        cfg = f", r={r} alpha={a}{scale}"
    else:
        cfg = ", adapter_config.json not found (alpha unknown)"
    return (
        f"Wan PEFT LoRA: {len(header.tensors)} tensors on {len(blocks)} blocks, inner dim {dim}, "
        f"rank {rank}{size}{cfg}"
    )


def _manifest_lists(folder: Path, name: str) -> Optional[dict]:
    mpath = folder / MANIFEST_NAME
    if not mpath.is_file():
        return None
    manifest = read_manifest(mpath)
    return manifest if name in manifest["files"].values() else None


def _export_detected(manifest: dict, where: str) -> Detected:
    files = ", ".join(f"{r}={n}" for r, n in manifest["files"].items()) or "embedded"
    return Detected(
        "stitched_export",
        f"VIST3A export {manifest['format']} v{manifest['version']} in {where} ({files})",
        manifest["format"],
    )


def _sniff_safetensors(p: Path) -> Detected:
    header = read_safetensors_header(p)
    embedded = header.metadata.get(MANIFEST_METADATA_KEY)
    if embedded is not None:
        try:
            manifest = check_manifest(json.loads(embedded), source=f"{p} (__metadata__)", folder=None)
        except json.JSONDecodeError:
            return Detected("unknown", f"'{p}' has an unreadable embedded VIST3A manifest")
        return _export_detected(manifest, str(p))
    listed = _manifest_lists(p.parent, p.name)
    if listed is not None:
        return _export_detected(listed, str(p.parent))
    keys = list(header.tensors)
    if "stitching_layer.weight" in header.tensors and looks_anysplat(keys):
        return Detected(
            "stitched_export",
            f"merged stitched-decoder weights ({len(keys)} tensors, {dino_block_count(keys)} DINO "
            f"blocks after the cut) without a {MANIFEST_NAME}",
            "vist3a.stitched",
        )
    if looks_anysplat(keys):
        cfg = "" if (p.parent / "config.json").is_file() else ", no config.json next to it"
        dim = header.tensors.get("encoder.aggregator.patch_embed.cls_token")
        d = f", embed dim {dim.shape[-1]}" if dim is not None else ""
        return Detected(
            "anysplat",
            f"AnySplat weights: {len(keys)} tensors, {dino_block_count(keys)} DINO blocks{d}{cfg}",
        )
    if any(_PEFT_RE.match(k) for k in keys):
        cfg_path = p.parent / "adapter_config.json"
        config = _read_json(cfg_path) if cfg_path.is_file() else None
        return Detected("wan_lora_peft", _describe_peft(header, config))
    wan = classify_wan(header.tensors)
    if wan is not None:
        return Detected("wan_single_file", wan.detail, wan.kind)
    first = keys[0] if keys else "none"
    return Detected(
        "unknown",
        f"safetensors file with {len(keys)} tensors (first key '{first}') in no known "
        "VIST3A/Wan/AnySplat layout",
    )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"JSON file '{path}' could not be read ({first_line(exc, 80)}); re-download it.", path=path
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"JSON file '{path}' is not an object; re-download it.", path=path)
    return data


def _describe_stitched_pth(obj: Mapping) -> str:
    lora = obj["lora"]
    keys = [k for k in lora if isinstance(k, str)]
    distill = sum(k.startswith(DISTILL_PREFIX) for k in keys)
    main = [k for k in keys if not k.startswith(DISTILL_PREFIX)]
    modules = {k.rsplit(".", 1)[0] for k in main if k.endswith((".lora_A", ".lora_B"))}
    qkv = next((k for k in main if k.endswith("attn.qkv.lora_A")), None)
    rank = shape_of(lora[qkv])[0] if qkv else "?"
    sl = obj["stitching_layer"]
    sl_shape = fmt_shape(shape_of(sl["weight"])) if isinstance(sl, Mapping) and "weight" in sl else "?"
    extra = f", {distill} distill keys (ignored)" if distill else ""
    return (
        f"official stitched AnySplat checkpoint: {len(modules)} LoRA modules, rank {rank}, "
        f"{dino_block_count(main)} DINO blocks after the cut, stitching conv {sl_shape}{extra}"
    )


def _sniff_pth(p: Path) -> Detected:
    listed = _manifest_lists(p.parent, p.name)
    if listed is not None:
        return _export_detected(listed, str(p.parent))
    obj = safe_torch_load(p, mmap=True)
    is_dict = isinstance(obj, Mapping)
    if is_dict and all(k in obj for k in STITCHED_PTH_TOP_KEYS) and isinstance(obj["lora"], Mapping):
        return Detected("stitched_pth", _describe_stitched_pth(obj))
    if is_dict:
        tensor_keys = [k for k, v in obj.items() if isinstance(v, torch.Tensor)]
        if tensor_keys and looks_anysplat(tensor_keys):
            return Detected("anysplat", f"AnySplat weights in a .pth file: {len(tensor_keys)} tensors")
        top = ", ".join(map(str, list(obj)[:6]))
        return Detected(
            "unknown",
            f"PyTorch file with top-level keys [{top}{', ...' if len(obj) > 6 else ''}], expected "
            f"{', '.join(STITCHED_PTH_TOP_KEYS)} for a stitched checkpoint",
        )
    return Detected("unknown", f"PyTorch file holding a {type(obj).__name__}, not a dict")


def _sniff_dir(d: Path) -> Detected:
    if (d / MANIFEST_NAME).is_file():
        return _export_detected(read_manifest(d), str(d))
    if (d / "adapter_config.json").is_file() and (d / "adapter_model.safetensors").is_file():
        header = read_safetensors_header(d / "adapter_model.safetensors")
        return Detected("wan_lora_peft", _describe_peft(header, _read_json(d / "adapter_config.json")))
    if (d / "model_index.json").is_file():
        index = _read_json(d / "model_index.json")
        parts = [name for name in ("transformer", "vae", "text_encoder", "tokenizer") if (d / name).is_dir()]
        return Detected(
            "wan_diffusers",
            f"diffusers pipeline {index.get('_class_name', '?')} with "
            f"{', '.join(parts) or 'no component folders'}",
        )
    if (d / "model.safetensors").is_file() and (d / "config.json").is_file():
        header = read_safetensors_header(d / "model.safetensors")
        keys = list(header.tensors)
        if looks_anysplat(keys):
            return Detected(
                "anysplat",
                f"AnySplat folder: {len(keys)} tensors, {dino_block_count(keys)} DINO blocks, "
                "config.json present",
            )
        return Detected(
            "unknown",
            f"'{d}/model.safetensors' has no encoder.aggregator/encoder.camera_head keys, so it is "
            "not AnySplat",
        )
    return Detected(
        "unknown",
        f"folder '{d}' has none of {MANIFEST_NAME}, adapter_config.json+adapter_model.safetensors, "
        "model_index.json, model.safetensors+config.json",
    )


def sniff(path: PathLike) -> Detected:
    """Say what a file or folder holds, reading only headers (and .pth pickles memory-mapped).

    Why: the nodes list whatever users put in their model folders; each entry needs a kind and a
    readable description without loading gigabytes. Unreadable or unsafe content is reported as
    kind "unknown" with the reason as detail; only a path that does not exist raises.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"Path '{p}' does not exist; check the model folder and file name.", path=p)
    try:
        if p.is_dir():
            return _sniff_dir(p)
        if p.name == MANIFEST_NAME:
            return _export_detected(read_manifest(p), str(p.parent))
        suffix = p.suffix.lower()
        if suffix == ".safetensors":
            return _sniff_safetensors(p)
        if suffix in (".pth", ".pt", ".ckpt", ".bin") or zipfile.is_zipfile(p):
            return _sniff_pth(p)
        try:
            return _sniff_safetensors(p)
        except CheckpointError:
            return Detected("unknown", f"'{p.name}' is neither a safetensors file nor a PyTorch checkpoint")
    except CheckpointError as exc:
        return Detected("unknown", str(exc))
