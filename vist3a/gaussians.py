"""The Gaussians container for one scene, and its file formats (3DGS PLY, antimatter15 .splat).

One :class:`Gaussians` holds ONE scene. A batch is a plain ``list[Gaussians]``: AnySplat's voxelisation
leaves a different number of Gaussians per scene, so padding to a batch dim would need masks everywhere.

Conventions (shared by the renderer, the PLY writer and the nodes):

* ``means`` [N, 3] world positions.
* ``scales`` [N, 3] linear standard deviations (the PLY stores their log).
* ``rotations`` [N, 4] unit quaternions in **wxyz** order (3DGS, gsplat and the PLY use wxyz;
  AnySplat produces xyzw, see :func:`xyzw_to_wxyz` and :meth:`Gaussians.from_xyzw`).
* ``opacities`` [N] in (0, 1) (the PLY stores their logit).
* ``sh`` [N, 3, (deg+1)^2] real SH coefficients, channel-major like AnySplat: ``sh[:, c, k]``.
  Colours follow 3DGS: ``rgb = 0.5 + SH_C0 * sh[:, :, 0]`` for the view-independent part.
* ``covariances`` [N, 3, 3] optional (AnySplat returns them); derived data, not saved to files.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch
from plyfile import PlyData, PlyElementParseError, PlyHeaderParseError

from . import ply_binary
from .atomic import atomic_save_bytes, atomic_stream
from .errors import PlyError

__all__ = [
    "SH_C0",
    "VIEWER_SH_DEGREE",
    "Gaussians",
    "PlyError",
    "xyzw_to_wxyz",
    "wxyz_to_xyzw",
    "rgb_to_sh0",
    "sh_degree_from_bases",
    "OPACITY_MODES",
    "PlyScene",
    "save_ply",
    "read_ply",
    "load_ply",
    "save_splat",
    "load_splat",
]

SH_C0 = 0.28209479177387814
"""Degree-0 real SH basis constant, 1 / (2 sqrt(pi))."""

VIEWER_SH_DEGREE = 3
"""Default SH degree of the PLYs we write: the highest the common viewers read (3DGS SIBR viewer,
PlayCanvas splat-transform / SuperSplat, Spark in ComfyUI's frontend all stop at 45 ``f_rest``)."""

PathLike = Union[str, os.PathLike]



def xyzw_to_wxyz(q: torch.Tensor) -> torch.Tensor:
    """Reorder quaternions [..., 4] from xyzw (AnySplat, pixelSplat) to wxyz (3DGS, gsplat, PLY)."""
    return q[..., [3, 0, 1, 2]]


def wxyz_to_xyzw(q: torch.Tensor) -> torch.Tensor:
    """Reorder quaternions [..., 4] from wxyz to xyzw."""
    return q[..., [1, 2, 3, 0]]


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """The degree-0 SH coefficient that renders as ``rgb`` (inverse of 0.5 + SH_C0 * sh0)."""
    return (rgb - 0.5) / SH_C0


def sh_degree_from_bases(num_bases: int) -> int:
    """SH degree d for (d+1)^2 basis functions; ValueError if ``num_bases`` is not a square."""
    degree = math.isqrt(max(num_bases, 0)) - 1
    if degree < 0 or (degree + 1) ** 2 != num_bases:
        raise ValueError(f"{num_bases} SH coefficients per channel is not (degree+1)^2 for any degree")
    return degree


@dataclass(frozen=True, eq=False)
class Gaussians:
    """3D Gaussian splats of one scene; see the module docstring for shapes and conventions.

    Shapes are checked on construction (cheap); values are checked by :meth:`validate` (which
    synchronises with the device, so it is not done implicitly). Instances compare by identity.
    """

    means: torch.Tensor
    scales: torch.Tensor
    rotations: torch.Tensor
    opacities: torch.Tensor
    sh: torch.Tensor
    covariances: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, torch.Tensor) and not (value is None and f.name == "covariances"):
                raise TypeError(f"Gaussians.{f.name} must be a torch.Tensor, got {type(value).__name__}")
        if self.means.ndim != 2 or self.means.shape[1] != 3:
            raise ValueError(f"Gaussians.means must have shape [N, 3], got {list(self.means.shape)}")
        n = self.means.shape[0]
        expected = {"scales": (n, 3), "rotations": (n, 4), "opacities": (n,), "covariances": (n, 3, 3)}
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(
                    f"Gaussians.{name} must have shape {list(shape)} (N={n}), got {list(value.shape)}"
                )
        if self.sh.ndim != 3 or self.sh.shape[:2] != (n, 3):
            raise ValueError(
                f"Gaussians.sh must have shape [N, 3, (deg+1)^2] (channel-major) with N={n}, "
                f"got {list(self.sh.shape)}"
            )
        sh_degree_from_bases(self.sh.shape[2])

    @classmethod
    def from_xyzw(
        cls,
        means: torch.Tensor,
        scales: torch.Tensor,
        rotations_xyzw: torch.Tensor,
        opacities: torch.Tensor,
        sh: torch.Tensor,
        covariances: Optional[torch.Tensor] = None,
    ) -> "Gaussians":
        """Build from AnySplat-style fields whose quaternions are xyzw."""
        return cls(means, scales, xyzw_to_wxyz(rotations_xyzw), opacities, sh, covariances)

    @property
    def num(self) -> int:
        """Number of Gaussians N."""
        return self.means.shape[0]

    def __len__(self) -> int:
        return self.num

    @property
    def sh_degree(self) -> int:
        """Spherical-harmonics degree (0..4 in practice)."""
        return sh_degree_from_bases(self.sh.shape[2])

    @property
    def device(self) -> torch.device:
        return self.means.device

    def rgb(self) -> torch.Tensor:
        """View-independent colour [N, 3] (unclamped) from the degree-0 SH term."""
        return 0.5 + SH_C0 * self.sh[:, :, 0]

    def _map(self, fn) -> "Gaussians":
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Gaussians(**{k: None if v is None else fn(v) for k, v in values.items()})

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "Gaussians":
        """Move to ``device`` and/or cast the (floating) fields to ``dtype``."""
        return self._map(lambda t: t.to(device=device, dtype=dtype if t.is_floating_point() else None))

    def detach(self) -> "Gaussians":
        """A copy cut from the autograd graph (for saving or previewing during training)."""
        return self._map(torch.Tensor.detach)

    def select(self, index: torch.Tensor) -> "Gaussians":
        """Gaussians picked by a boolean mask [N] or an index tensor."""
        return self._map(lambda t: t[index])

    def prune(
        self, min_opacity: Optional[float] = None, keep_mask: Optional[torch.Tensor] = None
    ) -> "Gaussians":
        """Drop Gaussians with opacity below ``min_opacity`` and/or where ``keep_mask`` is False."""
        keep = torch.ones(self.num, dtype=torch.bool, device=self.device)
        if keep_mask is not None:
            if keep_mask.shape != (self.num,) or keep_mask.dtype != torch.bool:
                raise ValueError(
                    f"keep_mask must be a bool tensor of shape [{self.num}], "
                    f"got {keep_mask.dtype} {list(keep_mask.shape)}"
                )
            keep &= keep_mask.to(self.device)
        if min_opacity is not None:
            keep &= self.opacities >= min_opacity
        return self.select(keep)

    def truncate_sh(self, degree: int) -> "Gaussians":
        """Keep SH bands 0..``degree`` (e.g. 3 for viewers that stop at degree 3)."""
        if not 0 <= degree <= self.sh_degree:
            raise ValueError(
                f"cannot truncate SH to degree {degree}: these Gaussians have degree {self.sh_degree}"
            )
        return dataclasses.replace(self, sh=self.sh[:, :, : (degree + 1) ** 2])

    def validate(self) -> "Gaussians":
        """Check values (finite, opacities in [0, 1], scales >= 0, unit quaternions); return self."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or _all_finite(value):
                continue
            if not bool(torch.isfinite(value).all()):
                bad = int((~torch.isfinite(value)).sum())
                raise ValueError(f"Gaussians.{f.name} has {bad} non-finite values (NaN or inf)")
        if self.num == 0:
            return self
        if bool((self.opacities < 0).any() | (self.opacities > 1).any()):
            lo, hi = float(self.opacities.min()), float(self.opacities.max())
            raise ValueError(f"Gaussians.opacities must lie in [0, 1], got range [{lo:g}, {hi:g}]")
        if bool((self.scales < 0).any()):
            low = float(self.scales.min())
            raise ValueError(f"Gaussians.scales must be >= 0 (linear, not log), min is {low:g}")
        norms = self.rotations.float().norm(dim=-1)
        if bool(((norms - 1).abs() > 1e-2).any()):
            raise ValueError(
                "Gaussians.rotations must be unit quaternions (wxyz), "
                f"norms range [{float(norms.min()):g}, {float(norms.max()):g}]"
            )
        return self


def _all_finite(t: torch.Tensor) -> bool:
    """Cheap screen: the sum of finite values is finite unless it overflows, so a finite sum means no NaN/inf
    without materialising an N-element mask (measured ~30x faster than isfinite().all() on CPU); a
    non-finite sum (a bad value, or a rare overflow) goes to the exact check."""
    if not t.is_floating_point() or t.numel() == 0:
        return False
    return bool(torch.isfinite(t.sum()))


# --------------------------------------------------------------------------------------------- PLY

_BASE_PROPS = ["x", "y", "z"]
_NORMALS = ["nx", "ny", "nz"]
_DC = ["f_dc_0", "f_dc_1", "f_dc_2"]
_TAIL = ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
_REQUIRED = _BASE_PROPS + _DC + _TAIL


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def cpu_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached, as float32 on the CPU (what every file writer encodes from)."""
    return t.detach().to(device="cpu", dtype=torch.float32)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return cpu_float32(t).numpy()


def save_ply(g: Gaussians, path: PathLike, sh_degree: Optional[int] = None) -> Path:
    """Write ``g`` as a standard 3DGS PLY (binary little-endian), atomically; return the path.

    Layout: x y z nx ny nz f_dc_0..2 f_rest_* opacity(logit) scale_0..2(log) rot_0..3(wxyz),
    f_rest channel-major exactly like the original 3DGS code. ``sh_degree`` truncates the SH bands
    written (many viewers only read up to degree 3); by default all bands are written. The body is
    filled and written in blocks of rows (disk speed, little memory).
    """
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
            block[:, 9 + m] = _logit(opacities[start:stop])
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


# ------------------------------------------------------------------------------------------ .splat


def save_splat(g: Gaussians, path: PathLike) -> Path:
    """Write the compact antimatter15 ``.splat`` format (32 bytes per Gaussian), atomically.

    Per Gaussian: position f32x3, scale f32x3 (linear), RGBA u8x4 (colour from SH degree 0, alpha =
    opacity), rotation u8x4 (unit wxyz quaternion * 128 + 128). Sorted by descending
    scale-product * opacity like the reference converter, so viewers stream big splats first.
    """
    g.validate()
    scales, opacity = cpu_float32(g.scales), cpu_float32(g.opacities)
    importance = scales[:, 0] * scales[:, 1] * scales[:, 2] * opacity  # >= 0: its bit patterns sort like it
    # stable descending = stable ascending of the negated bit patterns (>= 0, so no overflow); torch radix-sorts
    # ascending integer keys only (a descending sort took 4.5x longer)
    order = torch.sort(importance.view(torch.int32).neg(), stable=True).indices
    n = g.num
    record = torch.empty(n, 8, dtype=torch.float32)  # 32 bytes: position, scale, then 8 bytes of u8
    record[:, 0:3] = cpu_float32(g.means)
    record[:, 3:6] = scales
    packed = record.view(torch.uint8)[:, 24:]
    rgba = torch.cat([0.5 + SH_C0 * cpu_float32(g.sh[:, :, 0]), opacity[:, None]], dim=1)
    packed[:, 0:4] = rgba.mul_(255).clamp_(0, 255).to(torch.uint8)  # truncating, as the reference converter
    rot = cpu_float32(g.rotations)
    rot = rot / torch.linalg.vector_norm(rot, dim=1, keepdim=True)
    packed[:, 4:8] = rot.mul_(128).add_(128).clamp_(0, 255).to(torch.uint8)
    return atomic_save_bytes(path, record.index_select(0, order).numpy())  # one gather of whole records


_SPLAT_RECORD = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])


def load_splat(path: PathLike) -> Gaussians:
    """Read an antimatter15 ``.splat`` (32 bytes per Gaussian, no header) into float32 CPU Gaussians.

    Colour and opacity come back quantised to 8 bits, rotations to 1/128; SH degree 0.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0 or size % _SPLAT_RECORD.itemsize:
        raise PlyError(f"{path} is not a .splat file: its size ({size} bytes) is not a positive multiple of 32")
    raw = torch.from_numpy(np.fromfile(path, dtype=np.uint8)).view(-1, 32)  # torch: threaded conversions
    floats = raw.view(torch.float32)  # [N, 8]: position, scale, then the 8 bytes of u8
    means, scales = floats[:, 0:3].clone(), floats[:, 3:6].clone()
    for name, values in (("positions", means), ("scales", scales)):
        if not bool(torch.isfinite(values).all()):
            raise PlyError(f"{path} has {int((~torch.isfinite(values)).sum())} non-finite {name}; it is not a valid .splat")
    if bool((scales < 0).any()):
        raise PlyError(f"{path} has negative scales; it is not a valid .splat (scales are stored linear)")
    rot = raw[:, 28:32].float().sub_(128.0).div_(128.0)
    norms = torch.linalg.vector_norm(rot, dim=1, keepdim=True)
    if bool((norms <= 1e-6).any()):
        raise PlyError(f"{path} has {int((norms <= 1e-6).sum())} zero-length rotation quaternions")
    rgba = raw[:, 24:28].float().div_(255.0)
    return Gaussians(
        means=means,
        scales=scales,
        rotations=rot.div_(norms),
        opacities=rgba[:, 3].contiguous(),
        sh=rgba[:, :3].sub(0.5).div_(SH_C0)[:, :, None],
    )
