"""Safe readers and atomic writers for .pth and .safetensors files; the only place that opens them.

Why: ``.pth`` files are pickles (``weights_only=True`` always, pickled code is refused, never run)
and a safetensors header comes from the file (every length and offset is checked before anything
is allocated). Writers go through a temp file + rename so a crash never leaves half a model.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_path, atomic_write
from ..errors import CheckpointError
from .common import MB, PathLike, first_line, fmt_shape, require_file

_GLOBAL_RE = re.compile(r"GLOBAL\s+([\w.]+)")


def safe_torch_load(path: PathLike, *, mmap: bool = False) -> Any:
    """``torch.load`` restricted to plain tensors/containers; pickled code is refused, never run.

    Why: ``.pth`` files are pickles and ``weights_only=False`` would execute whatever they contain.
    We never fall back to it; a file that needs Python globals gets an explanation of how to
    convert it in a trusted session instead. ``mmap`` avoids reading tensor data (used by sniff).
    """
    p = Path(path)
    require_file(p)
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
            f"({first_line(exc)}); it is probably corrupted or not a .pth file, so re-download "
            "or re-export it.",
            path=p,
        ) from None
    except Exception as exc:  # EOFError, RuntimeError (zip), struct.error, ... all mean unreadable
        raise CheckpointError(
            f"Checkpoint file '{p}' ({size} bytes) could not be read as a PyTorch checkpoint "
            f"({first_line(exc)}); it is probably truncated or corrupted, so re-download or "
            "re-export it.",
            path=p,
        ) from None



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
    require_file(p)
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
        raise bad(f"the header is not valid JSON ({first_line(exc, 80)})") from None
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
                f"shape {fmt_shape(shape)} of {dtype} needs {need} bytes but its offsets span {end - begin}",
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
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(
            f"Safetensors file '{path}' passed the header check but could not be loaded "
            f"({first_line(exc)}); re-download or re-export it.",
            path=path,
        ) from None


def read_pth_state_dict(path: PathLike, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` dict from a weights-only .pth/.pt/.ckpt/.bin (``state_dict`` unwrapped)."""
    p = Path(path)
    obj = safe_torch_load(p, mmap=mmap)
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


def read_weights_file(path: PathLike) -> dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` dict from a .safetensors file (header checked) or a weights-only .pth/.pt/.bin."""
    if Path(path).suffix.lower() == ".safetensors":
        return read_safetensors(path)
    return read_pth_state_dict(path)


def save_safetensors_atomic(
    tensors: Mapping[str, torch.Tensor], path: PathLike, metadata: Optional[Mapping[str, str]] = None
) -> Path:
    """Write a safetensors file so a crash never leaves a half-written model file behind."""
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
