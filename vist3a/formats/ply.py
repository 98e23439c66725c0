"""The standard 3DGS PLY: binary little-endian writer, binary/ASCII reader, and the official exporter's variant.

Layout: x y z nx ny nz f_dc_0..2 f_rest_* opacity scale_0..2 rot_0..3 (wxyz), f_rest channel-major as
the original 3DGS code writes it; opacity is stored as a logit and scales as logs, except in PLYs of the
official VIST3A/AnySplat exporter (DC only, opacity linear), which :func:`read_ply` recognises.
"""

from __future__ import annotations

import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from plyfile import PlyData, PlyElementParseError, PlyHeaderParseError

from ..atomic import atomic_stream
from ..errors import PlyError
from ..gaussians import Gaussians
from . import ply_binary
from .common import PathLike, cpu_float32

__all__ = ["OPACITY_MODES", "PlyError", "PlyScene", "save_ply", "read_ply", "load_ply"]

_BASE_PROPS = ["x", "y", "z"]
_NORMALS = ["nx", "ny", "nz"]
_DC = ["f_dc_0", "f_dc_1", "f_dc_2"]
_TAIL = ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
_REQUIRED = _BASE_PROPS + _DC + _TAIL


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return cpu_float32(t).numpy()


PLY_LAYOUTS = ("standard", "official")


def save_ply(g: Gaussians, path: PathLike, sh_degree: Optional[int] = None, layout: str = "standard") -> Path:
    """Write ``g`` as a standard 3DGS PLY (binary little-endian), atomically; return the path.

    Layout: x y z nx ny nz f_dc_0..2 f_rest_* opacity(logit) scale_0..2(log) rot_0..3(wxyz),
    f_rest channel-major exactly like the original 3DGS code. ``sh_degree`` truncates the SH bands
    written (many viewers only read up to degree 3); by default all bands are written. The body is
    filled and written in blocks of rows (disk speed, little memory).

    ``layout="official"`` writes what the official exporter (AnySplat's ``export_ply`` with
    ``save_sh_dc_only``, as inference_t23d.py calls it) writes: the same properties without ``f_rest_*`` and
    the opacity *linear* in [0, 1] (not a logit). Common viewers misread such files; :func:`read_ply` detects them.
    """
    if layout not in PLY_LAYOUTS:
        raise ValueError(f"PLY layout must be one of {', '.join(PLY_LAYOUTS)}, got {layout!r}")
    official = layout == "official"
    if official:
        sh_degree = 0
    if sh_degree is not None:
        g = g.truncate_sh(sh_degree)
    g.validate()
    n = g.num
    if n == 0:
        raise ValueError(f"refusing to write {path}: there are no Gaussians to save (all pruned?)")
    sh = _to_numpy(g.sh)
    means, opacities, scales, rotations = (_to_numpy(t) for t in (g.means, g.opacities, g.scales, g.rotations))
    k = sh.shape[2]
    m = 3 * (k - 1)
    names = _BASE_PROPS + _NORMALS + _DC + [f"f_rest_{i}" for i in range(m)] + _TAIL
    # Block by block, each filled while in cache: the whole table (as large as the file) never sits in
    # memory. Two buffers take turns: a worker thread hands one to the file while the next is filled
    # (the write system call copies ~1 GB into the page cache, as long again as filling it).
    rows = max(1, ply_binary.CHUNK_BYTES // (4 * len(names)))
    buffers = [np.empty((min(rows, n), len(names)), dtype="<f4") for _ in range(2)]
    for table in buffers:
        table[:, 3:6] = 0.0
    with atomic_stream(path) as f, ThreadPoolExecutor(1, thread_name_prefix="save_ply") as writer:
        f.write(ply_binary.header_bytes(n, names))
        pending: list = [None, None]
        for i, start in enumerate(range(0, n, rows)):
            turn = i % 2
            if pending[turn] is not None:
                pending[turn].result()  # this buffer is on disk (page cache) again; raises the write's error
            block, stop = buffers[turn][:min(rows, n - start)], min(start + rows, n)
            block[:, 0:3] = means[start:stop]
            block[:, 6:9] = sh[start:stop, :, 0]
            if m:  # channel-major, as 3DGS: f_rest_{c*(K-1)+j} = sh[:, c, 1+j]
                np.copyto(block[:, 9:9 + m].reshape(-1, 3, k - 1), sh[start:stop, :, 1:])
            block[:, 9 + m] = opacities[start:stop] if official else _logit(opacities[start:stop])
            block[:, 10 + m:13 + m] = np.log(np.maximum(scales[start:stop].astype(np.float64), 1e-30))
            block[:, 13 + m:17 + m] = rotations[start:stop]
            pending[turn] = writer.submit(ply_binary.write_table, f, block)
        for job in pending:
            if job is not None:
                job.result()
    return Path(path)


def _read_plydata(path: Path) -> PlyData:
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic.startswith(b"ply") or magic[3:4] not in (b"\n", b"\r"):
        raise PlyError(f"{path} is not a PLY file (it does not start with the 'ply' magic line)")
    try:
        return PlyData.read(str(path), mmap=False)
    except PlyHeaderParseError as e:
        raise PlyError(f"{path} has a malformed or truncated PLY header ({e})") from e
    except PlyElementParseError as e:
        raise PlyError(f"{path} is truncated or corrupt: {e}") from e
    except (ValueError, EOFError, OSError) as e:
        raise PlyError(f"{path} could not be parsed as PLY ({type(e).__name__}: {e})") from e


OPACITY_MODES = ("auto", "logit", "linear")
"""How a PLY's ``opacity`` is read: ``logit`` (standard 3DGS), ``linear`` (the official VIST3A/AnySplat
exporter, DC only), or ``auto``: linear when the file has no ``f_rest_*`` and every opacity lies in [0, 1]."""


@dataclass(frozen=True)
class PlyScene:
    """What :func:`read_ply` found: the Gaussians and how the file stored opacity."""

    gaussians: Gaussians
    opacity: str  # "logit" or "linear"
    detected: bool  # True when "auto" chose the convention, False when it was forced

    def note(self) -> Optional[str]:
        """One line for the user when a file was recognised as the official (linear opacity) layout."""
        if self.opacity != "linear" or not self.detected:
            return None
        return ("read as the official VIST3A/AnySplat PLY layout (DC colour only, opacity stored linear in [0, 1], "
                "not as a logit); force the standard reading with opacity 'logit' if that is wrong")


def load_ply(path: PathLike, opacity: str = "auto", report: Optional[Callable[[str], None]] = None) -> Gaussians:
    """Read a 3DGS PLY (binary or ASCII) into float32 CPU :class:`Gaussians`.

    ``opacity`` is one of :data:`OPACITY_MODES`; ``report`` receives one line (prefixed with the path)
    when an official-layout file is auto-detected. See :func:`read_ply`.
    """
    scene = read_ply(path, opacity=opacity)
    note = scene.note()
    if note and report is not None:
        report(f"{path}: {note}")
    return scene.gaussians


def read_ply(path: PathLike, opacity: str = "auto") -> PlyScene:
    """Read a 3DGS PLY (binary or ASCII) into float32 CPU :class:`Gaussians` plus its opacity convention.

    The SH degree is inferred from the number of f_rest_* properties; normals are ignored and may be
    absent; rotations are normalised. Opacity follows ``opacity`` (:data:`OPACITY_MODES`). Raises
    :class:`PlyError` naming the file for anything that is not a readable 3DGS PLY, and
    ``FileNotFoundError`` if the file does not exist.
    """
    if opacity not in OPACITY_MODES:
        raise ValueError(f"opacity must be one of {', '.join(OPACITY_MODES)}, got {opacity!r}")
    path = Path(path)
    header = ply_binary.read_header(path, PlyError)
    vertex = header.element("vertex")
    if vertex is None:
        raise PlyError(f"{path} has no 'vertex' element, so it holds no Gaussians")
    table = ply_binary.vertex_table(path, header, PlyError)
    if table is None:  # ASCII (or an exotic layout): plyfile
        table = _read_plydata(path)["vertex"].data
    if vertex.count == 0 or len(table) == 0:
        raise PlyError(f"{path} has zero vertices, so there are no Gaussians to load")
    present = set(table.dtype.names or ())
    missing = [name for name in _REQUIRED if name not in present]
    if missing:
        raise PlyError(
            f"{path} is not a 3D Gaussian splat PLY: it is missing the properties {', '.join(missing)}"
        )
    degree = _rest_degree(path, present)
    k = (degree + 1) ** 2
    rest_names = [f"f_rest_{i}" for i in range(3 * (k - 1))]
    n = len(table)

    sh = np.empty((n, 3, k), dtype=np.float32)
    means = np.empty((n, 3), dtype=np.float32)
    scales = np.empty((n, 3), dtype=np.float32)
    rotations = np.empty((n, 4), dtype=np.float32)
    stored = np.empty(n, dtype=np.float64)  # opacity as stored; its convention needs every row first
    finite, zero_rotations = True, 0
    # Block by block, so every copy and conversion runs on rows still in cache (float64 maths as before).
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # bad values are reported below
        for start, rows in ply_binary.row_chunks(table):
            columns, stop = _Columns(rows), start + len(rows)
            block = slice(start, stop)
            sh[block, :, 0] = columns.take(_DC)
            if rest_names:
                sh[block, :, 1:] = columns.take(rest_names).reshape(stop - start, 3, k - 1)
            means[block] = columns.take(_BASE_PROPS)
            tail = columns.take(_TAIL).astype(np.float64)  # opacity, log scales, wxyz
            stored[block] = tail[:, 0]
            scales[block] = np.exp(tail[:, 1:4])  # inf where it overflows float32: reported below
            norms = np.sqrt(np.einsum("ij,ij->i", tail[:, 4:8], tail[:, 4:8]))
            zero_rotations += int((norms <= 1e-12).sum())
            rotations[block] = tail[:, 4:8] / norms[:, None]
            finite = finite and bool(np.isfinite(sh[block].sum()) and np.isfinite(means[block]).all() and np.isfinite(tail).all())
    if not finite:  # a sum can overflow without a bad value: the exact check names the property
        for name in _REQUIRED + rest_names:  # the first bad property, in header-independent order
            bad = int((~np.isfinite(np.asarray(table[name]))).sum())
            if bad:
                raise PlyError(f"{path} has {bad} non-finite values (NaN or inf) in property '{name}'")
    if zero_rotations:
        raise PlyError(f"{path} has {zero_rotations} zero-length rotation quaternions")
    convention = _opacity_convention(path, opacity, stored, has_rest=bool(rest_names))
    if not np.isfinite(scales).all():
        raise PlyError(f"{path} has log-scales too large to represent (exp overflows float32)")
    with np.errstate(over="ignore"):
        alpha = stored if convention == "linear" else 1.0 / (1.0 + np.exp(-stored))

    g = Gaussians(
        means=torch.from_numpy(means),
        scales=torch.from_numpy(scales),
        rotations=torch.from_numpy(rotations),
        opacities=torch.from_numpy(alpha.astype(np.float32)),
        sh=torch.from_numpy(sh),
    )
    return PlyScene(g, convention, detected=opacity == "auto")


class _Columns:
    """Named columns of a vertex table as [N, len(names)] arrays: a zero-copy slice when the table is one
    float type and the names are consecutive properties (the standard layout), else a gathered copy."""

    def __init__(self, table: np.ndarray):
        self.table = table
        names = table.dtype.names
        types = {table.dtype.fields[name][0] for name in names}
        self.index = {name: i for i, name in enumerate(names)}
        self.flat = None
        if len(types) == 1 and next(iter(types)).kind == "f" and table.dtype.itemsize == len(names) * next(iter(types)).itemsize:
            self.flat = table.view(next(iter(types))).reshape(len(table), len(names))

    def take(self, names: list) -> np.ndarray:
        if self.flat is not None:
            idx = [self.index[name] for name in names]
            if idx == list(range(idx[0], idx[0] + len(idx))):
                return self.flat[:, idx[0]:idx[0] + len(idx)]
            return self.flat[:, idx]
        return np.stack([np.asarray(self.table[name], dtype=np.float64) for name in names], axis=1)


def _opacity_convention(path: Path, mode: str, stored: np.ndarray, has_rest: bool) -> str:
    """Resolve ``mode`` for a file's stored opacity column (checked finite)."""
    lo, hi = float(stored.min()), float(stored.max())
    in_unit = lo >= 0.0 and hi <= 1.0
    if mode == "auto":
        return "linear" if in_unit and not has_rest else "logit"
    if mode == "linear" and not in_unit:
        raise PlyError(
            f"{path} stores opacities from {lo:g} to {hi:g}, outside [0, 1], so they cannot be linear; "
            "read it with opacity 'logit' or 'auto'"
        )
    return mode


def _rest_degree(path: Path, present: set) -> int:
    indices = sorted(int(m.group(1)) for name in present if (m := re.fullmatch(r"f_rest_(\d+)", name)))
    count = len(indices)
    degree = math.isqrt(count // 3 + 1) - 1
    if count % 3 or (degree + 1) ** 2 - 1 != count // 3 or indices != list(range(count)):
        raise PlyError(
            f"{path} has {count} f_rest_* properties; a 3DGS PLY has 3*((d+1)^2-1) of them, "
            "numbered from 0 (0, 9, 24, 45 or 72 for SH degree 0..4)"
        )
    return degree
