"""Atomic file output: a crash, a full disk or an exception never leaves a half-written file.

Everything the project saves (PLY, .splat, previews, videos) goes through here, so a reader
(a viewer, ComfyUI, a resumed run) sees either the old file or the complete new one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Iterator, Union

__all__ = ["atomic_write", "atomic_path", "atomic_save_bytes", "atomic_dir"]

PathLike = Union[str, os.PathLike]


def _read_umask() -> int:
    # mkstemp creates files 0600; the final file should get the usual permissions instead.
    # Read once at import (os.umask can only be read by setting it).
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _target(path: PathLike) -> Path:
    path = Path(path)
    directory = path.parent
    if not directory.is_dir():
        raise FileNotFoundError(
            f"output directory {directory} does not exist; create it or choose another -o"
        )
    return path


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable. Best effort: not possible on Windows or some network file
    # systems, and the file is already complete in place by now.
    if os.name != "posix":
        return
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def atomic_path(path: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; it replaces ``path`` only if the block succeeds.

    For writers that insist on a file name (e.g. ffmpeg). ``suffix`` lets them pick a format by
    extension. The temporary file is removed on any exception.
    """
    target = _target(path)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_directory(target.parent)
    except BaseException:
        with suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextmanager
def atomic_write(path: PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file for writing; on success it is fsynced and renamed onto ``path``.

    ``mode`` is "wb" (default) or "w"/"wt" for text. On any exception inside the block the
    temporary file is deleted and ``path`` is left untouched (absent if it did not exist).
    """
    if mode not in ("wb", "w", "wt"):
        raise ValueError(f"atomic_write supports modes 'wb', 'w' and 'wt', not {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as f:
            yield f


def atomic_save_bytes(path: PathLike, data) -> Path:
    """Write ``data`` (bytes or any contiguous buffer, e.g. a numpy array) to ``path`` atomically; return the path."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


@contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; it becomes ``path`` only if the block succeeds.

    For outputs made of several files (exports, training checkpoints): a reader sees the old folder
    or the complete new one. An existing folder is moved aside first and deleted after the swap.
    """
    target = _target(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
        _fsync_directory(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
