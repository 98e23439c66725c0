"""Reading, checking and converting the weight files VIST3A consumes and produces.

Why this module exists: the released files come in several formats (AnySplat safetensors, the
official ``anysplat_stitched.pth`` LoRA checkpoint, Wan diffusers folders / ComfyUI single files,
PEFT LoRA folders, our own exports), users drop them into ComfyUI folders with arbitrary names, and
a wrong or unsafe file must fail with one clear sentence instead of a shape error deep in
``load_state_dict`` or, worse, code execution from a pickle. Everything here works on plain dicts
``name -> tensor`` (or ``name -> shape`` for metadata-only checks); no model code is imported.

Key facts (see ``reference/stitched_checkpoint_format.md``):

* The stitched decoder is AnySplat with the 14x14 patch conv removed and the first ``cut`` DINO
  blocks deleted; ``nn.ModuleList`` deletion renumbers the remaining blocks from 0.
* The official checkpoint stores LoRA factors for every ``nn.Linear``/``nn.Conv2d`` (the DPT heads'
  ``resize_layers.0/1`` are ConvTranspose2d and are not wrapped), the trained biases of those
  layers, the Conv3d stitching layer and three trained tokens. It is merged as
  ``W + (B @ A).view(W.shape) * alpha / r`` with ``alpha / r = 32 / 64 = 0.5``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Sequence, Union

import torch

from .atomic import atomic_path, atomic_write
from .errors import CheckpointError

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_FORMATS",
    "MANIFEST_VERSION",
    "OFFICIAL_LORA_RANK",
    "OFFICIAL_LORA_ALPHA",
    "OFFICIAL_LORA_SCALE",
    "TOKEN_KEYS",
    "STITCHED_PTH_TOP_KEYS",
    "Detected",
    "TensorInfo",
    "SafetensorsHeader",
    "WrappedModule",
    "safe_torch_load",
    "read_safetensors_header",
    "read_safetensors",
    "load_state_dict_file",
    "save_safetensors_atomic",
    "save_torch_atomic",
    "make_manifest",
    "write_manifest",
    "read_manifest",
    "sniff",
    "validate_state_dict",
    "stitched_from_anysplat",
    "wrapped_modules",
    "expected_lora_keys",
    "merge_stitched_checkpoint",
    "make_stitched_checkpoint",
    "write_tiny_stitched_pth",
]

PathLike = Union[str, "os.PathLike[str]"]

MB = 1 << 20

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

_DINO_RE = re.compile(r"^encoder\.aggregator\.patch_embed\.blocks\.(\d+)\.(.+)$")
# ConvTranspose2d layers of the DPT heads: 4-D weights that the official add_lora does NOT wrap.
_CONV_TRANSPOSE_RE = re.compile(r"(^|\.)resize_layers\.[01]\.weight$")

# ---------------------------------------------------------------------------------------------
# small helpers


def _shape(value: Any) -> tuple[int, ...]:
    """Shape of a tensor, array, torch.Size or plain list; lets checks run on metadata only."""
    shape = getattr(value, "shape", value)
    return tuple(int(x) for x in shape)


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(x)) for x in shape) + "]"


def _require_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(
            f"Weights file '{path}' does not exist; check the path or put the file in the model folder.",
            path=path,
        )
    if not path.is_file():
        raise CheckpointError(
            f"'{path}' is a folder, not a weights file; point to the file inside it.", path=path
        )


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return (text[: limit - 3] + "...") if len(text) > limit else (text or type(exc).__name__)


def _rest_count(n_missing: int, n_unexpected: int, n_wrong: int) -> str:
    parts = []
    if n_missing:
        parts.append(f"{n_missing} missing")
    if n_unexpected:
        parts.append(f"{n_unexpected} unexpected")
    if n_wrong:
        parts.append(f"{n_wrong} wrong-shaped")
    return f" (plus {', '.join(parts)} other keys)" if parts else ""


# ---------------------------------------------------------------------------------------------
# torch .pth


_GLOBAL_RE = re.compile(r"GLOBAL\s+([\w.]+)")


def safe_torch_load(path: PathLike, *, mmap: bool = False) -> Any:
    """``torch.load`` restricted to plain tensors/containers; pickled code is refused, never run.

    Why: ``.pth`` files are pickles and ``weights_only=False`` would execute whatever they contain.
    We never fall back to it; a file that needs Python globals gets an explanation of how to
    convert it in a trusted session instead. ``mmap`` avoids reading tensor data (used by sniff).
    """
    p = Path(path)
    _require_file(p)
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"Checkpoint file '{p}' is empty (0 bytes); re-download or re-export it.", path=p
        )
    if mmap:
        try:  # the legacy (non-zip) torch format cannot be memory-mapped
            mmap = zipfile.is_zipfile(p)
        except (zipfile.BadZipFile, OSError):  # a damaged archive can make the probe itself fail
            mmap = False
    try:
        return torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL_RE.search(str(exc))
        if found:
            raise CheckpointError(
                f"Checkpoint file '{p}' contains pickled Python objects (it needs the global "
                f"'{found.group(1)}'), which are refused for safety because loading them can run "
                "arbitrary code; if you trust its source, convert it once in a separate Python "
                "session to plain tensors (e.g. load it with weights_only=False there and re-save "
                "its tensors with torch.save or safetensors.torch.save_file) and use that file.",
                path=p,
            ) from None
        raise CheckpointError(
            f"Checkpoint file '{p}' ({size} bytes) is not a valid PyTorch checkpoint "
            f"({_first_line(exc)}); it is probably corrupted or not a .pth file, so re-download "
            "or re-export it.",
            path=p,
        ) from None
    except Exception as exc:  # EOFError, RuntimeError (zip), struct.error, ... all mean unreadable
        raise CheckpointError(
            f"Checkpoint file '{p}' ({size} bytes) could not be read as a PyTorch checkpoint "
            f"({_first_line(exc)}); it is probably truncated or corrupted, so re-download or "
            "re-export it.",
            path=p,
        ) from None


# ---------------------------------------------------------------------------------------------
# safetensors

# dtype name -> bytes per element; only the dtypes safetensors.torch can turn into tensors.
_ST_ITEMSIZE = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E4M3FNUZ": 1,
    "F8_E5M2": 1,
    "F8_E5M2FNUZ": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "C64": 8,
}


class TensorInfo(NamedTuple):
    """One safetensors header entry; offsets are relative to the start of the data section."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


class SafetensorsHeader(NamedTuple):
    """The validated header: tensors in header order, the ``__metadata__`` strings, data offset."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int


def read_safetensors_header(
    path: PathLike, *, max_header_bytes: int = 100 * MB
) -> SafetensorsHeader:
    """Read and fully validate a safetensors header without touching (or allocating) tensor data.

    Why: the header length and every offset come from the file; a corrupted or hostile file must
    not make us allocate terabytes or read past its end, and sniffing must stay cheap.
    """
    p = Path(path)
    _require_file(p)
    size = p.stat().st_size

    def bad(reason: str, key: Optional[str] = None) -> CheckpointError:
        where = f" at key '{key}'" if key is not None else ""
        return CheckpointError(
            f"Safetensors file '{p}' is invalid{where}: {reason}; it is probably truncated or "
            "corrupted, so re-download or re-export it.",
            path=p,
            key=key,
        )

    if size < 8:
        raise bad(f"it has {size} bytes, fewer than the 8-byte header length")
    with open(p, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n == 0:
            raise bad("the header length is 0")
        if n > max_header_bytes:
            raise bad(f"the header claims {n} bytes, more than the {max_header_bytes}-byte limit")
        if 8 + n > size:
            raise bad(f"the header claims {n} bytes but the file has only {size - 8} after the length")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"the header is not valid JSON ({_first_line(exc, 80)})") from None
    if not isinstance(header, dict):
        raise bad(f"the header is a JSON {type(header).__name__}, not an object")

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise bad("__metadata__ must map strings to strings")

    data_len = size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    for key, entry in header.items():
        if not isinstance(entry, dict):
            raise bad("the entry is not an object", key)
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _ST_ITEMSIZE:
            raise bad(f"unknown dtype {dtype!r} (known: {', '.join(_ST_ITEMSIZE)})", key)
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise bad(f"shape {shape!r} is not a list of non-negative integers", key)
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise bad(f"data_offsets {offsets!r} is not a pair of integers", key)
        begin, end = offsets
        if not 0 <= begin <= end <= data_len:
            raise bad(
                f"data_offsets [{begin}, {end}] lie outside the {data_len}-byte data section", key
            )
        need = math.prod(shape) * _ST_ITEMSIZE[dtype]
        if need != end - begin:
            raise bad(
                f"shape {_fmt(shape)} of {dtype} needs {need} bytes but its offsets span {end - begin}",
                key,
            )
        tensors[key] = TensorInfo(dtype, tuple(shape), begin, end)

    expected = 0
    for key, info in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if info.begin != expected:
            what = "overlaps the previous tensor" if info.begin < expected else "leaves a gap before it"
            raise bad(f"its data starts at byte {info.begin} and {what} (expected {expected})", key)
        expected = info.end
    if expected != data_len:
        raise bad(f"the tensors cover {expected} bytes but the data section has {data_len}")
    return SafetensorsHeader(tensors, metadata, 8 + n)


def read_safetensors(path: PathLike, *, max_header_bytes: int = 100 * MB) -> dict[str, torch.Tensor]:
    """Validate the header first (cheap, no allocation), then load every tensor on the CPU."""
    read_safetensors_header(path, max_header_bytes=max_header_bytes)
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(
            f"Safetensors file '{path}' passed the header check but could not be loaded "
            f"({_first_line(exc)}); re-download or re-export it.",
            path=path,
        ) from None


def load_state_dict_file(path: PathLike) -> dict[str, torch.Tensor]:
    """Load a flat ``name -> tensor`` dict from .safetensors or a (weights-only) .pth/.pt/.bin."""
    p = Path(path)
    if p.suffix.lower() == ".safetensors":
        return read_safetensors(p)
    obj = safe_torch_load(p)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"Checkpoint file '{p}' holds a {type(obj).__name__}, not a dict of tensors; "
            "save the model's state_dict() instead.",
            path=p,
        )
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"Checkpoint file '{p}' has a {type(value).__name__} under key '{key}' where a "
                "tensor was expected; it is not a flat state dict, so pick the matching loader "
                "(e.g. the stitched-decoder loader for anysplat_stitched.pth).",
                path=p,
                key=str(key),
            )
    return dict(obj)


def save_safetensors_atomic(
    tensors: Mapping[str, torch.Tensor], path: PathLike, metadata: Optional[Mapping[str, str]] = None
) -> Path:
    """Write a safetensors file so a crash never leaves a half-written model file behind."""
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    plain = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(p, suffix=".safetensors") as tmp:
        save_file(plain, str(tmp), metadata=dict(metadata) if metadata else None)
    return p


def save_torch_atomic(obj: Any, path: PathLike) -> Path:
    """``torch.save`` through a temp file + rename; ``obj`` must hold only plain tensors/containers."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(p, "wb") as f:
        torch.save(obj, f)
    return p


# ---------------------------------------------------------------------------------------------
# manifest of our own exports

MANIFEST_NAME = "vist3a_manifest.json"
MANIFEST_VERSION = 1
# format -> file roles of which at least one must be present
MANIFEST_FORMATS: dict[str, tuple[str, ...]] = {
    # "checkpoint": official-layout anysplat_stitched.pth; "weights": merged decoder safetensors
    "vist3a.stitched": ("checkpoint", "weights"),
    # "weights": model.safetensors (+ optional "config": config.json)
    "vist3a.anysplat": ("weights",),
    # "adapter": adapter_model.safetensors (+ optional "config": adapter_config.json)
    "vist3a.wan_lora": ("adapter",),
}
MANIFEST_METADATA_KEY = "vist3a_manifest"  # embedded copy in a single safetensors __metadata__


def make_manifest(
    format: str, *, architecture: Mapping[str, Any], files: Mapping[str, str], **extra: Any
) -> dict:
    """Build (and check) a manifest dict.

    Schema, version 1::

        {"format": "vist3a.stitched" | "vist3a.anysplat" | "vist3a.wan_lora",
         "version": 1,
         "architecture": {...},   # free-form, JSON only, e.g. {"cut": 2, "latent_channels": 16,
                                  #   "embed_dim": 1024, "lora_rank": 64, "lora_alpha": 32}
         "files": {role: relative file name},   # roles: see MANIFEST_FORMATS
         ...}                     # extra keys (e.g. "created_by", "step") are kept as-is

    Why: our exports reuse the official file formats, so a manifest is the only reliable way to
    tell them apart (and to record the cut, rank, ... that the files themselves do not store).
    """
    manifest = {
        "format": format,
        "version": MANIFEST_VERSION,
        "architecture": dict(architecture),
        "files": dict(files),
        **extra,
    }
    _check_manifest(manifest, source="<new manifest>", folder=None)
    return manifest


def _check_manifest(manifest: Any, *, source: str, folder: Optional[Path]) -> dict:
    def bad(reason: str, key: Optional[str] = None) -> CheckpointError:
        return CheckpointError(
            f"VIST3A manifest '{source}' is invalid: {reason}; re-export the model with vist3a_train "
            "or fix the manifest by hand.",
            path=source,
            key=key,
        )

    if not isinstance(manifest, dict):
        raise bad(f"it is a JSON {type(manifest).__name__}, expected an object")
    fmt = manifest.get("format")
    if fmt not in MANIFEST_FORMATS:
        raise bad(f"'format' is {fmt!r}, expected one of {', '.join(MANIFEST_FORMATS)}", "format")
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad(f"'version' is {version!r}, expected the integer {MANIFEST_VERSION}", "version")
    if version > MANIFEST_VERSION:
        raise CheckpointError(
            f"VIST3A manifest '{source}' has version {version} but this vist3a reads up to version "
            f"{MANIFEST_VERSION}; update the vist3a package.",
            path=source,
            key="version",
        )
    if not isinstance(manifest.get("architecture"), dict):
        raise bad("'architecture' must be an object", "architecture")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise bad("'files' must map role names to file names", "files")
    for role, name in files.items():
        rel = Path(name)
        if not name or rel.is_absolute() or ".." in rel.parts:
            raise bad(f"file '{name}' for role '{role}' must be a plain relative path", "files")
        if folder is not None and not (folder / rel).is_file():
            raise bad(f"file '{name}' for role '{role}' does not exist next to the manifest", "files")
    if folder is not None and not any(role in files for role in MANIFEST_FORMATS[fmt]):
        raise bad(
            f"'files' has none of the roles {', '.join(MANIFEST_FORMATS[fmt])} required for {fmt}",
            "files",
        )
    return manifest


def write_manifest(folder: PathLike, manifest: Mapping[str, Any]) -> Path:
    """Validate ``manifest`` against the files in ``folder`` and write it there atomically."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    _check_manifest(dict(manifest), source=str(d / MANIFEST_NAME), folder=d)
    target = d / MANIFEST_NAME
    with atomic_write(target, "w") as f:
        json.dump(dict(manifest), f, indent=2, sort_keys=False)
        f.write("\n")
    return target


def read_manifest(path: PathLike) -> dict:
    """Read and validate ``vist3a_manifest.json`` (``path`` is the file or its folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    _require_file(p)
    try:
        manifest = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"VIST3A manifest '{p}' is not valid JSON ({_first_line(exc, 80)}); re-export the model "
            "or fix the file by hand.",
            path=p,
        ) from None
    return _check_manifest(manifest, source=str(p), folder=p.parent)


# ---------------------------------------------------------------------------------------------
# sniffing


class _DetectedPair(NamedTuple):
    kind: str
    detail: str


class Detected(_DetectedPair):
    """What a path holds: ``(kind, detail)``, so ``kind, detail = sniff(p)`` works.

    ``kind`` is one of :data:`KINDS`; ``detail`` is a human sentence for the UI. The extra attribute
    ``subkind`` refines it (Wan single file: "transformer" / "vae" / "text_encoder"; our export: the
    manifest format) without changing the pair.
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

_WAN_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "first_stage_model.", "vae.")
_T5_Q_RE = re.compile(r"(?:^|\.)encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.q\.weight$")
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


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


def _looks_anysplat(keys: Iterable[str]) -> bool:
    keys = set(keys)
    return any(k.startswith("encoder.aggregator.") for k in keys) and any(
        k.startswith("encoder.camera_head.") for k in keys
    )


def _dino_block_count(keys: Iterable[str]) -> int:
    ids = [int(m.group(1)) for k in keys if (m := _DINO_RE.match(k))]
    return max(ids) + 1 if ids else 0


def _classify_wan(header: SafetensorsHeader) -> Optional[Detected]:
    """Recognise the Wan transformer, Wan VAE and UMT5 text encoder (ComfyUI or diffusers keys)."""
    info = header.tensors
    stripped = _strip_prefix(info)
    dtypes = sorted({t.dtype for t in info.values()})
    dt = "/".join(dtypes)

    def shape(k: str) -> tuple[int, ...]:
        return info[stripped[k]].shape

    if "patch_embedding.weight" in stripped and any(_BLOCK_RE.match(k) for k in stripped):
        dim, in_ch = shape("patch_embedding.weight")[:2]
        n = max(int(m.group(1)) for k in stripped if (m := _BLOCK_RE.match(k))) + 1
        layout = "diffusers" if any(".attn1." in k for k in stripped) else "original/ComfyUI"
        size = {(1536, 30): "Wan2.1 1.3B", (5120, 40): "Wan2.1 14B"}.get((dim, n), "unrecognised size")
        kind = "T2V" if in_ch == 16 else f"{in_ch}-channel input (not T2V)"
        return Detected(
            "wan_single_file",
            f"Wan transformer ({layout} keys, {size}, {kind}): {n} blocks, dim {dim}, {dt}",
            "transformer",
        )

    vae_layouts = (  # (first encoder conv, conv whose out-channels are z_dim): original, diffusers
        ("encoder.conv1.weight", "conv2.weight"),
        ("encoder.conv_in.weight", "post_quant_conv.weight"),
    )
    for enc, z_key in vae_layouts:
        if enc in stripped and len(shape(enc)) == 5 and any(k.startswith("decoder.") for k in stripped):
            z = shape(z_key)[0] if z_key in stripped else "?"
            note = "" if z == 16 else " (Wan 2.1 needs z_dim 16)"
            return Detected("wan_single_file", f"Wan VAE (3-D causal convs), z_dim {z}{note}, {dt}", "vae")

    t5_blocks = [int(m.group(1)) for k in info if (m := _T5_Q_RE.search(k))]
    if t5_blocks:
        n = max(t5_blocks) + 1
        q = next(k for k in info if _T5_Q_RE.search(k))
        rel_in_block1 = any(
            "block.1.layer.0.SelfAttention.relative_attention_bias" in k for k in info
        )
        family = "UMT5" if rel_in_block1 else "T5 (not UMT5; Wan needs umt5-xxl)"
        fp8 = ", fp8 scaled" if any(k.endswith("scaled_fp8") for k in info) else ""
        return Detected(
            "wan_single_file",
            f"{family} text encoder: {n} blocks, d_model {info[q].shape[1]}, {dt}{fp8}",
            "text_encoder",
        )
    if "token_embedding.weight" in stripped and "blocks.0.attn.q.weight" in stripped:
        n = max(int(m.group(1)) for k in stripped if (m := _BLOCK_RE.match(k))) + 1
        d = shape("token_embedding.weight")[1]
        return Detected(
            "wan_single_file",
            f"UMT5 text encoder (original Wan keys): {n} blocks, d_model {d}, {dt}",
            "text_encoder",
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
            manifest = _check_manifest(json.loads(embedded), source=f"{p} (__metadata__)", folder=None)
        except json.JSONDecodeError:
            return Detected("unknown", f"'{p}' has an unreadable embedded VIST3A manifest")
        return _export_detected(manifest, str(p))
    listed = _manifest_lists(p.parent, p.name)
    if listed is not None:
        return _export_detected(listed, str(p.parent))
    keys = list(header.tensors)
    if "stitching_layer.weight" in header.tensors and _looks_anysplat(keys):
        return Detected(
            "stitched_export",
            f"merged stitched-decoder weights ({len(keys)} tensors, {_dino_block_count(keys)} DINO "
            f"blocks after the cut) without a {MANIFEST_NAME}",
            "vist3a.stitched",
        )
    if _looks_anysplat(keys):
        cfg = "" if (p.parent / "config.json").is_file() else ", no config.json next to it"
        dim = header.tensors.get("encoder.aggregator.patch_embed.cls_token")
        d = f", embed dim {dim.shape[-1]}" if dim is not None else ""
        return Detected(
            "anysplat",
            f"AnySplat weights: {len(keys)} tensors, {_dino_block_count(keys)} DINO blocks{d}{cfg}",
        )
    if any(_PEFT_RE.match(k) for k in keys):
        cfg_path = p.parent / "adapter_config.json"
        config = _read_json(cfg_path) if cfg_path.is_file() else None
        return Detected("wan_lora_peft", _describe_peft(header, config))
    wan = _classify_wan(header)
    if wan is not None:
        return wan
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
            f"JSON file '{path}' could not be read ({_first_line(exc, 80)}); re-download it.", path=path
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
    rank = _shape(lora[qkv])[0] if qkv else "?"
    sl = obj["stitching_layer"]
    sl_shape = _fmt(_shape(sl["weight"])) if isinstance(sl, Mapping) and "weight" in sl else "?"
    extra = f", {distill} distill keys (ignored)" if distill else ""
    return (
        f"official stitched AnySplat checkpoint: {len(modules)} LoRA modules, rank {rank}, "
        f"{_dino_block_count(main)} DINO blocks after the cut, stitching conv {sl_shape}{extra}"
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
        if tensor_keys and _looks_anysplat(tensor_keys):
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
        if _looks_anysplat(keys):
            return Detected(
                "anysplat",
                f"AnySplat folder: {len(keys)} tensors, {_dino_block_count(keys)} DINO blocks, "
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


# ---------------------------------------------------------------------------------------------
# state dict checks and conversions


def validate_state_dict(
    sd: Mapping[str, Any],
    expected: Mapping[str, Any],
    *,
    source: str,
    allow_missing: Iterable[str] = (),
    ignore_prefixes: Iterable[str] = (),
    what: str = "the expected model",
) -> dict:
    """Check keys and shapes of ``sd`` against ``expected`` (name -> shape or tensor).

    Raises one :class:`CheckpointError` naming the first problem (missing, then unexpected, then
    wrong shape) and counting the rest, instead of letting ``load_state_dict`` print hundreds of
    lines. Keys of ``sd`` under ``ignore_prefixes`` are dropped; returns the remaining dict.
    """
    ignore = tuple(ignore_prefixes)
    allowed = set(allow_missing)
    missing = [k for k in expected if k not in sd and k not in allowed]
    unexpected = [k for k in sd if k not in expected and not (ignore and k.startswith(ignore))]
    wrong = [
        (k, _shape(expected[k]), _shape(sd[k]))
        for k in expected
        if k in sd and _shape(expected[k]) != _shape(sd[k])
    ]
    fix = "check that this file is the right checkpoint for this model or re-export it"
    head = f"Checkpoint '{source}' does not match {what}:"
    if missing:
        k = missing[0]
        prefix_hint = ""
        wrapped = next((s for s in sd if s.endswith("." + k)), None)
        if wrapped is not None:
            prefix_hint = f"; its keys carry an extra prefix '{wrapped[: -len(k)]}'"
        rest = _rest_count(len(missing) - 1, len(unexpected), len(wrong))
        raise CheckpointError(
            f"{head} key '{k}' (shape {_fmt(_shape(expected[k]))}) is missing{rest}{prefix_hint}; {fix}.",
            path=source,
            key=k,
        )
    if unexpected:
        k = unexpected[0]
        rest = _rest_count(0, len(unexpected) - 1, len(wrong))
        raise CheckpointError(
            f"{head} key '{k}' (shape {_fmt(_shape(sd[k]))}) is not part of it{rest}; {fix}.",
            path=source,
            key=k,
        )
    if wrong:
        k, exp, found = wrong[0]
        rest = _rest_count(0, 0, len(wrong) - 1)
        raise CheckpointError(
            f"{head} key '{k}' has shape {_fmt(found)} where {_fmt(exp)} was expected{rest}; {fix} "
            "(a different model size or configuration?)",
            path=source,
            key=k,
        )
    return {k: v for k, v in sd.items() if k in expected}


def stitched_from_anysplat(
    full_sd: Mapping[str, Any], cut: int = 2, *, drop_distill: bool = True, source: str = "AnySplat weights"
) -> dict:
    """AnySplat state dict -> stitched-decoder state dict (without the new stitching layer).

    Mirrors ``AnySplatStitched(model, f"enc_blocks_{cut}")``: the 14x14 patch conv and DINO blocks
    ``0..cut-1`` are dropped and block ``i + cut`` becomes block ``i`` (ModuleList deletion
    renumbers). ``encoder.distill_*`` (unused training copies) are dropped unless asked not to.
    Values are passed through untouched, so this also works on shape metadata.
    """
    n_blocks = _dino_block_count(full_sd)
    if n_blocks == 0:
        raise CheckpointError(
            f"Checkpoint '{source}' has no '{DINO_BLOCKS_PREFIX}N.*' keys, so it is not an AnySplat "
            "model; load the lhjiang/anysplat model.safetensors as the base.",
            path=source,
        )
    if not 0 <= cut <= n_blocks:
        raise CheckpointError(
            f"Cannot cut '{source}' after {cut} DINO blocks: it has {n_blocks}; use a cut between 0 "
            f"and {n_blocks} (the released decoder uses 2).",
            path=source,
        )
    out: dict = {}
    for key, value in full_sd.items():
        if key.startswith(PATCH_CONV_PREFIX) or (drop_distill and key.startswith(DISTILL_PREFIX)):
            continue
        m = _DINO_RE.match(key)
        if m:
            i = int(m.group(1))
            if i < cut:
                continue
            key = f"{DINO_BLOCKS_PREFIX}{i - cut}.{m.group(2)}"
        out[key] = value
    return out


class WrappedModule(NamedTuple):
    """A layer the official ``add_lora(target_modules=None)`` wraps, described by shapes only."""

    name: str
    kind: str  # "Linear" | "Conv2d"
    weight_shape: tuple[int, ...]
    has_bias: bool

    def lora_shapes(self, rank: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(lora_A, lora_B) shapes at ``rank``; conv factors are scaled by the kernel size k."""
        if self.kind == "Linear":
            out_f, in_f = self.weight_shape
            return (rank, in_f), (out_f, rank)
        out_c, in_c, k = self.weight_shape[:3]
        return (rank * k, in_c * k), (out_c * k, rank * k)

    def rank_of(self, lora_A_shape: Sequence[int]) -> Optional[int]:
        """Rank implied by a lora_A shape, or None when it cannot belong to this layer."""
        a = tuple(lora_A_shape)
        if len(a) != 2:
            return None
        k = 1 if self.kind == "Linear" else self.weight_shape[2]
        if a[0] % k or a[0] == 0:
            return None
        rank = a[0] // k
        return rank if self.lora_shapes(rank)[0] == a else None


def wrapped_modules(stitched_sd: Mapping[str, Any]) -> list[WrappedModule]:
    """The modules the official code wraps with LoRA, in state-dict order.

    Every 2-D ``.weight`` (``nn.Linear``) and 4-D ``.weight`` (``nn.Conv2d``), except the DPT heads'
    ``resize_layers.0/1`` (ConvTranspose2d, not a Conv2d subclass) and the Conv3d stitching layer,
    which lives outside the wrapped model. Works on tensors or shapes.
    """
    mods = []
    for key, value in stitched_sd.items():
        if not key.endswith(".weight") or key.startswith(STITCHING_PREFIX) or _CONV_TRANSPOSE_RE.search(key):
            continue
        shape = _shape(value)
        name = key[: -len(".weight")]
        if len(shape) == 2:
            kind = "Linear"
        elif len(shape) == 4:
            if shape[2] != shape[3]:
                raise CheckpointError(
                    f"Layer '{name}' has a non-square kernel {_fmt(shape)} that the official Conv2d "
                    "LoRA cannot wrap; this state dict is not a VIST3A stitched decoder.",
                    key=key,
                )
            kind = "Conv2d"
        else:
            continue
        mods.append(WrappedModule(name, kind, shape, f"{name}.bias" in stitched_sd))
    return mods


def expected_lora_keys(
    stitched_sd: Mapping[str, Any], rank: int = OFFICIAL_LORA_RANK
) -> "OrderedDict[str, tuple[int, ...]]":
    """Key -> shape of the official ``ckpt["lora"]`` dict, in its order (lora_A, bias, lora_B)."""
    keys: "OrderedDict[str, tuple[int, ...]]" = OrderedDict()
    for m in wrapped_modules(stitched_sd):
        a, b = m.lora_shapes(rank)
        keys[f"{m.name}.lora_A"] = a
        if m.has_bias:
            keys[f"{m.name}.bias"] = (m.weight_shape[0],)
        keys[f"{m.name}.lora_B"] = b
    return keys


def _check_factors(m: WrappedModule, A: Any, B: Any, *, source: str) -> int:
    """Shapes of one module's (A, B) must fit its weight; returns the rank."""
    a, b = _shape(A), _shape(B)
    rank = m.rank_of(a)
    if rank is None or m.lora_shapes(rank)[1] != b:
        out_c, in_c = m.weight_shape[:2]
        if m.kind == "Linear":
            need = f"lora_A [r, {in_c}] and lora_B [{out_c}, r]"
        else:
            k = m.weight_shape[2]
            need = f"lora_A [r*{k}, {in_c * k}] and lora_B [{out_c * k}, r*{k}]"
        raise CheckpointError(
            f"Stitched checkpoint '{source}' has LoRA factors for '{m.name}' of shapes lora_A "
            f"{_fmt(a)} / lora_B {_fmt(b)}, but the decoder's {m.kind} weight {_fmt(m.weight_shape)} "
            f"needs {need}; use the AnySplat base and cut this checkpoint was trained with.",
            path=source,
            key=f"{m.name}.lora_A",
        )
    return rank


def _check_top_level(ckpt: Any, source: str) -> None:
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(
            f"Stitched checkpoint '{source}' holds a {type(ckpt).__name__}, not a dict; expected the "
            f"official anysplat_stitched.pth layout with {', '.join(STITCHED_PTH_TOP_KEYS)}.",
            path=source,
        )
    for key in STITCHED_PTH_TOP_KEYS:
        if key not in ckpt:
            raise CheckpointError(
                f"Stitched checkpoint '{source}' has no top-level key '{key}' (found "
                f"{', '.join(map(str, ckpt))}); expected the official anysplat_stitched.pth layout.",
                path=source,
                key=key,
            )
    if not isinstance(ckpt["lora"], Mapping):
        raise CheckpointError(
            f"Stitched checkpoint '{source}' has a {type(ckpt['lora']).__name__} under 'lora' where a "
            "dict of LoRA tensors was expected; re-download the checkpoint.",
            path=source,
            key="lora",
        )
    sl = ckpt["stitching_layer"]
    if not isinstance(sl, Mapping) or not all(
        isinstance(sl.get(k), torch.Tensor) for k in ("weight", "bias")
    ):
        raise CheckpointError(
            f"Stitched checkpoint '{source}' has no tensors 'weight' and 'bias' under 'stitching_layer'; "
            "re-download the checkpoint.",
            path=source,
            key="stitching_layer",
        )


def _replacement(
    out: dict, stitched_sd: Mapping[str, Any], key: str, value: Any, *, source: str, ckpt_key: str
) -> None:
    """Put ``value`` (float32 copy) under ``key`` after checking it against the base's shape."""
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(
            f"Stitched checkpoint '{source}' has a {type(value).__name__} under '{ckpt_key}' where a "
            "tensor was expected; re-download the checkpoint.",
            path=source,
            key=ckpt_key,
        )
    if key in stitched_sd and _shape(stitched_sd[key]) != tuple(value.shape):
        raise CheckpointError(
            f"Stitched checkpoint '{source}' has '{ckpt_key}' of shape {_fmt(value.shape)} but the "
            f"decoder's '{key}' is {_fmt(_shape(stitched_sd[key]))}; use the AnySplat base and "
            "stitching configuration this checkpoint was trained with.",
            path=source,
            key=ckpt_key,
        )
    out[key] = value.detach().to(device="cpu", dtype=torch.float32, copy=True)


def merge_stitched_checkpoint(
    stitched_sd: Mapping[str, torch.Tensor],
    ckpt: Mapping[str, Any],
    *,
    source: str,
    lora_scale: float = OFFICIAL_LORA_SCALE,
    strict: bool = True,
) -> dict[str, torch.Tensor]:
    """Apply an official ``anysplat_stitched.pth`` dict to a stitched-decoder state dict.

    Per wrapped module M: ``W += (B @ A).view(W.shape) * lora_scale`` in float32 (the official
    eval-mode merge, but without its in-place bf16 rounding), ``M.bias`` replaced by the trained
    bias; then the stitching layer and the three tokens are replaced. ``encoder.distill_*`` keys are
    ignored. Every other LoRA key must fit a module of ``stitched_sd`` and (with ``strict``) every
    wrapped module must have factors, which catches a wrong base or a different cut. Inputs are not
    modified; untouched tensors are shared with ``stitched_sd``.
    """
    _check_top_level(ckpt, source)
    modules = {m.name: m for m in wrapped_modules(stitched_sd)}
    n_blocks = _dino_block_count(stitched_sd)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in ckpt["lora"].items():
        if not isinstance(key, str):
            raise CheckpointError(
                f"Stitched checkpoint '{source}' has a non-string LoRA key {key!r}; re-download it.",
                path=source,
            )
        if key.startswith(DISTILL_PREFIX):
            continue
        for suffix in (".lora_A", ".lora_B", ".bias"):
            if key.endswith(suffix):
                name, part = key[: -len(suffix)], suffix[1:]
                break
        else:
            raise CheckpointError(
                f"Stitched checkpoint '{source}' has LoRA key '{key}', which is none of "
                "'<module>.lora_A', '<module>.lora_B' or '<module>.bias'; this is not an official "
                "anysplat_stitched.pth, so re-download it.",
                path=source,
                key=key,
            )
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"Stitched checkpoint '{source}' has a {type(value).__name__} under LoRA key '{key}' "
                "where a tensor was expected; re-download it.",
                path=source,
                key=key,
            )
        if name not in modules:
            m = _DINO_RE.match(key)
            hint = (
                f"; the decoder has DINO blocks 0..{n_blocks - 1} after its cut, so the checkpoint "
                "was made for a different cut"
                if m
                else ""
            )
            raise CheckpointError(
                f"Stitched checkpoint '{source}' has LoRA key '{key}' (shape {_fmt(value.shape)}) but "
                f"the stitched decoder has no LoRA-wrapped module '{name}'{hint}; use the AnySplat base "
                "and cut this checkpoint was trained with.",
                path=source,
                key=key,
            )
        parts.setdefault(name, {})[part] = value

    if strict:
        absent = [n for n in modules if n not in parts]
        if absent:
            more = f" (and {len(absent) - 1} more modules)" if len(absent) > 1 else ""
            raise CheckpointError(
                f"Stitched checkpoint '{source}' has no LoRA factors for '{absent[0]}'{more}, which the "
                f"official code wraps in this decoder ({n_blocks} DINO blocks after the cut); use the "
                "AnySplat base and cut this checkpoint was trained with.",
                path=source,
                key=f"{absent[0]}.lora_A",
            )

    out = dict(stitched_sd)
    for name, p in parts.items():
        m = modules[name]
        for half in ("lora_A", "lora_B"):
            if half not in p:
                raise CheckpointError(
                    f"Stitched checkpoint '{source}' has no '{name}.{half}' although it has the other "
                    "half of that module's LoRA; the file is incomplete, so re-download it.",
                    path=source,
                    key=f"{name}.{half}",
                )
        _check_factors(m, p["lora_A"], p["lora_B"], source=source)
        weight = stitched_sd[f"{name}.weight"]
        delta = p["lora_B"].detach().to("cpu", torch.float32) @ p["lora_A"].detach().to("cpu", torch.float32)
        out[f"{name}.weight"] = weight.detach().to("cpu").float() + delta.reshape(weight.shape) * lora_scale
        if "bias" in p:
            if not m.has_bias:
                raise CheckpointError(
                    f"Stitched checkpoint '{source}' has '{name}.bias' but that layer of the decoder has "
                    "no bias; use the AnySplat base this checkpoint was trained with.",
                    path=source,
                    key=f"{name}.bias",
                )
            _replacement(
                out, stitched_sd, f"{name}.bias", p["bias"], source=source, ckpt_key=f"lora/{name}.bias"
            )

    sl = ckpt["stitching_layer"]
    if tuple(sl["weight"].shape[:1]) != tuple(sl["bias"].shape) or sl["weight"].dim() != 5:
        raise CheckpointError(
            f"Stitched checkpoint '{source}' has a stitching layer weight {_fmt(sl['weight'].shape)} and "
            f"bias {_fmt(sl['bias'].shape)} that do not form a Conv3d; re-download it.",
            path=source,
            key="stitching_layer",
        )
    for part in ("weight", "bias"):
        _replacement(
            out, stitched_sd, f"{STITCHING_PREFIX}{part}", sl[part],
            source=source, ckpt_key=f"stitching_layer/{part}",
        )
    for ckpt_key, key in TOKEN_KEYS.items():
        if key not in stitched_sd:
            raise CheckpointError(
                f"The stitched decoder state dict has no '{key}' to receive '{ckpt_key}' from '{source}'; "
                "build it with stitched_from_anysplat() from a full AnySplat state dict.",
                path=source,
                key=key,
            )
        _replacement(out, stitched_sd, key, ckpt[ckpt_key], source=source, ckpt_key=ckpt_key)
    return out


def _cpu_copy(t: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    # clone() so torch.save stores only this tensor, never the whole storage it may be a view of
    return t.detach().to("cpu", dtype=dtype or t.dtype).clone(memory_format=torch.contiguous_format)


def make_stitched_checkpoint(
    trained_stitched_sd: Mapping[str, Any],
    lora_factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    source: str = "trained stitched decoder",
) -> dict:
    """Inverse of :func:`merge_stitched_checkpoint`, for our training export.

    ``trained_stitched_sd``: the stitched decoder after training with LoRA left UNmerged (its
    wrapped ``.weight`` tensors are the frozen base and are not stored; only their shapes are used),
    holding the trained biases, tokens and ``stitching_layer.*``. ``lora_factors``: module name ->
    (lora_A, lora_B) for every wrapped module, one rank throughout. Returns the official layout
    (``lora`` OrderedDict with ``M.lora_A, M.bias, M.lora_B`` per module in state-dict order, factors
    float32; ``stitching_layer`` {weight, bias}; tokens), loadable by ``torch.load(weights_only=True)``.
    The official loader itself only accepts rank 64 (it hard-codes ``r64,a32``).
    """
    modules = wrapped_modules(trained_stitched_sd)
    names = {m.name for m in modules}
    stray = [n for n in lora_factors if n not in names]
    if stray:
        raise CheckpointError(
            f"LoRA factors for '{stray[0]}' do not match any LoRA-wrapped module of '{source}'"
            f"{f' (and {len(stray) - 1} more)' if len(stray) > 1 else ''}; pass factors keyed by the "
            "stitched decoder's module names.",
            path=source,
            key=stray[0],
        )
    lora: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    ranks = set()
    for m in modules:
        if m.name not in lora_factors:
            raise CheckpointError(
                f"No LoRA factors were given for '{m.name}' of '{source}', which the official layout "
                "needs for every wrapped Linear/Conv2d; pass (lora_A, lora_B) for all of "
                "wrapped_modules().",
                path=source,
                key=m.name,
            )
        A, B = lora_factors[m.name]
        ranks.add(_check_factors(m, A, B, source=source))
        if len(ranks) > 1:
            raise CheckpointError(
                f"LoRA factors of '{m.name}' in '{source}' have rank {sorted(ranks)[-1]} while earlier "
                f"modules have rank {sorted(ranks)[0]}; the official layout uses one rank for all modules.",
                path=source,
                key=m.name,
            )
        lora[f"{m.name}.lora_A"] = _cpu_copy(A, torch.float32)
        if m.has_bias:
            bias = trained_stitched_sd[f"{m.name}.bias"]
            if not isinstance(bias, torch.Tensor):
                raise CheckpointError(
                    f"'{source}' has no bias tensor under '{m.name}.bias' (found {type(bias).__name__}); "
                    "pass the trained state dict with real tensors.",
                    path=source,
                    key=f"{m.name}.bias",
                )
            lora[f"{m.name}.bias"] = _cpu_copy(bias)
        lora[f"{m.name}.lora_B"] = _cpu_copy(B, torch.float32)

    def tensor(key: str) -> torch.Tensor:
        value = trained_stitched_sd.get(key)
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"'{source}' has no tensor '{key}', which the official stitched checkpoint stores; "
                "pass the full trained stitched-decoder state dict.",
                path=source,
                key=key,
            )
        return _cpu_copy(value)

    ckpt: dict = {
        "lora": lora,
        "stitching_layer": {
            "weight": tensor("stitching_layer.weight"),
            "bias": tensor("stitching_layer.bias"),
        },
    }
    for ckpt_key, key in TOKEN_KEYS.items():
        ckpt[ckpt_key] = tensor(key)
    return ckpt


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
        trained[key] = rand(_shape(stitched_sd[key]), 0.02)
    embed = _shape(stitched_sd[TOKEN_KEYS["mask_token"]])[-1]
    w_shape = _shape(stitched_sd.get("stitching_layer.weight", (embed, latent_channels, 5, 3, 3)))
    trained["stitching_layer.weight"] = rand(w_shape, math.prod(w_shape[1:]) ** -0.5)
    trained["stitching_layer.bias"] = rand(w_shape[:1], 0.02)
    ckpt = make_stitched_checkpoint(trained, factors, source=str(path))
    save_torch_atomic(ckpt, path)
    return ckpt
