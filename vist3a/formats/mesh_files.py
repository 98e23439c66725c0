"""Mesh files from a scene mesh: .glb (glTF 2.0 binary), .ply and .obj, written by trimesh.

Why these three: ComfyUI's Load 3D / Preview 3D nodes (three.js loaders) and game engines read
.glb; Blender, MeshLab and every mesh tool read .ply and .obj. trimesh writes all three (it is the
optional ``mesh`` extra: ``pip install vist3a[mesh]``).

Axes: glTF and OBJ readers take +Y as up; a VIST3A scene's up is -Y (its first camera's OpenCV
frame). ``axes="gltf"`` (default) writes the scene turned 180 degrees about Z (x, y -> -x, -y), the
turn PlayCanvas splat-transform applies when it writes a 3DGS scene as glTF, so a mesh lands upright
and on top of the same scene's .glb splats; ``axes="scene"`` keeps the splats' own coordinates (to
overlay the mesh on the .ply splats in a point-cloud tool).

Colours: the splats' colours are display (sRGB) values. .ply and .obj store them as they are (what
mesh viewers show); glTF's ``COLOR_0`` is linear, so the .glb gets them converted to linear, and an
unlit material (``KHR_materials_unlit``) so that viewers show the splats' colours instead of shading
them with their own lights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_save_bytes
from ..errors import VIST3AError
from .axes import HALF_TURN_Z
from .common import PathLike

__all__ = ["MESH_SUFFIXES", "MESH_AXES", "MeshFormatError", "mesh_format", "write_mesh", "srgb_to_linear"]

MESH_SUFFIXES = (".glb", ".ply", ".obj")
MESH_AXES = ("gltf", "scene")
UNLIT = "KHR_materials_unlit"


class MeshFormatError(VIST3AError, ValueError):
    """A mesh output name whose extension we do not write, or a mesh that cannot be written."""


def mesh_format(path: PathLike) -> str:
    """The mesh format suffix of ``path`` ('.glb', '.ply' or '.obj'); MeshFormatError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise MeshFormatError(f"mesh output {path} must end in .glb, .ply or .obj (the format follows the extension)")
    return suffix


def _trimesh():
    try:
        import trimesh
    except ImportError:
        raise MeshFormatError("writing meshes needs trimesh: pip install 'vist3a[mesh]' (or pip install trimesh scikit-image)") from None
    return trimesh


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB display values in [0, 1] -> linear (the IEC 61966-2-1 curve)."""
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _finish_tree(tree: dict) -> None:
    """trimesh ``tree_postprocessor``: every material unlit (flat colour), the extension declared, and each
    buffer view marked as vertex or index data (GPU upload hints the validator asks for)."""
    views = tree.get("bufferViews") or []
    accessors = tree.get("accessors") or []
    for mesh in tree.get("meshes", []):
        for prim in mesh.get("primitives", []):
            targets = [(a, 34962) for a in prim.get("attributes", {}).values()] + [(prim.get("indices"), 34963)]
            for acc, target in targets:
                if acc is not None and acc < len(accessors) and accessors[acc].get("bufferView", len(views)) < len(views):
                    views[accessors[acc]["bufferView"]]["target"] = target
    materials = tree.get("materials") or []
    if not materials:
        tree["materials"] = materials = [{"pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1], "metallicFactor": 0.0}}]
        for mesh in tree.get("meshes", []):
            for prim in mesh.get("primitives", []):
                prim["material"] = 0
    for m in materials:
        m.setdefault("extensions", {})[UNLIT] = {}
        m.setdefault("pbrMetallicRoughness", {})["metallicFactor"] = 0.0
    used = tree.setdefault("extensionsUsed", [])
    if UNLIT not in used:
        used.append(UNLIT)


def write_mesh(mesh, path: PathLike, axes: str = "gltf") -> Path:
    """Write ``mesh`` (vertices [V, 3], faces [F, 3], colors [V, 3] sRGB in [0, 1]; e.g. a
    :class:`vist3a.mesh.SplatMesh`) as .glb, .ply or .obj by ``path``'s extension, atomically."""
    suffix = mesh_format(path)
    if axes not in MESH_AXES:
        raise MeshFormatError(f"axes must be one of {', '.join(MESH_AXES)}, got {axes!r}")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    colors = np.asarray(mesh.colors, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3 or colors.shape != vertices.shape:
        raise MeshFormatError(f"a mesh needs vertices [V, 3], faces [F, 3] and colors [V, 3], got {list(vertices.shape)}, "
                              f"{list(faces.shape)}, {list(colors.shape)}")
    if len(faces) == 0:
        raise MeshFormatError(f"refusing to write {path}: the mesh has no faces")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshFormatError(f"refusing to write {path}: face indices outside 0..{len(vertices) - 1}")
    if axes == "gltf":
        vertices = vertices * np.array(HALF_TURN_Z)  # a proper rotation: the winding stays counter-clockwise
    trimesh = _trimesh()
    shown = srgb_to_linear(colors) if suffix == ".glb" else np.clip(colors, 0.0, 1.0)
    rgba = np.concatenate([np.round(shown * 255), np.full((len(shown), 1), 255.0)], axis=1).astype(np.uint8)
    tm = trimesh.Trimesh(vertices=vertices.astype(np.float32), faces=faces, vertex_colors=rgba, process=False)
    if suffix == ".glb":
        data = trimesh.exchange.gltf.export_glb(tm, include_normals=False, tree_postprocessor=_finish_tree)
    elif suffix == ".ply":
        data = trimesh.exchange.ply.export_ply(tm, encoding="binary", vertex_normal=False)
    else:
        data = trimesh.exchange.obj.export_obj(tm, include_normals=False, include_color=True, include_texture=False)
        data = data.encode("utf-8")
    return atomic_save_bytes(path, data)
