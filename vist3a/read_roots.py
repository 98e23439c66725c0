"""Which files a server may read on a client's behalf: paths must lie under allowed roots.

A ComfyUI server is often shared (LAN, cloud box); a node with a free path input would otherwise
let any client read any splat file on that machine. Paths are resolved (symlinks, ``..``) BEFORE
the check, so neither traversal nor a link placed inside an allowed folder escapes it. Extra roots
come only from the server's environment (``VIST3A_EXTRA_READ_ROOTS``, os.pathsep-separated), never
from a request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Optional

from .errors import VIST3AError

__all__ = ["EXTRA_ROOTS_ENV", "PathNotAllowed", "extra_roots_from_env", "check_read_path"]

EXTRA_ROOTS_ENV = "VIST3A_EXTRA_READ_ROOTS"


class PathNotAllowed(VIST3AError, PermissionError):
    """A path outside the folders this server may read; the message names the allowed roots."""


def extra_roots_from_env(environ: Optional[Mapping[str, str]] = None) -> list[str]:
    """The operator's extra read roots from ``VIST3A_EXTRA_READ_ROOTS`` (empty entries ignored)."""
    value = (os.environ if environ is None else environ).get(EXTRA_ROOTS_ENV, "")
    return [p for p in value.split(os.pathsep) if p.strip()]


def check_read_path(path: "str | os.PathLike", roots: Iterable["str | os.PathLike"]) -> Path:
    """``path`` fully resolved, if it lies inside one of ``roots`` (also resolved); else PathNotAllowed.

    The refusal leads with what to do: copy the file into the first root (a server's input folder, where
    the file lists show it); then why, in one line. The roots are counted, not listed: a ComfyUI server
    has dozens of model folders, and their list buried the advice."""
    resolved = Path(os.path.expanduser(os.fspath(path))).resolve()
    allowed = []
    for root in roots:
        r = Path(os.path.expanduser(os.fspath(root))).resolve()
        if r not in allowed:
            allowed.append(r)
    if any(resolved == r or resolved.is_relative_to(r) for r in allowed):
        return resolved
    where = f"into {allowed[0]}" if allowed else "into a folder this server reads"
    others = f" and the {len(allowed) - 1} other folder{'s' if len(allowed) > 2 else ''} this server reads" if len(allowed) > 1 else ""
    shown = str(path) if Path(os.fspath(path)) == resolved else f"{path} (which resolves to {resolved})"
    raise PathNotAllowed(
        f"Copy {resolved.name} {where} (then pick it from the list): {shown} is outside that folder{others}. "
        f"To read it where it is, the server operator adds its folder to {EXTRA_ROOTS_ENV}.")
