"""Shared plumbing of the VIST3A nodes: custom types, model-folder lookups, the model cache, device
and memory handling through ComfyUI's model manager, progress, Cancel and one-sentence errors.

Nothing here does model maths; the nodes call :mod:`vist3a` for that.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
from comfy_api.latest import io

from vist3a.errors import VIST3AError
from vist3a.splat_contract import SplatBatch, gaussians_to_splat, is_splat, splat_to_gaussians

log = logging.getLogger("vist3a")

CATEGORY = "VIST3A"
LOADERS = "VIST3A/loaders"
SPLATS = "VIST3A/splats"

# ----------------------------------------------------------------------------------------- types
# Every socket type of the pack is declared here, once.
WanModel = io.Custom("VIST3A_WAN")  # Wan 2.1 (diffusers classes) + LoRA stack: WanHandle
StitchedDecoder = io.Custom("VIST3A_DECODER")  # ModelHandle of vist3a.models.StitchedDecoder
AnySplatModel = io.Custom("VIST3A_ANYSPLAT")  # ModelHandle of vist3a.models.AnySplat
Cameras = io.Custom("CAMERAS")  # list[CameraSet], one per scene


def _native_splat():
    """ComfyUI's own (socket, class) for splats where it has them (2026+), else None."""
    try:
        from comfy_api.latest import Types
    except ImportError:
        return None
    cls, socket = getattr(Types, "SPLAT", None), getattr(io, "Splat", None)
    return (socket, cls) if cls is not None and socket is not None else None


# Splats travel as the SPLAT contract (vist3a.splat_contract) on every ComfyUI: the native type where
# it exists, so every native splat node connects both ways, else our look-alike under the same name,
# so one workflow JSON loads on old and new ComfyUI.
_NATIVE = _native_splat()
NATIVE_SPLAT = _NATIVE is not None
Splat = _NATIVE[0] if NATIVE_SPLAT else io.Custom("SPLAT")
SPLAT_CLASS = _NATIVE[1] if NATIVE_SPLAT else SplatBatch

# ------------------------------------------------------------------------------- model folder
VIST3A_FOLDER = "vist3a"
NONE = "(none)"
FROM_FOLDER = "(from the diffusers folder)"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin", ".sft")


def register_model_folder() -> None:
    """Register ``models/vist3a`` (AnySplat, stitched decoders, our exports) with folder_paths."""
    default = os.path.join(folder_paths.models_dir, VIST3A_FOLDER)
    folder_paths.add_model_folder_path(VIST3A_FOLDER, default, is_default=True)
    try:
        os.makedirs(default, exist_ok=True)
    except OSError:  # read-only install: users can still add paths via extra_model_paths.yaml
        pass


def _folder_paths(name: str) -> list[str]:
    try:
        return [p for p in folder_paths.get_folder_paths(name) if os.path.isdir(p)]
    except KeyError:
        return []


def diffusers_folders() -> list[str]:
    """Wan diffusers pipeline folders under models/diffusers, shown with a trailing '/'."""
    found = []
    for base in _folder_paths("diffusers"):
        for root, dirs, _files in os.walk(base, followlinks=True):
            rel = os.path.relpath(root, base)
            if os.path.isfile(os.path.join(root, "model_index.json")) and rel != ".":
                found.append(rel.replace(os.sep, "/") + "/")
                dirs[:] = []
            elif rel.count(os.sep) >= 2:
                dirs[:] = []
    return sorted(set(found))


def resolve_diffusers_folder(name: str) -> str:
    for base in _folder_paths("diffusers"):
        candidate = os.path.join(base, name.rstrip("/"))
        if os.path.isfile(os.path.join(candidate, "model_index.json")):
            return candidate
    raise VIST3AError(f"The diffusers folder '{name}' is not in models/diffusers any more; refresh the node list (press R) and pick it again.")


def vist3a_entries() -> list[str]:
    """What models/vist3a holds: weight files, and folders that are one model (AnySplat folder with
    model.safetensors + config.json, or one of our exports with a manifest), shown with a trailing '/'."""
    from vist3a.weights import MANIFEST_NAME

    found = []
    for base in _folder_paths(VIST3A_FOLDER):
        for root, dirs, files in os.walk(base, followlinks=True):
            rel = os.path.relpath(root, base)
            is_model_dir = rel != "." and (
                MANIFEST_NAME in files or ("model.safetensors" in files and "config.json" in files))
            if is_model_dir:
                found.append(rel.replace(os.sep, "/") + "/")
                dirs[:] = []
                continue
            for f in files:
                if f.lower().endswith(WEIGHT_SUFFIXES):
                    found.append(os.path.normpath(os.path.join(rel, f)).replace(os.sep, "/"))
            if rel.count(os.sep) >= 3:
                dirs[:] = []
    return sorted(set(found))


def resolve_vist3a(name: str, what: str) -> str:
    for base in _folder_paths(VIST3A_FOLDER):
        candidate = os.path.join(base, name.rstrip("/"))
        if os.path.exists(candidate):
            return candidate
    raise VIST3AError(
        f"The {what} '{name}' is not in models/vist3a (searched {', '.join(_folder_paths(VIST3A_FOLDER)) or 'no folder'}); "
        "put the file there and refresh the node list (press R).")


def model_file(folder: str, name: str, what: str) -> str:
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        raise VIST3AError(
            f"The {what} '{name}' is not in models/{folder}; put the file there (or fix extra_model_paths.yaml) "
            "and refresh the node list (press R).")
    return path


def peft_loras() -> list[str]:
    """LoRA files in models/loras, PEFT adapters (adapter_model.safetensors + adapter_config.json) first."""
    names = folder_paths.get_filename_list("loras")
    peft, other = [], []
    for n in names:
        full = folder_paths.get_full_path("loras", n)
        is_peft = full is not None and os.path.isfile(os.path.join(os.path.dirname(full), "adapter_config.json"))
        (peft if is_peft else other).append(n)
    return peft + other


def input_and_output_files(suffixes: tuple[str, ...]) -> list[str]:
    """Files in ComfyUI's input/ (plain names) and output/ (annotated ' [output]'), newest output first."""
    found = []
    inp = folder_paths.get_input_directory()
    if os.path.isdir(inp):
        for root, _dirs, files in os.walk(inp):
            for f in files:
                if f.lower().endswith(suffixes):
                    found.append(os.path.relpath(os.path.join(root, f), inp).replace(os.sep, "/"))
    found.sort()
    out = folder_paths.get_output_directory()
    outs = []
    if os.path.isdir(out):
        for root, _dirs, files in os.walk(out):
            for f in files:
                if f.lower().endswith(suffixes):
                    p = os.path.join(root, f)
                    outs.append((os.path.getmtime(p), os.path.relpath(p, out).replace(os.sep, "/") + " [output]"))
    outs.sort(reverse=True)
    return found + [n for _t, n in outs]


def allowed_read_roots() -> list[str]:
    """Folders a client may make this server read: ComfyUI's input/output/temp, every registered model
    folder, and the operator's VIST3A_EXTRA_READ_ROOTS (see vist3a.read_roots)."""
    from vist3a.read_roots import extra_roots_from_env

    roots = [folder_paths.get_input_directory(), folder_paths.get_output_directory(), folder_paths.get_temp_directory()]
    for name, (paths, _exts) in folder_paths.folder_names_and_paths.items():
        if name != "custom_nodes":  # code, not models
            roots.extend(paths)
    return roots + extra_roots_from_env()


def file_mtime(path: str) -> float:
    p = Path(path)
    if p.is_dir():
        return max((c.stat().st_mtime for c in p.rglob("*") if c.is_file()), default=p.stat().st_mtime)
    return p.stat().st_mtime


# ------------------------------------------------------------------------------ devices, dtypes
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


# ------------------------------------------------------------------------------------ the cache
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


# -------------------------------------------------------------------------- progress and Cancel
def should_cancel() -> bool:
    return mm.processing_interrupted()


def check_cancel() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel."""
    mm.throw_exception_if_processing_interrupted()


class Progress:
    """`comfy.utils.ProgressBar` over a node's stages: progress(stage, step, total) from vist3a."""

    def __init__(self, total: int):
        self.total = max(1, int(total))
        self.bar = comfy.utils.ProgressBar(self.total)
        self.value = 0

    def set(self, value: int) -> None:
        self.value = min(self.total, max(0, int(value)))
        self.bar.update_absolute(self.value, self.total)

    def step(self, n: int = 1) -> None:
        self.set(self.value + n)


def node_text(text: str, node_id) -> None:
    """Show a line of text on a node while it runs (ComfyUI's progress text); silently skipped where unsupported."""
    if node_id is None:
        return
    try:
        from server import PromptServer

        PromptServer.instance.send_progress_text(text, str(node_id))
    except Exception:  # an older ComfyUI without progress text, or no server (scripts): the console line is enough
        pass


def interrupt_on_cancel(exc: BaseException) -> None:
    """vist3a raised Cancelled because should_cancel() returned True: hand ComfyUI its own interrupt."""
    mm.throw_exception_if_processing_interrupted()  # clears the flag and raises
    raise mm.InterruptProcessingException() from exc


# ----------------------------------------------------------------------------------- errors
class NodeError(RuntimeError):
    """An error shown in the UI as one sentence; the original exception is kept as __cause__."""


def _sentence(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0].strip()
    return first if first.endswith((".", "!", "?")) else first + "."


def friendly(what: str):
    """Decorator for `execute`: user errors keep their own sentence, anything unexpected becomes
    '<what> failed: <reason>.' (ComfyUI still logs the traceback); Cancel passes through."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except mm.InterruptProcessingException:
                raise
            except VIST3AError as exc:
                from vist3a.wan import Cancelled

                if isinstance(exc, Cancelled):
                    interrupt_on_cancel(exc)
                raise NodeError(_sentence(exc)) from exc
            except NodeError:
                raise
            except torch.cuda.OutOfMemoryError as exc:
                raise NodeError(
                    f"{what} ran out of GPU memory; lower the resolution/frames, pick offload 'comfy' or 'blocks', "
                    "or use fp8/bf16 weights.") from exc
            except (ValueError, FileNotFoundError, TypeError, RuntimeError, OSError) as exc:
                raise NodeError(f"{what} failed: {_sentence(exc)}") from exc

        return wrapper

    return deco


# ----------------------------------------------------------------------------- scenes / cameras
@dataclass
class CameraSet:
    """The cameras of one scene: c2w [S, 4, 4] (OpenCV axes) and intrinsics [S, 3, 3] normalised by
    the image size, as AnySplat predicts them; `image_size` = (H, W) they were predicted for."""

    c2w: torch.Tensor
    intrinsics: torch.Tensor
    image_size: tuple[int, int]


def scenes_to_outputs(scenes) -> tuple[Any, list, torch.Tensor]:
    """vist3a Scenes -> (SPLAT batch, CAMERAS list, frames IMAGE [sum S, H, W, 3])."""
    cams = [CameraSet(s.c2w.detach().float().cpu(), s.intrinsics.detach().float().cpu(), s.image_size) for s in scenes]
    frames = torch.cat([s.frames.detach().float().cpu() for s in scenes], dim=0)
    return to_splat([s.gaussians for s in scenes]), cams, frames


def to_splat(scenes) -> Any:
    """list[vist3a Gaussians] -> the SPLAT socket value of this ComfyUI (native class or SplatBatch), fp32 on
    the CPU (native splat nodes go through numpy, which has no bf16)."""
    return gaussians_to_splat([g.detach().to("cpu", torch.float32) for g in scenes], make=SPLAT_CLASS)


def check_splat(value) -> list:
    """Any SPLAT (ours, a native node's such as Get Splat / TripoSplat, a batch) -> list[vist3a Gaussians]."""
    if not is_splat(value):
        raise NodeError(
            f"The splat input ({type(value).__name__}) is not a SPLAT; connect Decode Splats, Images to Splats, Load PLY "
            "or a ComfyUI splat node.")
    return splat_to_gaussians(value)


def check_cameras(value) -> Optional[list]:
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(c, CameraSet) for c in items):
        raise NodeError("The CAMERAS input does not come from a VIST3A node; connect Decode Splats or Images to Splats.")
    return list(items)

