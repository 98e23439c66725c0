"""Reading Wan weight files into state dicts and state dicts into models, ComfyUI's fp8 files included.

Only headers are read to tell what a file is; tensors are read onto the CPU, fp8 "scaled" weights are
dequantised one tensor at a time, and a model built on the meta device gets the tensors assigned (cast the way
``from_pretrained`` casts), so a big checkpoint is never held twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import torch
from safetensors import safe_open

from ..errors import CheckpointError
from ..weights.readers import read_pth_state_dict, read_safetensors_header

__all__ = ["SPIECE_KEY", "require_exists", "file_tensors", "read_state_dict", "strip_prefix", "dequantize_comfy_fp8",
           "target_dtype", "cast_module", "assign_state_dict"]

PathLike = Union[str, Path]

_FP8_DTYPES = tuple(
    getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
    if hasattr(torch, name)
)
# Side tensors of ComfyUI's quantised files: consumed by the dequantiser, never model weights.
_QUANT_SIDE_SUFFIXES = (".scale_weight", ".scale_input", ".weight_scale", ".input_scale", ".comfy_quant")
SPIECE_KEY = "spiece_model"


def require_exists(path: PathLike, what: str, hint: str) -> Path:
    """``path`` (user home expanded) if it exists, else a CheckpointError saying what to give."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{what} not found: {path} does not exist; {hint}", path=path)
    return path


def file_tensors(path: Path) -> Mapping[str, Any]:
    """Tensor names -> shape/dtype without reading the data (safetensors header / mmap'ed .pth)."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return read_safetensors_header(path).tensors
    if suffix in (".pth", ".pt", ".ckpt", ".bin"):
        return read_pth_state_dict(path, mmap=True)
    if suffix == ".gguf":
        raise CheckpointError(
            f"{path} is a GGUF-quantised file, which the VIST3A loaders do not read; use the fp16/bf16 or "
            f"fp8 safetensors release of the same model",
            path=path,
        )
    raise CheckpointError(
        f"{path} has an unsupported extension {suffix or '(none)'}; expected a .safetensors file", path=path
    )


def read_state_dict(path: PathLike, keys: Optional[Iterable[str]] = None) -> dict[str, torch.Tensor]:
    """Read all tensors (or only ``keys``) of a .safetensors / weights-only .pth file onto the CPU."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        sd = read_pth_state_dict(path, mmap=True)
        return sd if keys is None else {k: sd[k] for k in keys}
    with safe_open(str(path), framework="pt") as f:
        names = list(f.keys()) if keys is None else list(keys)
        return {k: f.get_tensor(k) for k in names}


def strip_prefix(keys: Iterable[str], marker: str) -> Optional[str]:
    """The prefix in front of ``marker`` in one of ``keys`` (e.g. 'model.diffusion_model.')."""
    for k in keys:
        if k.endswith(marker):
            return k[: -len(marker)]
    return None


def dequantize_comfy_fp8(state_dict: Mapping[str, torch.Tensor], source: PathLike = "state dict",
                         dtype: torch.dtype = torch.float32, keep_fp32: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Turn ComfyUI's fp8 weights back into ``dtype`` tensors and drop the quantisation side tensors.

    ComfyUI's "scaled" files store ``X.weight`` as float8 together with a per-tensor float32
    ``X.scale_weight`` (newer files: ``X.weight_scale`` + ``X.comfy_quant``); the real weight is
    ``weight.float() * scale``, rounded once into ``dtype`` (float32 for names in ``keep_fp32``),
    so a 14B fp8 file never exists in float32 all at once.  Plain fp8 files have no scale
    (scale 1).  Non-fp8 tensors pass through unchanged; ``scaled_fp8`` / ``spiece_model`` markers
    are removed.
    """
    keep_fp32 = tuple(keep_fp32 or ())
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in ("scaled_fp8", SPIECE_KEY) or key.endswith(_QUANT_SIDE_SUFFIXES):
            continue
        if value.dtype in _FP8_DTYPES:
            base = key[: -len(".weight")] if key.endswith(".weight") else key
            quant = state_dict.get(f"{base}.comfy_quant")
            if quant is not None:
                fmt = json.loads(bytes(quant.to(torch.uint8).tolist()).decode("utf-8")).get("format", "")
                if not fmt.startswith("float8"):
                    raise CheckpointError(
                        f"{source}: tensor {key} uses ComfyUI quantisation format {fmt!r}, which VIST3A cannot "
                        f"dequantise; use the fp16/bf16 or fp8 release of the model",
                        path=str(source), key=key,
                    )
            scale = state_dict.get(f"{base}.scale_weight", state_dict.get(f"{base}.weight_scale"))
            weight = value.to(torch.float32)
            if scale is not None:
                if scale.numel() != 1:
                    raise CheckpointError(
                        f"{source}: tensor {key} has a {tuple(scale.shape)} scale, but only per-tensor fp8 "
                        f"scales are supported; use the fp16/bf16 release of the model",
                        path=str(source), key=key,
                    )
                weight = weight * scale.to(torch.float32).reshape(())
            value = weight.to(target_dtype(key, dtype, keep_fp32))
        out[key] = value
    return out


def target_dtype(name: str, dtype: torch.dtype, keep_fp32: Iterable[str]) -> torch.dtype:
    parts = name.split(".")
    return torch.float32 if any(m in parts for m in keep_fp32) else dtype


def cast_module(module: torch.nn.Module, dtype: torch.dtype, keep_fp32: Iterable[str] = ()) -> torch.nn.Module:
    """Cast floating parameters/buffers to ``dtype`` except the modules ``from_pretrained`` keeps in
    float32 (diffusers' ``_keep_in_fp32_modules``), so every loading path ends in the same precision."""
    keep_fp32 = tuple(keep_fp32 or ())
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if torch.is_floating_point(tensor):
            tensor.data = tensor.data.to(target_dtype(name, dtype, keep_fp32))
    return module


def assign_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], dtype: torch.dtype, keep_fp32: Iterable[str],
            source: Path, what: str, optional: Iterable[str] = ()) -> torch.nn.Module:
    """Put ``sd`` into a meta-initialised ``model`` (cast like ``from_pretrained`` does) or explain."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    optional = set(optional)
    missing = sorted(set(expected) - set(sd) - optional)
    unexpected = sorted(set(sd) - set(expected))
    wrong = sorted(k for k in set(sd) & set(expected) if tuple(sd[k].shape) != expected[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with the wrong shape (e.g. {k}: {tuple(sd[k].shape)} vs {expected[k]})")
        raise CheckpointError(
            f"{source} does not match the {what} its shapes describe: {', '.join(parts)}; the file is "
            f"incomplete or a different model, re-download it",
            path=source,
        )
    keep_fp32 = tuple(keep_fp32 or ())
    cast = {}
    for key in list(sd):  # pop as we go: peak memory stays near one copy of the weights
        value = sd.pop(key)
        cast[key] = value.to(target_dtype(key, dtype, keep_fp32)) if torch.is_floating_point(value) else value
    model.load_state_dict(cast, strict=False, assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    on_meta = [n for n, p in model.named_parameters() if p.is_meta] + [n for n, b in model.named_buffers() if b.is_meta]
    if on_meta:
        raise CheckpointError(
            f"{source} left {len(on_meta)} {what} tensors uninitialised (e.g. {on_meta[0]}); the file is incomplete",
            path=source,
        )
    return model.eval()
