"""Load the frozen Wan transformer straight into ZeRO-3 partitions: each rank ends up holding only its
shard of the weights, and no rank ever holds the whole model on the host.

Why: loading the full model on every rank before ``deepspeed.initialize`` partitions it costs the
whole checkpoint per rank in host RAM (4 ranks x 28.6 GB for the 14B bf16 transformer on one node).
Here the module is built under ``deepspeed.zero.Init`` (parameters are partitioned as each submodule
is created), then filled one tensor at a time: every rank gathers that one parameter, rank 0 reads it
from the safetensors file with plain reads (no memory map, so file pages are not charged to the
process), copies it in, and DeepSpeed re-partitions it. Peak host memory per rank: its shard plus one
tensor.

Sources: a diffusers folder (``transformer/config.json`` + ``diffusion_pytorch_model*.safetensors``)
or one diffusers-key ``.safetensors`` file with a ``config.json`` beside it. Other formats (ComfyUI
single files, .pth) take the ordinary loader.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Optional

import torch

from .config import ConfigError

__all__ = ["zero3_source", "read_safetensors_index", "stream_tensor", "load_wan_transformer_zero3"]

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8}


def zero3_source(path: Path) -> Optional[tuple[dict, list[Path]]]:
    """(transformer config, weight files) when ``path`` can be streamed, else None."""
    path = Path(path)
    if path.is_dir():
        folder = path / "transformer" if (path / "transformer" / "config.json").is_file() else path
        files = sorted(folder.glob("diffusion_pytorch_model*.safetensors")) or sorted(folder.glob("*.safetensors"))
        cfg = folder / "config.json"
    else:
        folder, files, cfg = path.parent, [path] if path.suffix == ".safetensors" else [], path.parent / "config.json"
    if not files or not cfg.is_file():
        return None
    config = json.loads(cfg.read_text())
    if config.get("_class_name") not in (None, "WanTransformer3DModel"):
        return None
    return config, files


def read_safetensors_index(files: list[Path]) -> dict[str, tuple[Path, int, str, list[int], int, int]]:
    """name -> (file, header size, dtype, shape, begin, end) from the headers only."""
    index = {}
    for f in files:
        with open(f, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ConfigError(f"'{f}' is not a safetensors file (shorter than its header)")
            n = struct.unpack("<Q", head)[0]
            try:
                meta = json.loads(fh.read(n))
            except ValueError:
                raise ConfigError(f"'{f}' has a corrupt safetensors header; re-download it") from None
        for name, info in meta.items():
            if name == "__metadata__":
                continue
            index[name] = (f, 8 + n, info["dtype"], list(info["shape"]), *info["data_offsets"])
    return index


def stream_tensor(entry) -> torch.Tensor:
    """One tensor read with ordinary file reads (only this tensor's bytes are held)."""
    f, base, dtype, shape, begin, end = entry
    if dtype not in _DTYPES:
        raise ConfigError(f"'{f}': tensor dtype {dtype} is not supported")
    buf = bytearray(end - begin)
    with open(f, "rb") as fh:
        fh.seek(base + begin)
        if fh.readinto(buf) != len(buf):
            raise ConfigError(f"'{f}' is truncated; re-download it")
    if not buf:
        return torch.empty(shape, dtype=_DTYPES[dtype])
    return torch.frombuffer(buf, dtype=torch.uint8).view(_DTYPES[dtype]).reshape(shape)


def load_wan_transformer_zero3(path: Path, ds_config: dict, dtype: torch.dtype):
    """WanTransformer3DModel partitioned by ZeRO-3 at construction and filled from ``path`` (see module doc)."""
    import deepspeed
    import torch.distributed as dist
    from diffusers import WanTransformer3DModel

    found = zero3_source(path)
    if found is None:
        raise ConfigError(f"'{path}' cannot be streamed into ZeRO-3 (needs a diffusers transformer folder or a "
                          ".safetensors file with config.json beside it)")
    config, files = found
    index = read_safetensors_index(files)
    rank = dist.get_rank() if dist.is_initialized() else 0
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    # dtype comes from ds_config (bf16.enabled); DeepSpeed 0.19 ignores an explicit dtype on accelerators
    # without fp16 (operator precedence in Init._set_dtype) and would pick bf16 on the CPU
    with deepspeed.zero.Init(config_dict_or_path=ds_config):
        model = WanTransformer3DModel.from_config(config)
    _trim_heap()  # each submodule was allocated whole before partitioning; return those pages
    names = dict(model.named_parameters())
    names.update((n, b) for n, b in model.named_buffers() if n in index and b is not None)
    missing = [n for n in names if n not in index]
    unexpected = [n for n in index if n not in names]
    if missing or unexpected:
        raise ConfigError(f"'{path}' does not match the Wan transformer its config describes: "
                          f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    for name, tensor in names.items():
        shape = list(getattr(tensor, "ds_shape", tensor.shape))
        if list(index[name][3]) != shape:
            raise ConfigError(f"'{path}': {name} has shape {index[name][3]}, the model expects {shape}")
        is_param = hasattr(tensor, "ds_id")
        ctx = deepspeed.zero.GatheredParameters([tensor], modifier_rank=0) if is_param else _Null()
        with ctx:
            if rank == 0 or not is_param:
                with torch.no_grad():
                    tensor.data.copy_(stream_tensor(index[name]).to(tensor.dtype))
    if dtype is not None:
        got = next(model.parameters()).dtype
        if got != dtype:
            raise ConfigError(f"ZeRO-3 built the transformer in {got}, expected {dtype}: set bf16.enabled in the "
                              "DeepSpeed config to match run.precision")
    model.eval().requires_grad_(False)
    _trim_heap()
    return model


def _trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc keeps them after many large temporary buffers)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
