"""Scenes and files several test modules build: seeded random Gaussians, plain splats at given points, the
official exporter's PLY layout and hand-made .glb documents (for layouts other writers produce).

One place for them, so no test module imports another and every test's scene says how it was drawn.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np
import pytest
import torch
from guards import HANG_S

from vist3a.gaussians import Gaussians

# ------------------------------------------------------------------------------------------ scenes

QUANTISABLE_SH = {"sh_std": 0.3, "sh_clip": 0.95}
"""``**QUANTISABLE_SH``: SH that every quantising format holds (.spz's 4-5 bit bands and 8-bit colours cover [-1, 1])."""

IN_FRONT_OF_CAMERA = {"spread": 0.6, "center": (0.0, 0.0, 4.0), "log_scale": (-3.0, 0.5), "opacity": (0.05, 0.95), "sh_std": 0.4}
"""``**IN_FRONT_OF_CAMERA``: a blob of small splats 4 units down +z, what a camera at the origin sees."""


def random_gaussians(
    n: int = 50,
    sh_degree: int = 3,
    seed: int = 0,
    *,
    spread: float = 2.0,
    center: tuple[float, float, float] = (0.0, 0.0, 0.0),
    in_view: Optional[tuple[float, float]] = None,
    log_scale: tuple[float, float] = (-3.0, 1.0),
    scale_range: Optional[tuple[float, float]] = None,
    opacity: tuple[float, float] = (0.01, 0.99),
    sh_std: float = 1.0,
    sh_clip: Optional[float] = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Gaussians:
    """A seeded random scene, the same for the same arguments (one generator, drawn in the order centres,
    scales, rotations, opacities, SH).

    * centres: normal around ``center`` with std ``spread`` per axis; with ``in_view=(near, far)`` depth uniform in
      [near, far] in front of an identity camera (+z forward) and x, y uniform within +-0.4 x depth.
    * scales: log-normal, ``log_scale=(mean, std)`` of the log; or uniform in ``scale_range=(low, high)``.
    * rotations: uniformly random unit quaternions (wxyz).
    * opacities: uniform in ``opacity=(low, high)``, linear as :class:`Gaussians` keeps them.
    * SH: normal with std ``sh_std``, clipped to +-``sh_clip`` when given (quantising formats hold [-1, 1]).
    """
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=dtype)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    if in_view is None:
        means = randn(n, 3) * spread + torch.tensor(center, dtype=dtype)
    else:
        near, far = in_view
        z = near + (far - near) * rand(n)
        means = torch.cat([(rand(n, 2) - 0.5) * 0.8 * z[:, None], z[:, None]], dim=1)
    if scale_range is None:
        scales = torch.exp(randn(n, 3) * log_scale[1] + log_scale[0])
    else:
        scales = rand(n, 3) * (scale_range[1] - scale_range[0]) + scale_range[0]
    rotations = torch.nn.functional.normalize(randn(n, 4), dim=-1)
    opacities = rand(n) * (opacity[1] - opacity[0]) + opacity[0]
    sh = randn(n, 3, (sh_degree + 1) ** 2) * sh_std
    if sh_clip is not None:
        sh = sh.clamp(-sh_clip, sh_clip)
    return Gaussians(means, scales, rotations, opacities, sh).to(device)


def plain_gaussians(means: torch.Tensor, scale: float = 0.01, opacity: float = 0.9, sh_degree: int = 0) -> Gaussians:
    """Round, unrotated, equally opaque grey splats (all SH 0) at ``means``: scenes where only the positions matter."""
    n = means.shape[0]
    return Gaussians(means, torch.full((n, 3), scale), torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(n, 4).contiguous(),
                     torch.full((n,), opacity), torch.zeros(n, 3, (sh_degree + 1) ** 2))


# ------------------------------------------------------------------------------- other writers' files


def write_official_ply(path, g: Gaussians) -> None:
    """The official exporter's layout, written the way it writes it (plyfile, native byte order, default
    header): x y z nx ny nz f_dc_0..2 opacity scale_0..2 rot_0..3, DC only, opacity LINEAR, log scales, wxyz."""
    from plyfile import PlyData, PlyElement

    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    elements = np.empty(g.num, dtype=[(name, "f4") for name in names])
    columns = np.concatenate([g.means.numpy(), np.zeros((g.num, 3), np.float32), g.sh[:, :, 0].numpy(),
                              g.opacities[:, None].numpy(), g.scales.log().numpy(), g.rotations.numpy()], axis=1)
    elements[:] = list(map(tuple, columns))
    PlyData([PlyElement.describe(elements, "vertex")]).write(str(path))


def write_glb(path: Path, doc: dict, binary: bytes = b"") -> Path:
    """A .glb from a glTF document and its binary chunk (for files other writers could make)."""
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    binary += b"\0" * (-len(binary) % 4)
    chunks = struct.pack("<II", len(text), 0x4E4F534A) + text + (struct.pack("<II", len(binary), 0x004E4942) + binary if binary else b"")
    path.write_bytes(struct.pack("<III", 0x46546C67, 2, 12 + len(chunks)) + chunks)
    return path


def triangle_glb_doc() -> tuple[dict, bytes]:
    """A glTF document (and its binary chunk) holding one triangle mesh and no splats."""
    pos = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], "<f4")
    return ({"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
             "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
             "buffers": [{"byteLength": 36}], "bufferViews": [{"buffer": 0, "byteLength": 36}],
             "accessors": [{"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3", "min": [0, 0, 0], "max": [1, 1, 0]}]},
            pos.tobytes())


def official_ply(folder: Path) -> tuple[Path, Gaussians]:
    """``folder/gaussians.ply`` in the official layout and the scene it holds (DC only; opacities 0 to 1, both ends
    included, which only a linear reading keeps)."""
    g = random_gaussians(200, 0, 3, **QUANTISABLE_SH)
    g = Gaussians(g.means, g.scales, g.rotations, torch.linspace(0.0, 1.0, g.num), g.sh)
    path = folder / "gaussians.ply"
    write_official_ply(path, g)
    return path, g


def ply_rest_count(path) -> int:
    """How many f_rest_* properties a PLY's header declares (45 for SH degree 3, 72 for 4)."""
    header = path.read_bytes()[:8192].split(b"end_header")[0].decode()
    return sum(line.startswith("property float f_rest_") for line in header.splitlines())


# --------------------------------------------------------------------------------------------- CLI


def run_cli(*args):
    """`python -m vist3a ARGS` in this process (a subprocess per call costs ~15 s of imports on CI)."""
    import contextlib
    import io

    from vist3a.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


GLTF_TOOLS = Path(__file__).resolve().parent / "browser" / "gltf"


def gltf_tools() -> Path:
    """tests/browser/gltf installed from its lockfile (once per lockfile); skip without node/npm."""
    if not (shutil.which("npm") and shutil.which("node")):
        pytest.skip("node and npm are not installed")
    lock = GLTF_TOOLS / "package-lock.json"
    stamp = GLTF_TOOLS / "node_modules" / ".vist3a-lock"
    if not (stamp.is_file() and stamp.read_text() == lock.read_text()):
        # no install scripts: splat-transform's optional GPU module (webgpu) would fetch native binaries; .glb needs none
        subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=GLTF_TOOLS, check=True, capture_output=True,
                       timeout=HANG_S)
        stamp.write_text(lock.read_text())
    return GLTF_TOOLS
