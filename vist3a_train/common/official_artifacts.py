"""Reading what the official training scripts leave behind, without running any code stored in those files.

Layouts (from the official save code, gohyojun15/VIST3A @ 32253c3):

* layer search (find_layer_for_stitching.py:262-360), in ``--feature_save_path``: ``features.pt``
  (``{"vae_features": [N, 16, T, h, w] fp16, "feedforward_features": {"enc_blocks_k": [N, F, P, D] fp16}}``),
  ``state_dict_enc_blocks_k.pt`` (the fitted Conv3d's state dict) and ``mse_enc_blocks_k.txt`` (one number);
* stitched fine-tune (model_stitching_training.py:33-72), ``epoch_N/``: ``stitched_model_epoch_N.pth`` (the
  released ``anysplat_stitched.pth`` layout: ``lora``, ``stitching_layer``, ``mask_token``, ``cls_token``,
  ``register_tokens``) and ``resume_checkpoint.pth`` (``epoch``, AdamW and LambdaLR state dicts, and ``args``,
  the argparse namespace, which pickles classes of the official code);
* reward alignment (train_vdm.py:32-97), ``checkpoints/checkpoint-N/``: ``lora/`` and ``lora_ema/`` (PEFT
  folders), ``optim/`` and ``ema_shadow/`` (torch.distributed.checkpoint folders of ``{"optimizer": ...}`` and
  ``{"ema": {parameter name: fp32 tensor}}``) and ``meta.pt`` (``{"step": N}``).

Every ``.pt``/``.pth`` is read with ``torch.load(weights_only=True)``; classes a file names beyond tensors and
plain containers (the ``args`` namespace's) are replaced by :class:`Opaque` records that only keep the data
pickled for them. Distributed-checkpoint folders are read by :func:`read_dcp`: their ``.metadata`` pickle goes
through an unpickler that admits only the checkpoint's own metadata classes, tensors and bytes items through
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError

__all__ = ["Opaque", "load_weights_only", "read_dcp", "read_layer_search", "read_stitch_epoch", "read_align_checkpoint"]


class Opaque:
    """Stand-in for a class of the official code found in a pickle: keeps what was pickled, runs nothing."""

    _name = "?"

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"<{self._name} (not loaded)>"


def _stand_in(name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (Opaque,), {"_name": name})


def load_weights_only(path: Path, what: str) -> Any:
    """``torch.load(weights_only=True)`` with inert stand-ins for the foreign classes ``path`` names."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' does not exist")
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        with torch.serialization.safe_globals([(_stand_in(n), n) for n in names]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one message
        raise ConfigError(f"{what} '{path}' cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") from None


# ------------------------------------------------------------------------------- distributed checkpoints

_DCP_CLASSES = {
    ("torch.distributed.checkpoint.metadata", n) for n in
    ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata", "TensorProperties",
     "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")
} | {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"), ("collections", "OrderedDict"),
     ("torch.distributed.checkpoint.planner", "LoadItemType"), ("torch.distributed.checkpoint.planner", "WriteItemType"),
     ("torch.serialization", "_get_layout"),  # maps a layout name to torch.strided etc.
     ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PureWindowsPath")}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _DCP_CLASSES:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.layout, torch.memory_format)):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a distributed-checkpoint index")


def read_dcp(folder: Path, what: str = "distributed checkpoint") -> dict:
    """A torch.distributed.checkpoint folder -> its state dict, nested back as it was saved (full tensors; the
    writer's flattening turns dict keys into strings, e.g. an optimizer's ``state["0"]``)."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex, TensorStorageMetadata

    folder = Path(folder)
    meta_path = folder / ".metadata"
    if not meta_path.is_file():
        raise ConfigError(f"{what} '{folder}' has no .metadata file (is it a torch.distributed.checkpoint folder?)")
    try:
        with meta_path.open("rb") as f:
            meta = _MetadataUnpickler(f).load()
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{what} '{meta_path}' cannot be read safely ({exc})") from None
    storage, paths = meta.storage_data or {}, getattr(meta, "planner_data", None) or {}

    def blob(index: MetadataIndex) -> io.BytesIO:
        info = storage.get(index)
        if info is None:
            raise ConfigError(f"{what} '{folder}' indexes {index.fqn} but stores no data for it")
        if getattr(info, "transform_descriptors", None):
            raise ConfigError(f"{what} '{folder}' stores {index.fqn} transformed ({info.transform_descriptors}); unsupported")
        with (folder / info.relative_path).open("rb") as f:
            f.seek(info.offset)
            return io.BytesIO(f.read(info.length))

    flat = {}
    for fqn, md in meta.state_dict_metadata.items():
        if isinstance(md, TensorStorageMetadata):
            full = torch.empty(tuple(md.size), dtype=md.properties.dtype)
            for chunk in md.chunks:
                part = torch.load(blob(MetadataIndex(fqn, chunk.offsets)), map_location="cpu", weights_only=True)
                full[tuple(slice(o, o + s) for o, s in zip(chunk.offsets, chunk.sizes))] = part
            flat[fqn] = full
        elif isinstance(md, BytesStorageMetadata):
            flat[fqn] = torch.load(blob(MetadataIndex(fqn)), map_location="cpu", weights_only=True)
    out: dict = {}
    for fqn, value in flat.items():
        keys = list(paths.get(fqn, (fqn,)))
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return _lists(out)


def _lists(node):
    """Flattening stored list items under int keys 0..n-1: give them back as lists (dict keys it stored as str)."""
    if not isinstance(node, dict):
        return node
    node = {k: _lists(v) for k, v in node.items()}
    if node and all(isinstance(k, int) for k in node) and sorted(node) == list(range(len(node))):
        return [node[i] for i in range(len(node))]
    return node


# ------------------------------------------------------------------------------------------- the three steps

_LAYER_RE = re.compile(r"^state_dict_(enc_blocks_(\d+))\.pt$")


def read_layer_search(folder: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, float]]:
    """(layer -> conv {"weight", "bias"}, layer -> MSE) of an official layer-search folder."""
    folder = Path(folder)
    weights, mse = {}, {}
    for p in sorted(folder.glob("state_dict_enc_blocks_*.pt"), key=lambda p: int(_LAYER_RE.match(p.name).group(2))):
        layer = _LAYER_RE.match(p.name).group(1)
        sd = load_weights_only(p, "official layer-search weights")
        if not isinstance(sd, dict) or set(sd) != {"weight", "bias"}:
            raise ConfigError(f"'{p}' is not a Conv3d state dict (keys weight, bias)")
        weights[layer] = {k: v.float() for k, v in sd.items()}
        m = folder / f"mse_{layer}.txt"
        if m.is_file():
            mse[layer] = float(m.read_text().split()[0])
    if not weights:
        raise ConfigError(f"'{folder}' holds no state_dict_enc_blocks_<k>.pt: give the official --feature_save_path folder")
    return weights, mse


def read_stitch_epoch(folder: Path) -> dict:
    """An official ``epoch_N/`` folder -> {"epoch", "model" (anysplat_stitched.pth layout), "optimizer",
    "scheduler", "args" (an Opaque record)}."""
    folder = Path(folder)
    resume = load_weights_only(folder / "resume_checkpoint.pth", "official stitch resume checkpoint")
    if not isinstance(resume, dict) or not isinstance(resume.get("epoch"), int):
        raise ConfigError(f"'{folder / 'resume_checkpoint.pth'}' has no integer 'epoch' (not an official stitch checkpoint)")
    epoch = resume["epoch"]
    model = load_weights_only(folder / f"stitched_model_epoch_{epoch}.pth", "official stitched model")
    missing = [k for k in ("lora", "stitching_layer", "mask_token", "cls_token", "register_tokens") if k not in model]
    if missing:
        raise ConfigError(f"'{folder / f'stitched_model_epoch_{epoch}.pth'}' lacks '{missing[0]}' (not the official layout)")
    return {"epoch": epoch, "model": model, "optimizer": resume.get("optimizer"), "scheduler": resume.get("scheduler"),
            "args": resume.get("args")}


def read_align_checkpoint(folder: Path) -> dict:
    """An official ``checkpoint-N/`` folder -> {"step", "lora", "lora_ema" (PEFT state dicts), "adapter_config",
    "ema" (parameter name -> fp32 shadow), "optimizer"}."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = load_weights_only(folder / "meta.pt", "official alignment meta.pt")
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise ConfigError(f"'{folder / 'meta.pt'}' has no integer 'step' (not an official alignment checkpoint)")
    out = {"step": meta["step"]}
    for part in ("lora", "lora_ema"):
        f = folder / part / "adapter_model.safetensors"
        if not f.is_file():
            raise ConfigError(f"'{folder / part}' has no adapter_model.safetensors (PEFT folder expected)")
        out[part] = load_file(str(f))
    try:
        out["adapter_config"] = json.loads((folder / "lora_ema" / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"'{folder / 'lora_ema' / 'adapter_config.json'}' cannot be read ({exc})") from None
    out["ema"] = read_dcp(folder / "ema_shadow", "official EMA shadow").get("ema", {})
    out["optimizer"] = read_dcp(folder / "optim", "official optimizer state").get("optimizer", {})
    return out
