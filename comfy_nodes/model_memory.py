"""Where models live: device and dtype choice, ComfyUI ModelPatchers so its memory manager moves and offloads our
modules like its own, and the cache that shares loaded models between nodes."""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import torch

import comfy.model_management as mm
import comfy.model_patcher

log = logging.getLogger("vist3a")

DTYPES = ["auto", "bf16", "fp16", "fp32"]
DEVICES = ["auto", "cpu"]


def pick_device(choice: str) -> torch.device:
    return torch.device("cpu") if choice == "cpu" else mm.get_torch_device()


def pick_dtype(choice: str, device: torch.device) -> torch.dtype:
    if choice == "fp32" or (choice == "auto" and device.type == "cpu"):
        return torch.float32
    if choice == "fp16":
        return torch.float16
    if choice == "auto" and not mm.should_use_bf16(device):
        return torch.float16 if mm.should_use_fp16(device) else torch.float32
    return torch.bfloat16


class _Holder(torch.nn.Module):
    """ComfyUI's ModelPatcher sets `model.device`, which diffusers models do not allow; it gets this
    wrapper instead (its sub-module is the real model, so memory accounting and moves are exact)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner


def make_patcher(module: torch.nn.Module, device: torch.device):
    """A ComfyUI ModelPatcher for one of our modules, so ComfyUI's memory manager moves it to the GPU
    when it runs and offloads it (like its own models) when another model needs the memory."""
    return comfy.model_patcher.ModelPatcher(_Holder(module), load_device=device, offload_device=mm.unet_offload_device())


def load_to_device(*patchers) -> None:
    patchers = [p for p in patchers if p is not None]
    if patchers:
        mm.load_models_gpu(patchers)


@dataclass(eq=False)
class ModelHandle:
    """A loaded decoder / AnySplat plus its ModelPatcher (None when pinned to the device)."""

    model: torch.nn.Module
    device: torch.device
    patcher: Any = None
    source: str = ""

    def ready(self) -> torch.nn.Module:
        load_to_device(self.patcher)
        return self.model


# Loaded models are shared by every node that asks for the same file with the same settings while
# any node output still holds them. ComfyUI's execution cache keeps loader outputs between runs;
# when it drops them (other workflow, "Unload models" / POST /free) the entry vanishes here too and
# the weights are freed, so there is no second cache to manage.
_cache: "weakref.WeakValueDictionary[tuple, Any]" = weakref.WeakValueDictionary()
_cache_lock = threading.Lock()


def cached(key: tuple, build: Callable[[], Any]):
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        log.info("VIST3A: reusing loaded %s", key[0])
        return hit
    value = build()
    with _cache_lock:
        _cache[key] = value
    return value
