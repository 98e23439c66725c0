"""Scene meshes: TSDF extraction, topology counts, splats -> mesh on analytic scenes, mesh files, the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from guards import HANG_S

from vist3a.errors import VIST3AError
from vist3a.mesh import (
    MeshError,
    load_cameras,
    mesh_topology,
    mesh_views,
    save_cameras,
    splats_to_mesh,
)
from vist3a.mesh.tsdf import TSDFVolume
from vist3a.scene_view import CameraSet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # the analytic scenes live with the benchmark that scores them
import mesh_scenes  # noqa: E402
from helpers import gltf_tools  # noqa: E402  (the Khronos validator, installed from tests/browser/gltf's lockfile)

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
FIXTURES = ROOT / "tests" / "fixtures" / "mesh"


# ------------------------------------------------------------------------------------------ topology


def _grid_torus(nu: int = 24, nv: int = 12) -> tuple[np.ndarray, np.ndarray]:
    u, v = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
    a, b = 2 * np.pi * u / nu, 2 * np.pi * v / nv
    verts = np.stack([(1 + 0.3 * np.cos(b)) * np.cos(a), 0.3 * np.sin(b), (1 + 0.3 * np.cos(b)) * np.sin(a)], -1).reshape(-1, 3)
    idx = lambda i, j: (i % nu) * nv + (j % nv)  # noqa: E731
    faces = []
    for i in range(nu):
        for j in range(nv):
            faces += [(idx(i, j), idx(i + 1, j), idx(i + 1, j + 1)), (idx(i, j), idx(i + 1, j + 1), idx(i, j + 1))]
    return verts, np.array(faces)[:, ::-1].copy()  # counter-clockwise seen from outside


def test_topology_counts_holes_pieces_and_genus():
    tetra = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]]), np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    t = mesh_topology(*tetra)
    assert (t.components, t.boundary_loops, t.genus, t.euler) == (1, 0, 0, 2)
    open_box = mesh_topology(tetra[0], tetra[1][1:])  # one face removed: one hole
    assert (open_box.boundary_loops, open_box.boundary_edges, open_box.genus) == (1, 3, 0)
    tv, tf = _grid_torus()
    t = mesh_topology(tv, tf)
    assert (t.components, t.boundary_loops, t.genus, t.nonmanifold_edges) == (1, 0, 1, 0)
    two = mesh_topology(np.concatenate([tv, tetra[0] + 5]), np.concatenate([tf, tetra[1] + len(tv)]))
    assert (two.components, two.genus) == (2, 1)


# -------------------------------------------------------------------------------------- extraction


def _sphere_volume(res: int = 40, radius: float = 0.7) -> TSDFVolume:
    vol = TSDFVolume(torch.full((3,), -1.0), torch.full((3,), 1.0), res)
    grid = torch.meshgrid(*vol._axes, indexing="ij")
    dist = torch.sqrt(sum(a * a for a in grid)) - radius
    vol.tsdf[:] = (dist / vol.truncation).clamp(-1, 1).float()
    vol.weight[:] = 1
    return vol


def test_extracted_surface_is_the_zero_level_wound_outwards():
    vol = _sphere_volume()
    v, f, n = vol.extract()
    r = np.linalg.norm(v, axis=1)
    assert np.abs(r - 0.7).max() < 0.5 * vol.voxel
    tri = v[f]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert ((face_n * tri.mean(1)).sum(1) > 0).all()  # counter-clockwise seen from outside (free space)
    assert ((n * v).sum(1) > 0).all()  # vertex normals point out too
    t = mesh_topology(v, f)
    assert (t.components, t.boundary_loops, t.genus) == (1, 0, 0)


def test_unseen_voxels_make_no_surface():
    """Cubes with an unseen corner are skipped (scikit-image tests its mask at a cube's far corner: if that
    ever changes, faces show up inside the unseen half and this fails)."""
    vol = _sphere_volume()
    half = vol.dims[0] // 2
    vol.weight[:half] = 0
    vol.tsdf[:half] = 1.0  # what an unseen voxel holds: a crossing with the seen side if it were meshed
    v, f, _ = vol.extract()
    seen_from = float(vol._axes[0][half])
    assert len(f) > 0 and v[:, 0].min() >= seen_from - 1e-6
    t = mesh_topology(v, f)
    assert t.components == 1 and t.boundary_loops == 1  # the cut: one hole, no wall across it


def test_empty_or_unseen_volume_has_no_surface():
    vol = TSDFVolume(torch.zeros(3), torch.ones(3), 16)
    v, f, _ = vol.extract()
    assert v.shape == (0, 3) and f.shape == (0, 3)
    with pytest.raises(ValueError, match="positive finite size"):
        TSDFVolume(torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]), 16)


# -------------------------------------------------------------------------------- splats -> mesh


@pytest.mark.slow
def test_torus_of_splats_meshes_as_one_ring_with_one_hole():
    scene = mesh_scenes.torus(n=5000)
    m = splats_to_mesh(scene.gaussians, None, resolution=48, image_size=96, extra_views=16)
    t = mesh_topology(m.vertices, m.faces)
    assert t.components == 1 and t.genus == 1 and t.nonmanifold_edges == 0
    assert t.boundary_loops <= 3  # pinholes where no view saw the surface squarely enough, at this low resolution
    score = mesh_scenes.chamfer(scene, m.vertices, m.faces, m=20_000)
    assert score["chamfer"] < 0.02  # measured 0.013 (voxel 0.06 = 0.02 of the diagonal)
    assert m.info["views"] == 16 and "sphere" in m.info["view_description"]
    # vertex colours come from the renders: pink icing on top (-y is up), dough below
    top, bottom = m.vertices[:, 1] < -0.3, m.vertices[:, 1] > 0.3
    assert m.colors[top].mean(0)[2] > m.colors[bottom].mean(0)[2] + 0.2  # icing is bluer than dough


@pytest.mark.slow
def test_a_trained_donut_meshes_as_one_ring_with_one_hole(monkeypatch):
    """A scene fitted to images of a donut (bench/mesh_trained_donut.py --save-scene: 3,000 Gaussians trained
    by our renderer from 24 views) with its training cameras: one closed ring of genus 1 near the true torus.
    Voxels finer than the depth noise resolve the noise into handles (measured: genus 3 at 0.6 x)."""
    from vist3a.formats import load_ply
    from vist3a.mesh import build

    scene, cams = load_ply(FIXTURES / "donut_trained.ply"), load_cameras(FIXTURES / "cameras.json")
    m = splats_to_mesh(scene, cams, resolution=128, image_size=128, extra_views=24)
    t = mesh_topology(m.vertices, m.faces)
    assert (t.components, t.genus, t.boundary_loops, t.nonmanifold_edges) == (1, 1, 0, 0), t
    assert max(m.info["resolution"]) < 128  # the voxel was held at the depth noise
    score = mesh_scenes.chamfer(mesh_scenes.torus(R=1.0, r=0.4), m.vertices.astype(np.float64), m.faces, m=20_000)
    assert score["chamfer"] < 0.01  # measured 0.0052 of the diagonal
    monkeypatch.setattr(build, "VOXEL_SPREADS", 0.3)
    fine = splats_to_mesh(scene, cams, resolution=128, image_size=128, extra_views=24)
    assert mesh_topology(fine.vertices, fine.faces).genus > 1


@pytest.mark.slow
def test_room_is_meshed_from_inside_with_its_cameras():
    scene = mesh_scenes.room(n=12_000)
    m = splats_to_mesh(scene.gaussians, scene.cameras, resolution=40, image_size=96, extra_views=12)
    assert "panorama" in m.info["view_description"]  # cameras inside the box: the far side is seen from inside
    t = mesh_topology(m.vertices, m.faces)
    assert t.components == 1 and t.genus == 0
    tri = m.vertices[m.faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert ((face_n * -tri.mean(1)).sum(1) > 0).mean() > 0.95  # faces look into the room, where the free space is
    assert mesh_scenes.chamfer(scene, m.vertices, m.faces, m=20_000)["chamfer"] < 0.02


def test_views_follow_the_cameras():
    lo, hi = torch.full((3,), -1.0), torch.full((3,), 1.0)
    room = mesh_scenes.room(n=200)
    inside = mesh_views(lo * 3, hi * 3, room.cameras, "auto", 8, 64)
    assert len(inside) == 13 + 8 and "panorama" in inside.description
    assert torch.allclose(inside.c2w[13:, :3, 3], room.cameras.c2w[:, :3, 3].mean(0).expand(8, 3), atol=1e-5)
    outside = mesh_views(lo, hi, mesh_scenes.sphere(n=200).cameras, "auto", 8, 64)
    assert "sphere" in outside.description
    assert (outside.c2w[13:, :3, 3].norm(dim=1) > math.sqrt(3)).all()  # all outside the box, looking in
    assert len(mesh_views(lo, hi, room.cameras, "predicted", 8, 64)) == 13
    assert len(mesh_views(lo, hi, None, "orbit", 8, 64)) == 8
    with pytest.raises(VIST3AError, match="needs the scene's cameras"):
        mesh_views(lo, hi, None, "predicted", 8, 64)


def _blob(n=500, opacity=0.9):
    g = torch.Generator().manual_seed(0)
    from vist3a.gaussians import Gaussians

    return Gaussians(torch.randn(n, 3, generator=g) * 0.3, torch.full((n, 3), 0.05), torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4),
                     torch.full((n,), opacity), torch.zeros(n, 3, 1))


def test_refuses_scenes_without_anything_to_mesh():
    from vist3a.gaussians import Gaussians

    empty = Gaussians(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 3, 1))
    with pytest.raises(MeshError, match="no Gaussians"):
        splats_to_mesh(empty)
    with pytest.raises(MeshError, match="renders no depth"):
        splats_to_mesh(_blob(opacity=0.001), resolution=16, image_size=32, extra_views=4)
    c2w = torch.eye(4)[None].clone()
    c2w[0, :3, 3] = torch.tensor([0.0, 0.0, 5.0])  # stands beyond the scene, looking along +z: away from it
    away = CameraSet(c2w, torch.tensor([[[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]]]), (32, 32))
    with pytest.raises(MeshError, match="renders no depth"):
        splats_to_mesh(_blob(), away, views="predicted", resolution=16, image_size=32)


def test_missing_libraries_are_named_in_one_line(monkeypatch):
    import importlib.util

    from vist3a.mesh import check_mesh_dependencies

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trimesh" else real(name, *a))
    with pytest.raises(MeshError, match=r"needs trimesh: pip install 'vist3a\[mesh\]'"):
        check_mesh_dependencies(write=True)
    check_mesh_dependencies(write=False)


def test_cameras_file_round_trip_and_refusals(tmp_path):
    cams = mesh_scenes.sphere(n=100).cameras
    path = save_cameras(tmp_path / "cameras.json", cams.c2w, cams.intrinsics, cams.image_size)
    back = load_cameras(path)
    torch.testing.assert_close(back.c2w, cams.c2w)
    torch.testing.assert_close(back.intrinsics, cams.intrinsics)
    assert back.image_size == cams.image_size
    (tmp_path / "bad.json").write_text(json.dumps({"c2w": [[1, 2]], "intrinsics": [], "image_size": [4, 4]}))
    with pytest.raises(Exception, match="expected c2w"):
        load_cameras(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(Exception, match="is not a cameras.json"):
        load_cameras(tmp_path / "junk.json")


# ------------------------------------------------------------------------------------- mesh files


def _small_mesh():
    v, f = _grid_torus(16, 8)
    colors = np.clip(0.5 + 0.4 * v, 0, 1)
    return SimpleNamespace(vertices=v.astype(np.float32), faces=f, colors=colors.astype(np.float32))


def test_glb_passes_the_khronos_validator_and_keeps_colours_and_winding(tmp_path):
    import trimesh

    from vist3a.formats.mesh_files import srgb_to_linear, write_mesh

    mesh = _small_mesh()
    path = write_mesh(mesh, tmp_path / "m.glb")
    proc = subprocess.run(["node", "validate.mjs", str(path)], cwd=gltf_tools(), capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])[str(path)]
    assert report["errors"] == 0 and report["warnings"] == 0, report["codes"]
    assert report["extensionsUsed"] == ["KHR_materials_unlit"] and report["triangles"] == len(mesh.faces)
    scene = trimesh.load(path, process=False)
    (geom,) = scene.geometry.values()
    np.testing.assert_allclose(geom.vertices, mesh.vertices * [-1, -1, 1], atol=1e-6)  # glTF axes: turned about Z
    assert geom.is_watertight and geom.volume > 0  # still counter-clockwise from outside
    linear = np.round(srgb_to_linear(mesh.colors) * 255)
    np.testing.assert_allclose(geom.visual.vertex_attributes["color"][:, :3], linear, atol=1)  # COLOR_0 holds linear values


@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_ply_and_obj_open_in_trimesh_with_srgb_colours(tmp_path, suffix):
    import trimesh

    from vist3a.formats.mesh_files import write_mesh

    mesh = _small_mesh()
    path = write_mesh(mesh, tmp_path / f"m{suffix}", axes="scene")
    back = trimesh.load(path, force="mesh", process=False)
    assert len(back.faces) == len(mesh.faces)
    np.testing.assert_allclose(back.vertices, mesh.vertices, atol=1e-5)
    np.testing.assert_allclose(back.visual.vertex_colors[:, :3], np.round(mesh.colors * 255), atol=1)
    assert back.volume > 0


def test_mesh_writer_refuses_bad_input_and_leaves_no_file(tmp_path):
    from vist3a.formats.mesh_files import MeshFormatError, write_mesh

    good = _small_mesh()
    target = tmp_path / "m.glb"
    target.write_bytes(b"old")
    bad = SimpleNamespace(vertices=good.vertices, faces=good.faces + len(good.vertices), colors=good.colors)
    with pytest.raises(MeshFormatError, match="face indices outside"):
        write_mesh(bad, target)
    with pytest.raises(MeshFormatError, match="must end in .glb, .ply or .obj"):
        write_mesh(good, tmp_path / "m.stl")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.glb"]


# ------------------------------------------------------------------------------------------- CLI


def _cli(*args, timeout=HANG_S):
    return subprocess.run([sys.executable, "-m", "vist3a", *args], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)


@pytest.mark.slow
def test_cli_meshes_a_splat_file_with_its_cameras(tmp_path):
    from vist3a.formats import save_ply

    scene = mesh_scenes.sphere(n=3000)
    save_ply(scene.gaussians, tmp_path / "s.ply")
    save_cameras(tmp_path / "cameras.json", scene.cameras.c2w, scene.cameras.intrinsics, scene.cameras.image_size)
    r = _cli("mesh", str(tmp_path / "s.ply"), "-o", str(tmp_path / "s.obj"), "--cameras", str(tmp_path / "cameras.json"),
             "--resolution", "32", "--image-size", "64", "--orbit-views", "8")
    assert r.returncode == 0, r.stderr
    assert "13 predicted cameras + 8 views on a sphere" in r.stdout and "1 piece(s)" in r.stdout
    assert (tmp_path / "s.obj").is_file()


def test_cli_mesh_refuses_bad_requests_in_one_line(tmp_path):
    from vist3a.formats import save_ply

    save_ply(_blob(50), tmp_path / "s.ply")
    cases = [
        (["mesh", str(tmp_path / "s.ply"), "-o", str(tmp_path / "m.stl")], "must end in .glb or .ply or .obj"),
        (["mesh", str(tmp_path / "s.ply"), "-o", str(tmp_path / "m.glb"), "--mesh-views", "predicted"], "carries no cameras"),
        (["mesh", str(tmp_path / "nope.ply"), "-o", str(tmp_path / "m.glb")], "does not exist"),
        (["mesh", str(tmp_path / "s.ply"), "-o", str(tmp_path / "m.glb"), "--cameras", str(tmp_path / "s.ply")], "is not a cameras.json"),
    ]
    for args, message in cases:
        r = _cli(*args)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert not (tmp_path / "m.glb").exists()
