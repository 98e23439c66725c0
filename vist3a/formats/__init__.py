"""Splat file formats, one module each, and the dispatcher that picks one by the file's extension.

* :mod:`.ply` — the standard 3DGS PLY (SH up to degree 4; the official exporter's variant is read too),
  on top of :mod:`.ply_binary` (header parsing and vertex tables at disk speed);
* :mod:`.spz` — Niantic's gzip-compressed ``.spz`` (SH up to degree 3);
* :mod:`.splat` — antimatter15's ``.splat`` (colour only);
* :mod:`.glb` — glTF 2.0 binary with Khronos ``KHR_gaussian_splatting`` (SH up to degree 3), plain or
  SPZ-compressed (``.spz.glb``), in the axes PlayCanvas splat-transform gives PLY scenes (:mod:`.axes`);
* :mod:`.mesh_files` — scene meshes as .glb / .ply / .obj (trimesh);
* :mod:`.dispatch` — ``read_splats`` / ``write_splats`` / ``convert`` by extension.

The container they all read and write is :class:`vist3a.gaussians.Gaussians`.
"""

from ..errors import GlbError, PlyError, SpzError
from .common import VIEWER_SH_DEGREE, cpu_float32
from .dispatch import MAX_SH_DEGREE, SPLAT_SUFFIXES, FormatError, convert, read_splats, splat_format, write_splats
from .glb import load_glb, save_glb
from .mesh_files import MESH_SUFFIXES, mesh_format, write_mesh
from .ply import OPACITY_MODES, PlyScene, load_ply, read_ply, save_ply
from .splat import load_splat, save_splat
from .spz import load_spz, save_spz, spz_bytes

__all__ = [
    "PlyError", "SpzError", "GlbError", "load_glb", "save_glb", "VIEWER_SH_DEGREE", "cpu_float32", "MAX_SH_DEGREE", "SPLAT_SUFFIXES", "FormatError", "convert", "read_splats",
    "splat_format", "write_splats", "OPACITY_MODES", "PlyScene", "load_ply", "read_ply", "save_ply", "load_splat",
    "save_splat", "load_spz", "save_spz", "spz_bytes", "MESH_SUFFIXES", "mesh_format",
    "write_mesh",
]
