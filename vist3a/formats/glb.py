"""glTF 2.0 binary (``.glb``) splats with Khronos ``KHR_gaussian_splatting``, written and read back.

The splats are one POINTS primitive: ``POSITION``, ``KHR_gaussian_splatting:ROTATION`` (unit quaternion,
xyzw), ``:SCALE`` (linear), ``:OPACITY`` (after the sigmoid), ``:SH_DEGREE_l_COEF_n`` (one float VEC3 per
coefficient, order m = -l..l, up to degree 3) and a ``COLOR_0`` fallback (8-bit RGBA) for viewers that
only draw points. The extension object names the ellipse kernel, the sRGB display colour space, sorting by
camera distance and perspective projection.

Placement: glTF is left-up-front, a 3DGS PLY right-down-front. The scene is turned 180 degrees about z
on the way in and back on the way out, as PlayCanvas splat-transform 3.7 does when it writes a .glb from a
PLY (measured on its output, not assumed: (x, y, z) -> (-x, -y, z), each rotation composed with the half
turn, SH coefficients of odd |m| negated). The layout matches its writer too (one bufferView per
attribute, in its order, COLOR_0 as the clamped display colour it writes), so the two files agree value for
value. A reader of either gets the scene back in our (PLY) axes.

``*.spz.glb`` is the compressed variant, the draft ``KHR_gaussian_splatting_compression_spz_2``: the SPZ v2
stream (:mod:`.spz`) in one bufferView, in the right-up-back axes the draft asks of it (SPZ's own), and the
attribute accessors without data. Both variants are read.

Big scenes stream: the writer turns one block of rows at a time and puts it into every bufferView of the
atomic writer's file (positional writes; no copy of the scene is built: 49 MB beyond a 2.6M-Gaussian scene,
bench/results/splat_io.md), the reader maps the file and copies each accessor straight into place.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import __version__
from ..atomic import atomic_stream
from ..errors import GlbError
from ..gaussians import SH_C0, Gaussians
from .axes import HALF_TURN_Z, RDF_TO_RUB, sh_flip_signs
from .common import PathLike, cpu_float32
from .spz import decode_spz, spz_bytes

__all__ = ["GlbError", "EXTENSION", "SPZ_EXTENSION", "GLB_MAX_SH_DEGREE", "sh_attribute", "save_glb", "load_glb",
           "glb_attributes"]

EXTENSION = "KHR_gaussian_splatting"
SPZ_EXTENSION = "KHR_gaussian_splatting_compression_spz_2"
GLB_MAX_SH_DEGREE = 3
"""The extension defines SH coefficients up to degree 3."""

ROTATION, SCALE, OPACITY = (f"{EXTENSION}:{name}" for name in ("ROTATION", "SCALE", "OPACITY"))
_SPLAT_OBJECT = {"kernel": "ellipse", "colorSpace": "srgb_rec709_display", "sortingMethod": "cameraDistance",
                 "projection": "perspective"}
_MAGIC, _JSON, _BIN = 0x46546C67, 0x4E4F534A, 0x004E4942
_FLOAT, _UBYTE = 5126, 5121
_ARRAY_BUFFER = 34962
_COMPONENTS = {5120: "i1", 5121: "u1", 5122: "<i2", 5123: "<u2", 5125: "<u4", 5126: "<f4"}
_NORMALIZED_MAX = {5120: 127.0, 5121: 255.0, 5122: 32767.0, 5123: 65535.0}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
_BLOCK_ROWS = 1 << 12  # rows per block: the SH of a block stays in cache while it is turned coefficient-major
_TURN = np.array(HALF_TURN_Z, np.float32)


def sh_attribute(degree: int, coef: int) -> str:
    """The attribute holding SH coefficient ``coef`` (0 .. 2*degree, order m = coef - degree) of ``degree``."""
    return f"{EXTENSION}:SH_DEGREE_{degree}_COEF_{coef}"


def _sh_attributes(degree: int) -> list[str]:
    return [sh_attribute(d, c) for d in range(degree + 1) for c in range(2 * d + 1)]


# ---------------------------------------------------------------------------------------------- writing


@dataclass
class _Segment:
    """One attribute as stored: its accessor description and bytes per splat."""

    name: str
    type: str
    component: int
    row_bytes: int
    normalized: bool = False
    bounds: Optional[tuple] = None


def _unit_rows(q: np.ndarray) -> np.ndarray:
    """``q`` with rows normalised where they are not unit to float32 precision (unit ones stay bit-exact)."""
    norms = np.sqrt(np.einsum("ij,ij->i", q, q, dtype=np.float64))
    off = np.abs(norms - 1.0) > 1e-6
    if off.any():
        q = q.copy()
        q[off] = (q[off] / norms[off, None]).astype(np.float32)
    return q


class _Rows:
    """The attributes of rows [a, b) as stored, in segment order: one pass over each block of the scene
    (the SH block is turned coefficient-major while it is in cache)."""

    def __init__(self, g: Gaussians, degree: int):
        self.means, self.scales, self.quats, self.alphas = (cpu_float32(t).numpy() for t in (g.means, g.scales, g.rotations, g.opacities))
        self.sh = cpu_float32(g.sh).numpy()
        self.degree, self.k = degree, (degree + 1) ** 2
        self.signs = sh_flip_signs(HALF_TURN_Z, self.k)[:, None, None]

    def segments(self) -> list[_Segment]:
        lo, hi = self.means.min(axis=0), self.means.max(axis=0)
        bounds = (np.where(_TURN < 0, -hi, lo).tolist(), np.where(_TURN < 0, -lo, hi).tolist())
        return ([_Segment("POSITION", "VEC3", _FLOAT, 12, bounds=bounds), _Segment("COLOR_0", "VEC4", _UBYTE, 4, normalized=True),
                 _Segment(ROTATION, "VEC4", _FLOAT, 16), _Segment(SCALE, "VEC3", _FLOAT, 12), _Segment(OPACITY, "SCALAR", _FLOAT, 4)]
                + [_Segment(name, "VEC3", _FLOAT, 12) for name in _sh_attributes(self.degree)])

    def block(self, a: int, b: int) -> list[np.ndarray]:
        sh = self.sh[a:b]
        rgba = np.empty((b - a, 4), np.float64)  # as splat-transform: round((dc * C0 + 0.5) * 255), alpha * 255, clamped
        rgba[:, :3] = sh[:, :, 0] * SH_C0 + 0.5
        rgba[:, 3] = self.alphas[a:b]
        color = np.clip(np.floor(rgba * 255.0 + 0.5), 0, 255).astype(np.uint8)
        q = _unit_rows(self.quats[a:b])  # the half turn r = (0, 0, 0, 1) wxyz composed as r * q, stored xyzw
        rotation = np.stack([-q[:, 2], q[:, 1], q[:, 0], -q[:, 3]], axis=1)
        coefficients = np.empty((self.k, b - a, 3), np.float32)  # coefficient-major, each [rows, 3] contiguous
        np.multiply(sh[:, :, :self.k].transpose(2, 0, 1), self.signs, out=coefficients)
        return [self.means[a:b] * _TURN, color, rotation, self.scales[a:b], self.alphas[a:b], *coefficients]


def _document(accessors: list, attributes: dict, buffer_views: list, buffer_bytes: int,
              splat_object: dict, used: list, required: Optional[list] = None) -> dict:
    doc = {"asset": {"version": "2.0", "generator": f"VIST3A-for-ComfyUI {__version__}"}, "extensionsUsed": used}
    if required:
        doc["extensionsRequired"] = required
    doc.update({"scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
                "buffers": [{"byteLength": buffer_bytes}], "bufferViews": buffer_views, "accessors": accessors,
                "meshes": [{"primitives": [{"attributes": attributes, "mode": 0,
                                            "extensions": {EXTENSION: splat_object}}]}]})
    return doc


def _glb_head(doc: dict, bin_bytes: int) -> bytes:
    """GLB header, JSON chunk (space padded to 4 bytes) and the BIN chunk's header."""
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + bin_bytes
    return struct.pack("<III", _MAGIC, 2, total) + struct.pack("<II", len(text), _JSON) + text + struct.pack("<II", bin_bytes, _BIN)


def save_glb(g: Gaussians, path: PathLike, sh_degree: Optional[int] = None, compression: Optional[str] = None) -> Path:
    """Write ``g`` as a ``KHR_gaussian_splatting`` .glb, atomically; return the path.

    ``sh_degree`` caps the SH bands written (default: all the scene has, at most 3). ``compression="spz"``
    writes the SPZ-compressed variant (8-bit colours and rotations, 24-bit positions, 4-5 bit SH).
    """
    if compression not in (None, "spz"):
        raise ValueError(f"compression must be None or 'spz', got {compression!r}")
    degree = min(g.sh_degree, GLB_MAX_SH_DEGREE if sh_degree is None else int(sh_degree), GLB_MAX_SH_DEGREE)
    if degree < 0:
        raise ValueError(f"sh_degree must be >= 0, got {sh_degree}")
    g.validate()
    n = g.num
    if n == 0:
        raise ValueError(f"refusing to write {path}: there are no Gaussians to save (all pruned?)")
    if compression == "spz":
        return _save_spz_glb(g, Path(path), degree)
    rows = _Rows(g, degree)
    segments = rows.segments()
    accessors, views, attributes, starts, offset = [], [], {}, [], 0
    for i, seg in enumerate(segments):
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": n * seg.row_bytes, "target": _ARRAY_BUFFER})
        accessor = {"bufferView": i, "byteOffset": 0, "componentType": seg.component, "count": n, "type": seg.type}
        if seg.normalized:
            accessor["normalized"] = True
        if seg.bounds is not None:
            accessor["min"], accessor["max"] = seg.bounds
        accessors.append(accessor)
        attributes[seg.name] = i
        starts.append(offset)
        offset += n * seg.row_bytes  # every row size is a multiple of 4: the views stay aligned
    doc = _document(accessors, attributes, views, offset, dict(_SPLAT_OBJECT), [EXTENSION])
    head = _glb_head(doc, offset)
    with atomic_stream(path) as f:
        f.write(head)
        for a in range(0, n, _BLOCK_ROWS):  # each block of rows lands in every bufferView
            b = min(n, a + _BLOCK_ROWS)
            for seg, start, values in zip(segments, starts, rows.block(a, b)):
                f.write_at(np.ascontiguousarray(values, dtype=_COMPONENTS[seg.component]), len(head) + start + a * seg.row_bytes)
    return Path(path)


def _save_spz_glb(g: Gaussians, path: Path, degree: int) -> Path:
    blob = spz_bytes(g, degree, flip=RDF_TO_RUB)  # the payload in RUB; a reader turns it to glTF axes (LUF)
    n = g.num
    means = cpu_float32(g.means).numpy()
    step = np.float64(1 << 12)  # the positions as the payload holds them (12 fraction bits): exact bounds
    lo, hi = np.round(means.min(axis=0) * step) / step, np.round(means.max(axis=0) * step) / step
    bounds = (np.where(_TURN < 0, -hi, lo).tolist(), np.where(_TURN < 0, -lo, hi).tolist())
    names = [("POSITION", "VEC3"), (ROTATION, "VEC4"), (SCALE, "VEC3"), (OPACITY, "SCALAR")]
    names += [(name, "VEC3") for name in _sh_attributes(degree)]
    accessors = [{"componentType": _FLOAT, "count": n, "type": kind} for _, kind in names]
    accessors[0]["min"], accessors[0]["max"] = bounds
    attributes = {name: i for i, (name, _) in enumerate(names)}
    padded = len(blob) + (-len(blob) % 4)
    splat_object = dict(_SPLAT_OBJECT, extensions={SPZ_EXTENSION: {"bufferView": 0}})
    doc = _document(accessors, attributes, [{"buffer": 0, "byteOffset": 0, "byteLength": len(blob)}], padded,
                    splat_object, [EXTENSION, SPZ_EXTENSION], [SPZ_EXTENSION])
    with atomic_stream(path) as f:
        f.write(_glb_head(doc, padded))
        f.write(blob)
        f.write(b"\0" * (padded - len(blob)))
    return path


# ---------------------------------------------------------------------------------------------- reading


class _Glb:
    """A mapped .glb: its JSON and BIN chunk; every check names the file."""

    def __init__(self, path: Path):
        self.path = path
        size = path.stat().st_size
        if size < 20:
            raise GlbError(f"{path} is too short to be a glTF binary (.glb) file")
        self.data = np.memmap(path, dtype=np.uint8, mode="r")
        magic, version, length = struct.unpack("<III", self.data[:12].tobytes())
        if magic != _MAGIC:
            raise GlbError(f"{path} is not a glTF binary (.glb): it does not start with 'glTF'")
        if version != 2:
            raise GlbError(f"{path} is glTF binary version {version}; only version 2 is read")
        if length > size:
            raise GlbError(f"{path} is truncated: its header announces {length} bytes, the file has {size}")
        chunks, at = [], 12
        while at + 8 <= length:
            chunk_len, kind = struct.unpack("<II", self.data[at:at + 8].tobytes())
            if at + 8 + chunk_len > length:
                raise GlbError(f"{path} is truncated: a chunk runs past the end of the file")
            chunks.append((kind, at + 8, chunk_len))
            at += 8 + chunk_len
        if not chunks or chunks[0][0] != _JSON:
            raise GlbError(f"{path} has no JSON chunk first, so it is not a valid .glb")
        _, start, chunk_len = chunks[0]
        try:
            self.doc = json.loads(self.data[start:start + chunk_len].tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise GlbError(f"{path} has a JSON chunk that does not parse ({e})") from e
        if not isinstance(self.doc, dict):
            raise GlbError(f"{path} has a JSON chunk that is not a glTF object")
        binary = [c for c in chunks[1:] if c[0] == _BIN]
        self.bin = self.data[binary[0][1]:binary[0][1] + binary[0][2]] if binary else self.data[:0]

    def item(self, key: str, index, what: str) -> dict:
        items = self.doc.get(key) or []
        if not isinstance(index, int) or not 0 <= index < len(items) or not isinstance(items[index], dict):
            raise GlbError(f"{self.path}: {what} refers to {key}[{index}], which does not exist")
        return items[index]

    def view_bytes(self, index, what: str) -> tuple[np.ndarray, int]:
        """The bytes of bufferView ``index`` (a slice of the mapped BIN chunk) and its byteStride (0 if none)."""
        view = self.item("bufferViews", index, what)
        buffer = self.item("buffers", view.get("buffer", 0), f"bufferView {index}")
        if view.get("buffer", 0) != 0 or "uri" in buffer:
            raise GlbError(f"{self.path}: {what} lies in an external buffer; this reader takes self-contained .glb "
                           "files (the data in the file's own binary chunk)")
        start, length = int(view.get("byteOffset", 0)), int(view.get("byteLength", -1))
        if start < 0 or length < 0 or start + length > len(self.bin):
            raise GlbError(f"{self.path}: bufferView {index} ({what}) runs past the end of the binary chunk; the file is truncated or corrupt")
        return self.bin[start:start + length], int(view.get("byteStride", 0))

    def accessor(self, index, what: str) -> np.ndarray:
        """Accessor ``index`` as float32 [count, width]: a view of the file when stored as tight floats."""
        acc = self.item("accessors", index, what)
        width, dtype = _WIDTH.get(acc.get("type")), _COMPONENTS.get(acc.get("componentType"))
        count = acc.get("count")
        if width is None or dtype is None or not isinstance(count, int) or count < 0:
            raise GlbError(f"{self.path}: the accessor of {what} has type {acc.get('type')!r} / componentType "
                           f"{acc.get('componentType')!r} / count {count!r}, which is not a valid glTF accessor")
        if "sparse" in acc or "bufferView" not in acc:
            raise GlbError(f"{self.path}: {what} has no plain data (sparse or left to another extension); "
                           "this reader takes accessors backed by a bufferView")
        data, stride = self.view_bytes(acc["bufferView"], what)
        item = np.dtype(dtype).itemsize
        stride = stride or item * width
        offset = int(acc.get("byteOffset", 0))
        if count and (offset < 0 or offset + stride * (count - 1) + item * width > len(data)):
            raise GlbError(f"{self.path}: {what} ({count} x {acc['type']}) does not fit its bufferView; the file is corrupt")
        values = np.ndarray((count, width), dtype=dtype, buffer=data, offset=offset, strides=(stride, item))
        scale = _NORMALIZED_MAX.get(acc["componentType"]) if acc.get("normalized") else None
        if scale is not None:  # glTF: signed values clamp at -1
            return np.maximum(values.astype(np.float32) / np.float32(scale), np.float32(-1.0))
        return values if dtype == "<f4" else values.astype(np.float32)


def _splat_primitives(glb: _Glb) -> list[dict]:
    found = []
    for mesh in glb.doc.get("meshes") or []:
        for primitive in (mesh or {}).get("primitives") or []:
            if EXTENSION in ((primitive or {}).get("extensions") or {}):
                found.append(primitive)
    return found


def _refuse_unreadable(glb: _Glb, primitives: list) -> None:
    path = glb.path
    if not primitives:
        has_mesh = any(p.get("mode", 4) != 0 for m in glb.doc.get("meshes") or [] for p in (m or {}).get("primitives") or [])
        kind = "a mesh" if has_mesh else "another kind of asset"
        raise GlbError(f"{path} holds no {EXTENSION} splats (it is {kind}, not a splat scene); give a splat .glb "
                       f"(python -m vist3a convert scene.ply {path.name} writes one) or a .ply/.spz/.splat")
    unknown = [e for e in glb.doc.get("extensionsRequired") or [] if e not in (EXTENSION, SPZ_EXTENSION)]
    if unknown:
        raise GlbError(f"{path} requires the glTF extension(s) {', '.join(unknown)}, which this reader does not decode; "
                       f"export the splats again with plain {EXTENSION} accessors")
    nodes = glb.doc.get("nodes") or []
    parents = {child: i for i, node in enumerate(nodes) for child in (node or {}).get("children") or []}
    for i, node in enumerate(nodes):
        if "mesh" not in (node or {}):
            continue
        at, seen = i, set()
        while at is not None and at not in seen:
            seen.add(at)
            if _moves(nodes[at] if 0 <= at < len(nodes) else {}):
                raise GlbError(f"{path}: node {i} places its splats with a transform (matrix/translation/rotation/scale "
                               f"on node {at}); this reader takes splats stored in scene space, as splat-transform and "
                               "VIST3A write them: apply the transform to the splats before exporting")
            at = parents.get(at)


def _moves(node: dict) -> bool:
    identity = {"matrix": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], "translation": [0, 0, 0],
                "rotation": [0, 0, 0, 1], "scale": [1, 1, 1]}
    return any(key in node and [float(v) for v in node[key]] != value for key, value in identity.items())


def glb_attributes(path: PathLike) -> dict[str, np.ndarray]:
    """The splat attributes of a .glb's first splat primitive as stored (glTF axes, float32, normalised
    integers scaled): for comparing files and for tools. Views of the mapped file where possible."""
    glb = _Glb(Path(path))
    primitives = _splat_primitives(glb)
    _refuse_unreadable(glb, primitives)
    attributes = primitives[0].get("attributes") or {}
    return {name: glb.accessor(index, f"attribute {name}") for name, index in attributes.items()}


def load_glb(path: PathLike) -> Gaussians:
    """Read a ``KHR_gaussian_splatting`` .glb (plain or SPZ-compressed) into float32 CPU :class:`Gaussians`,
    in our (PLY) axes. Several splat primitives are joined (at the lowest SH degree among them).

    Raises :class:`GlbError` naming the file for anything that is not a readable splat .glb (one without
    the extension included) and ``FileNotFoundError`` if the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input {path} does not exist")
    glb = _Glb(path)
    primitives = _splat_primitives(glb)
    _refuse_unreadable(glb, primitives)
    parts = [_read_primitive(glb, p, i) for i, p in enumerate(primitives)]
    if len(parts) == 1:
        return parts[0]
    degree = min(part.sh_degree for part in parts)
    parts = [part.truncate_sh(degree) for part in parts]
    return Gaussians(*(torch.cat([getattr(p, name) for p in parts]) for name in ("means", "scales", "rotations", "opacities", "sh")))


def _read_primitive(glb: _Glb, primitive: dict, index: int) -> Gaussians:
    path, where = glb.path, f"splat primitive {index}"
    if primitive.get("mode", 4) != 0:
        raise GlbError(f"{path}: {where} has mode {primitive.get('mode', 4)}; {EXTENSION} primitives are POINTS (mode 0)")
    splat = primitive["extensions"][EXTENSION] or {}
    compressed = (splat.get("extensions") or {}).get(SPZ_EXTENSION)
    attributes = primitive.get("attributes") or {}
    if compressed is not None:
        return _read_spz_primitive(glb, compressed, attributes, where)
    for name in ("POSITION", ROTATION, SCALE, OPACITY):
        if name not in attributes:
            raise GlbError(f"{path}: {where} has no {name} attribute, which {EXTENSION} requires")
    columns = {name: glb.accessor(attributes[name], name) for name in ("POSITION", ROTATION, SCALE, OPACITY)}
    n = len(columns["POSITION"])
    degree = _sh_degree(path, attributes, where)
    if degree < 0 and "COLOR_0" not in attributes:
        raise GlbError(f"{path}: {where} has neither {sh_attribute(0, 0)} nor COLOR_0, so it has no colours")
    shapes = {"POSITION": 3, ROTATION: 4, SCALE: 3, OPACITY: 1}
    for name, width in shapes.items():
        if columns[name].shape != (n, width):
            raise GlbError(f"{path}: {name} holds {columns[name].shape[0]} x {columns[name].shape[1]} values, expected "
                           f"{n} x {width} (one per splat)")
    means = np.multiply(columns["POSITION"], _TURN, dtype=np.float32)
    _check_finite(path, "POSITION", means)
    scales = np.array(columns[SCALE], dtype=np.float32)
    _check_finite(path, SCALE, scales)
    if n and float(scales.min()) < 0:
        raise GlbError(f"{path}: {SCALE} has negative values; scales are stored linear and must be >= 0")
    alphas = np.array(columns[OPACITY][:, 0], dtype=np.float32)
    _check_finite(path, OPACITY, alphas)
    if n and (float(alphas.min()) < 0 or float(alphas.max()) > 1):
        raise GlbError(f"{path}: {OPACITY} lies outside [0, 1] ({float(alphas.min()):g}..{float(alphas.max()):g}); "
                       "it stores the opacity after the sigmoid")
    rotations = _rotations_from_gltf(path, columns[ROTATION])
    k = (max(degree, 0) + 1) ** 2
    sh = np.empty((n, 3, k), np.float32)
    if degree < 0:  # COLOR_0 only: its RGB is the display colour (0.5 + C0 * dc)
        colors = glb.accessor(attributes["COLOR_0"], "COLOR_0")
        sh[:, :, 0] = (colors[:, :3] - np.float32(0.5)) / np.float32(SH_C0)
    else:
        signs = sh_flip_signs(HALF_TURN_Z, k)
        sources = [glb.accessor(attributes[name], name) for name in _sh_attributes(degree)]
        for name, values in zip(_sh_attributes(degree), sources):
            if values.shape != (n, 3):
                raise GlbError(f"{path}: {name} holds {values.shape[0]} x {values.shape[1]} values, expected {n} x 3")
        finite = True
        for a in range(0, n, _BLOCK_ROWS):  # block by block: the rows of sh being filled stay in cache
            for c, values in enumerate(sources):
                np.multiply(values[a:a + _BLOCK_ROWS], signs[c], out=sh[a:a + _BLOCK_ROWS, :, c])
            finite = finite and bool(np.isfinite(sh[a:a + _BLOCK_ROWS].sum()))
        if not finite:  # a sum can overflow without a bad value: the exact check
            _check_finite(path, "SH_DEGREE_*", sh)
    return Gaussians(torch.from_numpy(means), torch.from_numpy(scales), rotations, torch.from_numpy(alphas),
                     torch.from_numpy(sh))


def _sh_degree(path: Path, attributes: dict, where: str) -> int:
    """Highest complete SH degree present (-1: none); a partly present degree is an error (the spec forbids it)."""
    degree = -1
    for d in range(GLB_MAX_SH_DEGREE + 1):
        present = [sh_attribute(d, c) in attributes for c in range(2 * d + 1)]
        if not any(present):
            break
        if not all(present) or degree != d - 1:
            raise GlbError(f"{path}: {where} has SH degree {d} only in part; {EXTENSION} needs every coefficient of "
                           "each degree up to the highest")
        degree = d
    return degree


def _check_finite(path: Path, name: str, values: np.ndarray) -> None:
    if not np.isfinite(values.sum(dtype=np.float64)):
        bad = int((~np.isfinite(values)).sum())
        if bad:
            raise GlbError(f"{path}: {name} has {bad} non-finite values (NaN or inf)")


def _rotations_from_gltf(path: Path, xyzw: np.ndarray) -> torch.Tensor:
    """Stored xyzw (glTF axes) -> our wxyz: the half turn undone (q = r^-1 * q'), rows normalised."""
    n = len(xyzw)
    out = np.empty((n, 4), np.float32)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = xyzw[:, 2], xyzw[:, 1], -xyzw[:, 0], -xyzw[:, 3]
    _check_finite(path, ROTATION, out)
    for start in range(0, n, _BLOCK_ROWS * 4):
        block = out[start:start + _BLOCK_ROWS * 4]
        norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
        if (norms <= 1e-12).any():
            raise GlbError(f"{path}: {ROTATION} has zero-length quaternions; rotations must be unit quaternions")
        off = np.abs(norms - 1.0) > 1e-6
        if off.any():
            block[off] = (block[off] / norms[off, None]).astype(np.float32)
    return torch.from_numpy(out)


def _read_spz_primitive(glb: _Glb, compressed: dict, attributes: dict, where: str) -> Gaussians:
    path = glb.path
    data, _ = glb.view_bytes(compressed.get("bufferView"), f"the {SPZ_EXTENSION} payload")
    g = decode_spz(data, f"{path} ({SPZ_EXTENSION} payload)")
    counts = {glb.item("accessors", index, name).get("count") for name, index in attributes.items()}
    if counts and counts != {g.num}:
        raise GlbError(f"{path}: {where} announces {sorted(counts)} splats in its accessors, its SPZ payload holds {g.num}")
    # RUB payload -> our RDF axes: y and z negated (positions, quaternion y and z, SH by parity)
    g.means[:, 1:].neg_()
    g.rotations[:, 2:].neg_()
    g.sh.mul_(torch.from_numpy(sh_flip_signs(RDF_TO_RUB, g.sh.shape[2])))
    return g
