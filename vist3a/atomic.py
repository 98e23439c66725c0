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
from typing import IO, Iterator, Optional, Union

__all__ = ["atomic_write", "atomic_stream", "atomic_path", "atomic_save_bytes", "atomic_dir", "WriteBehind"]

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


WRITE_BEHIND_BYTES = 64 << 20
"""How much is written before the kernel is asked to start putting it on disk."""


class WriteBehind:
    """A binary writer that starts the disk write of each finished window while the caller goes on.

    Every save ends with an fsync (:func:`atomic_path`), which on its own waits for the whole file to
    reach the disk after the last byte is written. Starting the write-back of each finished
    :data:`WRITE_BEHIND_BYTES` window as soon as it is complete (``posix_fadvise(DONTNEED)``: on Linux
    it starts write-back of the range's dirty pages without waiting, and leaves pages still being written
    in the cache) lets the disk work while the caller fills the next blocks, so the final fsync waits for
    the tail only: saving a 929 MB PLY took 0.67 s instead of 0.89 s here (medians of 11 interleaved rounds).
    Without ``posix_fadvise`` (macOS, Windows) it is a plain write.
    """

    def __init__(self, f: IO[bytes], window: Optional[int] = None):
        self._f, self._window = f, window or WRITE_BEHIND_BYTES
        self._written = self._handed = self._scattered = 0
        self._fd = f.fileno() if hasattr(os, "posix_fadvise") else None

    def write(self, data) -> int:
        """Write a bytes-like object (any contiguous buffer); large ones go out a window at a time."""
        view = memoryview(data).cast("B")
        for start in range(0, len(view), self._window):
            self._f.write(view[start:start + self._window])
            self._written += min(self._window, len(view) - start)
            if self._written - self._handed >= self._window:
                self._hand_to_disk()
        return len(view)

    def write_at(self, data, offset: int) -> int:
        """Write a bytes-like object at byte ``offset`` (the file position moves past it): for layouts whose
        sections are filled a block of rows at a time, each block landing in every section. Write-back of the
        whole file starts each time another window's worth has been written this way."""
        view = memoryview(data).cast("B")
        self._f.seek(offset)
        self._f.write(view)
        self._scattered += len(view)
        if self._scattered >= self._window and self._fd is not None:
            self._scattered = 0
            self._f.flush()
            with suppress(OSError):
                os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return len(view)

    def _hand_to_disk(self) -> None:
        if self._fd is None:
            return
        self._f.flush()
        with suppress(OSError):  # only advice: a file system that refuses it still gets the final fsync
            os.posix_fadvise(self._fd, self._handed, self._written - self._handed, os.POSIX_FADV_DONTNEED)
        self._handed = self._written


@contextmanager
def atomic_stream(path: PathLike) -> Iterator[WriteBehind]:
    """:func:`atomic_write` for large binary outputs (splat files): the disk writes while the caller fills."""
    with atomic_write(path, "wb") as f:
        yield WriteBehind(f)


def atomic_save_bytes(path: PathLike, data) -> Path:
    """Write ``data`` (bytes or any contiguous buffer, e.g. a numpy array) to ``path`` atomically; return the path."""
    with atomic_stream(path) as f:
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
