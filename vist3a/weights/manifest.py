"""``vist3a_manifest.json``: what our own exports are, since they reuse the official file formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

from ..atomic import atomic_write
from ..errors import CheckpointError
from .common import PathLike, first_line, require_file

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
    check_manifest(manifest, source="<new manifest>", folder=None)
    return manifest


def check_manifest(manifest: Any, *, source: str, folder: Optional[Path]) -> dict:
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
    check_manifest(dict(manifest), source=str(d / MANIFEST_NAME), folder=d)
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
    require_file(p)
    try:
        manifest = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"VIST3A manifest '{p}' is not valid JSON ({first_line(exc, 80)}); re-export the model "
            "or fix the file by hand.",
            path=p,
        ) from None
    return check_manifest(manifest, source=str(p), folder=p.parent)
