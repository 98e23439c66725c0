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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch
from plyfile import PlyData, PlyElement, PlyElementParseError, PlyHeaderParseError

from .atomic import atomic_save_bytes, atomic_write
from .errors import VIST3AError

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


class PlyError(VIST3AError, ValueError):
    """A PLY file cannot be read as 3D Gaussian splats; the message names the file and the problem."""


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
            if value is not None and not bool(torch.isfinite(value).all()):
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


# --------------------------------------------------------------------------------------------- PLY

_BASE_PROPS = ["x", "y", "z"]
_NORMALS = ["nx", "ny", "nz"]
_DC = ["f_dc_0", "f_dc_1", "f_dc_2"]
_TAIL = ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
_REQUIRED = _BASE_PROPS + _DC + _TAIL


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float32).numpy()


def save_ply(g: Gaussians, path: PathLike, sh_degree: Optional[int] = None) -> Path:
    """Write ``g`` as a standard 3DGS PLY (binary little-endian), atomically; return the path.

    Layout: x y z nx ny nz f_dc_0..2 f_rest_* opacity(logit) scale_0..2(log) rot_0..3(wxyz),
    f_rest channel-major exactly like the original 3DGS code. ``sh_degree`` truncates the SH bands
    written (many viewers only read up to degree 3); by default all bands are written.
    """
    if sh_degree is not None:
        g = g.truncate_sh(sh_degree)
    g.validate()
    n = g.num
    if n == 0:
        raise ValueError(f"refusing to write {path}: there are no Gaussians to save (all pruned?)")
    sh = _to_numpy(g.sh)
    rest = sh[:, :, 1:].reshape(n, -1)
    names = _BASE_PROPS + _NORMALS + _DC + [f"f_rest_{i}" for i in range(rest.shape[1])] + _TAIL
    columns = [
        _to_numpy(g.means),
        np.zeros((n, 3), np.float32),
        sh[:, :, 0],
        rest,
        _logit(_to_numpy(g.opacities))[:, None],
        np.log(np.maximum(_to_numpy(g.scales).astype(np.float64), 1e-30)),
        _to_numpy(g.rotations),
    ]
    flat = np.ascontiguousarray(np.concatenate(columns, axis=1), dtype="<f4")  # [N, properties]
    table = flat.view(np.dtype([(name, "<f4") for name in names]))[:, 0]  # same bytes, one record a row
    element = PlyElement.describe(table, "vertex")
    with atomic_write(path, "wb") as f:
        PlyData([element], text=False, byte_order="<").write(f)
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
    ply = _read_plydata(path)
    if "vertex" not in ply:
        raise PlyError(f"{path} has no 'vertex' element, so it holds no Gaussians")
    vertex = ply["vertex"]
    if vertex.count == 0:
        raise PlyError(f"{path} has zero vertices, so there are no Gaussians to load")
    present = {p.name for p in vertex.properties}
    missing = [name for name in _REQUIRED if name not in present]
    if missing:
        raise PlyError(
            f"{path} is not a 3D Gaussian splat PLY: it is missing the properties {', '.join(missing)}"
        )
    degree = _rest_degree(path, present)
    rest_names = [f"f_rest_{i}" for i in range(3 * ((degree + 1) ** 2 - 1))]
    data = vertex.data
    for name in _REQUIRED + rest_names:
        column = np.asarray(data[name])
        if not np.isfinite(column).all():
            bad = int((~np.isfinite(column)).sum())
            raise PlyError(f"{path} has {bad} non-finite values (NaN or inf) in property '{name}'")

    def stack(names) -> np.ndarray:
        return np.stack([np.asarray(data[name], dtype=np.float64) for name in names], axis=1)

    n = vertex.count
    dc = stack(_DC)
    rest = stack(rest_names).reshape(n, 3, -1) if rest_names else np.zeros((n, 3, 0))
    rotations = stack(["rot_0", "rot_1", "rot_2", "rot_3"])
    norms = np.linalg.norm(rotations, axis=1, keepdims=True)
    if (norms <= 1e-12).any():
        raise PlyError(f"{path} has {int((norms <= 1e-12).sum())} zero-length rotation quaternions")
    stored = np.asarray(data["opacity"], dtype=np.float64)
    convention = _opacity_convention(path, opacity, stored, has_rest=bool(rest_names))
    with np.errstate(over="ignore"):
        scales = np.exp(stack(["scale_0", "scale_1", "scale_2"]))
        alpha = stored if convention == "linear" else 1.0 / (1.0 + np.exp(-stored))
    if not np.isfinite(scales.astype(np.float32)).all():
        raise PlyError(f"{path} has log-scales too large to represent (exp overflows float32)")

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    g = Gaussians(
        means=tensor(stack(_BASE_PROPS)),
        scales=tensor(scales),
        rotations=tensor(rotations / norms),
        opacities=tensor(alpha),
        sh=tensor(np.concatenate([dc[:, :, None], rest], axis=2)),
    )
    return PlyScene(g, convention, detected=opacity == "auto")


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
    means = _to_numpy(g.means)
    scales = _to_numpy(g.scales)
    opacity = _to_numpy(g.opacities)
    rgb = 0.5 + SH_C0 * _to_numpy(g.sh[:, :, 0])
    rot = _to_numpy(g.rotations)
    rot = rot / np.linalg.norm(rot, axis=1, keepdims=True)
    order = np.argsort(-(scales.prod(axis=1) * opacity), kind="stable")
    rgba = np.concatenate([rgb, opacity[:, None]], axis=1)
    record = np.empty(
        g.num, dtype=[("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)]
    )
    record["position"] = means[order]
    record["scale"] = scales[order]
    record["rgba"] = np.clip(rgba[order] * 255, 0, 255).astype(np.uint8)
    record["rot"] = np.clip(rot[order] * 128 + 128, 0, 255).astype(np.uint8)
    return atomic_save_bytes(path, record.tobytes())


_SPLAT_RECORD = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])


def load_splat(path: PathLike) -> Gaussians:
    """Read an antimatter15 ``.splat`` (32 bytes per Gaussian, no header) into float32 CPU Gaussians.

    Colour and opacity come back quantised to 8 bits, rotations to 1/128; SH degree 0.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0 or size % _SPLAT_RECORD.itemsize:
        raise PlyError(f"{path} is not a .splat file: its size ({size} bytes) is not a positive multiple of 32")
    rec = np.fromfile(path, dtype=_SPLAT_RECORD)
    means, scales = rec["position"], rec["scale"]
    for name, values in (("positions", means), ("scales", scales)):
        if not np.isfinite(values).all():
            raise PlyError(f"{path} has {int((~np.isfinite(values)).sum())} non-finite {name}; it is not a valid .splat")
    if (scales < 0).any():
        raise PlyError(f"{path} has negative scales; it is not a valid .splat (scales are stored linear)")
    rot = (rec["rot"].astype(np.float32) - 128.0) / 128.0
    norms = np.linalg.norm(rot, axis=1, keepdims=True)
    if (norms <= 1e-6).any():
        raise PlyError(f"{path} has {int((norms <= 1e-6).sum())} zero-length rotation quaternions")
    rgba = rec["rgba"].astype(np.float32) / 255.0
    return Gaussians(
        means=torch.from_numpy(np.ascontiguousarray(means)),
        scales=torch.from_numpy(np.ascontiguousarray(scales)),
        rotations=torch.from_numpy(rot / norms),
        opacities=torch.from_numpy(np.ascontiguousarray(rgba[:, 3])),
        sh=torch.from_numpy(np.ascontiguousarray((rgba[:, :3] - 0.5) / SH_C0)[:, :, None]),
    )
