"""Datasets: synthetic multi-view clips, DL3DV / ScanNet / RealEstate10K, DL3DV captions, prompts."""

from __future__ import annotations

from typing import Any, Mapping

from .base import BadSampleMonitor, DatasetError, StreamDataset, make_loader
from .prompts import PromptDataset
from .real import DL3DV, RE10K, DL3DVCaptioned, ScanNet
from .synthetic import SyntheticMultiView

__all__ = ["BadSampleMonitor", "DatasetError", "StreamDataset", "make_loader", "build_dataset", "PromptDataset", "DL3DV",
           "DL3DVCaptioned", "ScanNet", "RE10K", "SyntheticMultiView"]

_MULTIVIEW = {"synthetic": SyntheticMultiView, "dl3dv": DL3DV, "scannet": ScanNet, "re10k": RE10K}
_CAPTIONED = {"synthetic": SyntheticMultiView, "dl3dv": DL3DVCaptioned}


def _construct(cls, spec: dict, where: str, resolve):
    import inspect

    params = inspect.signature(cls.__init__).parameters
    unknown = [k for k in spec if k not in params]
    if unknown:
        known = ", ".join(k for k in params if k != "self")
        raise ValueError(f"{where}: unknown key '{unknown[0]}' for dataset type '{cls.__name__}' (known: {known})")
    for key in ("root", "captions", "split_file", "path"):
        if spec.get(key) is not None:
            spec[key] = str(resolve(spec[key]))
    return cls(**spec)


def build_dataset(kind: str, spec: Mapping[str, Any], *, resolve=lambda p: p, **defaults):
    """``kind``: multiview | captioned | prompts. ``spec`` is the config's data.<kind> section (a
    mapping with ``type``; a list of them concatenates datasets). ``defaults`` (num_views, sizes)
    fill keys the spec leaves out."""
    if isinstance(spec, (list, tuple)):
        parts = [build_dataset(kind, s, resolve=resolve, **defaults) for s in spec]
        return Concat(parts)
    spec = dict(spec)
    typ = spec.pop("type", None)
    where = f"data.{kind}"
    if kind == "prompts":
        if typ == "inline":
            return PromptDataset(prompts=spec.get("prompts"))
        if typ == "file":
            return _construct(PromptDataset, spec, where, resolve)
        raise ValueError(f"{where}.type must be 'inline' or 'file', got {typ!r}")
    table = _MULTIVIEW if kind == "multiview" else _CAPTIONED
    if typ not in table:
        raise ValueError(f"{where}.type must be one of {', '.join(table)}, got {typ!r}")
    cls = table[typ]
    import inspect

    params = inspect.signature(cls.__init__).parameters
    for k, v in defaults.items():
        if k in params and k not in spec:
            spec[k] = v
    return _construct(cls, spec, where, resolve)


class Concat:
    def __init__(self, parts):
        self.parts = parts
        self.root = None
        self.offsets = []
        total = 0
        for p in parts:
            self.offsets.append(total)
            total += len(p)
        self.total = total

    def __len__(self) -> int:
        return self.total

    def describe(self) -> str:
        return " + ".join(p.describe() for p in self.parts)

    def load(self, index: int, rng):
        for off, part in reversed(list(zip(self.offsets, self.parts))):
            if index >= off:
                return part.load(index - off, rng)
        raise IndexError(index)
