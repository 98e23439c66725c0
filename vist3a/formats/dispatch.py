"""Splat files by extension: which reader/writer a path gets and how many SH bands each format keeps.

One place decides, so the CLI (`generate -o x.spz`, `render`, `convert`) and the nodes agree. A new
format is a module beside this one plus a row in each table here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from ..errors import VIST3AError
from ..gaussians import Gaussians
from .common import VIEWER_SH_DEGREE, PathLike
from .glb import load_glb, save_glb
from .ply import load_ply, save_ply
from .splat import load_splat, save_splat
from .spz import load_spz, save_spz

__all__ = ["SPLAT_SUFFIXES", "MAX_SH_DEGREE", "FormatError", "splat_format", "read_splats", "write_splats", "convert"]

SPLAT_SUFFIXES = (".ply", ".spz", ".splat", ".glb", ".spz.glb")
MAX_SH_DEGREE = {".ply": 4, ".spz": 3, ".splat": 0, ".glb": 3, ".spz.glb": 3}
"""Highest SH degree each format can hold (.splat keeps the view-independent colour only).
``.spz.glb`` is the SPZ-compressed glTF (``KHR_gaussian_splatting_compression_spz_2``); any .glb reads."""


class FormatError(VIST3AError, ValueError):
    """A path whose extension is not a splat format we read/write, or an SH degree the format cannot hold."""


def splat_format(path: PathLike, what: str = "file") -> str:
    """The format suffix of ``path`` (one of :data:`SPLAT_SUFFIXES`, the longest that fits); FormatError otherwise."""
    name = Path(path).name.lower()
    if name.endswith(".html") and what != "output":  # vist3a.share_html writes it; nothing reads it back
        raise FormatError(f"{what} {path} is a viewer page, which is written but not read; use the .ply/.spz/.glb it was made from")
    suffix = max((s for s in SPLAT_SUFFIXES if name.endswith(s) and len(name) > len(s)), key=len, default=None)
    if suffix is None:
        raise FormatError(f"{what} {path} must end in {', '.join(SPLAT_SUFFIXES[:-1])} or {SPLAT_SUFFIXES[-1]} "
                          "(the format follows the extension)")
    return suffix


def read_splats(path: PathLike, opacity: str = "auto", report: Optional[Callable[[str], None]] = None) -> Gaussians:
    """Load any splat file we read; ``opacity``/``report`` apply to PLYs (see :func:`vist3a.formats.ply.load_ply`)."""
    suffix = splat_format(path, "input")
    if not Path(path).is_file():
        raise FileNotFoundError(f"input {path} does not exist")
    if suffix == ".ply":
        return load_ply(path, opacity=opacity, report=report)
    if suffix == ".spz":
        return load_spz(path)
    if suffix in (".glb", ".spz.glb"):
        return load_glb(path)
    return load_splat(path)


def write_splats(g: Gaussians, path: PathLike, sh_degree: Optional[int] = VIEWER_SH_DEGREE, strict: bool = False,
                 ply_layout: str = "standard") -> Path:
    """Write ``g`` in the format of ``path``'s extension, atomically.

    ``ply_layout="official"`` writes a .ply as the official exporter does (DC only, linear opacity; see save_ply).

    ``sh_degree`` (default 3, what common viewers read; None = all the format holds) is capped at the
    scene's degree and the format's maximum; with ``strict`` a request above the format's maximum is an error.
    """
    suffix = splat_format(path, "output")
    cap = MAX_SH_DEGREE[suffix]
    if sh_degree is not None and not 0 <= sh_degree <= 4:
        raise FormatError(f"SH degree must be between 0 and 4, got {sh_degree}")
    if strict and sh_degree is not None and sh_degree > cap:
        raise FormatError(f"{suffix} holds SH up to degree {cap}, not {sh_degree}; write a .ply for degree {sh_degree}")
    degree = min(cap if sh_degree is None else sh_degree, cap, g.sh_degree)
    if ply_layout != "standard" and suffix != ".ply":
        raise FormatError(f"the official layout exists for .ply only, not {suffix}")
    if suffix == ".ply":
        return save_ply(g, path, sh_degree=degree, layout=ply_layout)
    if suffix == ".spz":
        return save_spz(g, path, sh_degree=degree)
    if suffix in (".glb", ".spz.glb"):
        return save_glb(g, path, sh_degree=degree, compression="spz" if suffix == ".spz.glb" else None)
    return save_splat(g, path)


def convert(src: PathLike, dst: PathLike, sh_degree: Optional[int] = None, opacity: str = "auto",
            report: Optional[Callable[[str], None]] = None, ply_layout: str = "standard") -> tuple[Path, Gaussians]:
    """Read ``src`` and write it as ``dst`` (formats from the extensions); returns (dst, the Gaussians).

    ``sh_degree`` None writes the default (degree 3, or less where the format or the scene holds less); a
    given degree is capped at the scene's, and one the output format cannot hold is an error.
    """
    splat_format(dst, "output")  # refuse a bad output name before reading a big input
    g = read_splats(src, opacity=opacity, report=report)
    if sh_degree is None:
        return write_splats(g, dst, ply_layout=ply_layout), g
    return write_splats(g, dst, sh_degree=sh_degree, strict=True, ply_layout=ply_layout), g
