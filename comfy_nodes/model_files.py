"""Where the nodes find files: models/vist3a (registered here), diffusers folders, LoRAs, ComfyUI's input/output
lists, the folders a client may make the server read, and modification times for cache keys."""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from vist3a.errors import VIST3AError

from .errors import NodeError

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


def output_folder(filename_prefix: str) -> tuple[str, str, int, str]:
    """(folder, file name stem, counter, subfolder) for a save node's prefix, as ComfyUI's savers number files;
    the folder exists. A prefix that leaves the output folder is refused in one sentence."""
    try:
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, folder_paths.get_output_directory())
    except Exception as exc:  # ComfyUI's refusal spans several lines of asterisks and paths: keep its first statement
        reason = next((line.strip(" *") for line in str(exc).splitlines() if line.strip(" *")), type(exc).__name__)
        raise NodeError(f"filename_prefix '{filename_prefix}' cannot be used ({reason}); keep it inside the output folder, "
                        "e.g. VIST3A/scene.") from exc
    os.makedirs(folder, exist_ok=True)
    return folder, filename, counter, subfolder
