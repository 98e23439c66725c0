"""Gaussians container, 3DGS PLY and .splat files, atomic writes."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_gaussians
from plyfile import PlyData, PlyElement

import vist3a.formats.ply as ply_module
from vist3a import atomic
from vist3a.atomic import WriteBehind, atomic_save_bytes, atomic_write
from vist3a.formats import PlyError, load_ply, save_ply, save_splat
from vist3a.gaussians import SH_C0, Gaussians, wxyz_to_xyzw, xyzw_to_wxyz


def assert_same(a: Gaussians, b: Gaussians) -> None:
    for name in ("means", "scales", "rotations", "opacities", "sh"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-6, msg=name)


def write_vertex_ply(path: Path, columns: dict, text: bool = False) -> None:
    n = len(next(iter(columns.values())))
    table = np.empty(n, dtype=[(name, "<f4") for name in columns])
    for name, values in columns.items():
        table[name] = values
    PlyData([PlyElement.describe(table, "vertex")], text=text, byte_order="<").write(str(path))


def splat_columns(n: int = 4, rest: int = 0) -> dict:
    cols = {name: np.zeros(n) for name in ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2")}
    cols.update({f"f_rest_{i}": np.zeros(n) for i in range(rest)})
    cols.update({"opacity": np.zeros(n), "scale_0": np.full(n, -2.0), "scale_1": np.full(n, -2.0)})
    cols.update({"scale_2": np.full(n, -2.0), "rot_0": np.ones(n)})
    cols.update({name: np.zeros(n) for name in ("rot_1", "rot_2", "rot_3")})
    return cols


# ------------------------------------------------------------------------------------- container


def test_shapes_are_checked_on_construction():
    g = random_gaussians(5, 1)
    with pytest.raises(ValueError, match="rotations"):
        Gaussians(g.means, g.scales, g.rotations[:, :3], g.opacities, g.sh)
    with pytest.raises(ValueError, match="sh"):
        Gaussians(g.means, g.scales, g.rotations, g.opacities, g.sh.transpose(1, 2))
    with pytest.raises(ValueError, match="not \\(degree\\+1\\)\\^2"):
        Gaussians(g.means, g.scales, g.rotations, g.opacities, g.sh[:, :, :3])
    assert g.num == len(g) == 5 and g.sh_degree == 1


def test_validate_reports_bad_values():
    g = random_gaussians(5, 0)
    g.validate()
    bad = g.opacities.clone()
    bad[2] = float("nan")
    with pytest.raises(ValueError, match="opacities has 1 non-finite"):
        Gaussians(g.means, g.scales, g.rotations, bad, g.sh).validate()
    with pytest.raises(ValueError, match="scales must be >= 0"):
        Gaussians(g.means, -g.scales, g.rotations, g.opacities, g.sh).validate()
    with pytest.raises(ValueError, match="unit quaternions"):
        Gaussians(g.means, g.scales, g.rotations * 2, g.opacities, g.sh).validate()


def test_xyzw_conversion_and_from_xyzw():
    q = torch.tensor([[0.1, 0.2, 0.3, 0.9]])
    assert torch.equal(xyzw_to_wxyz(q), torch.tensor([[0.9, 0.1, 0.2, 0.3]]))
    assert torch.equal(wxyz_to_xyzw(xyzw_to_wxyz(q)), q)
    g = random_gaussians(3, 0)
    built = Gaussians.from_xyzw(g.means, g.scales, wxyz_to_xyzw(g.rotations), g.opacities, g.sh)
    assert torch.equal(built.rotations, g.rotations)


def test_prune_truncate_and_to():
    g = random_gaussians(20, 2)
    kept = g.prune(min_opacity=0.5)
    assert kept.num == int((g.opacities >= 0.5).sum()) and (kept.opacities >= 0.5).all()
    mask = torch.zeros(20, dtype=torch.bool)
    mask[[1, 4]] = True
    picked = g.prune(keep_mask=mask)
    assert torch.equal(picked.means, g.means[[1, 4]])
    low = g.truncate_sh(1)
    assert low.sh_degree == 1 and torch.equal(low.sh, g.sh[:, :, :4])
    with pytest.raises(ValueError, match="degree 3"):
        g.truncate_sh(3)
    doubled = g.to(dtype=torch.float64)
    assert doubled.means.dtype == torch.float64 and doubled.sh.dtype == torch.float64


# ------------------------------------------------------------------------------------------- PLY


@pytest.mark.parametrize("degree", [0, 1, 2, 3, 4])
def test_ply_round_trip(tmp_path, degree):
    g = random_gaussians(40, degree, seed=degree)
    path = save_ply(g, tmp_path / "scene.ply")
    loaded = load_ply(path)
    assert loaded.sh_degree == degree and loaded.num == 40
    assert_same(loaded, g)


def test_ply_layout_matches_3dgs(tmp_path):
    g = random_gaussians(6, 2)
    path = save_ply(g, tmp_path / "scene.ply")
    ply = PlyData.read(str(path))
    assert ply.text is False and ply.byte_order == "<"
    names = [p.name for p in ply["vertex"].properties]
    rest = [f"f_rest_{i}" for i in range(24)]
    assert names == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *rest, "opacity",
                     "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    v = ply["vertex"].data
    sh = g.sh.numpy()
    for c in range(3):
        for j in range(8):  # channel-major: f_rest_{c*8+j} is channel c, basis j+1
            np.testing.assert_allclose(v[f"f_rest_{c * 8 + j}"], sh[:, c, j + 1], rtol=1e-6)
    o = g.opacities.double().numpy()
    np.testing.assert_allclose(v["opacity"], np.log(o / (1 - o)), rtol=1e-5)
    np.testing.assert_allclose(v["scale_1"], np.log(g.scales[:, 1].double().numpy()), rtol=1e-5)
    np.testing.assert_allclose(v["rot_0"], g.rotations[:, 0].numpy())  # w first
    assert (v["nx"] == 0).all()


def test_save_with_lower_sh_degree(tmp_path):
    g = random_gaussians(10, 4)
    loaded = load_ply(save_ply(g, tmp_path / "d1.ply", sh_degree=1))
    assert loaded.sh_degree == 1
    torch.testing.assert_close(loaded.sh, g.sh[:, :, :4])
    with pytest.raises(ValueError, match="degree 5"):
        save_ply(g.truncate_sh(1), tmp_path / "bad.ply", sh_degree=5)


def test_reads_ascii_ply_without_normals(tmp_path):
    cols = splat_columns(3, rest=9)
    cols["x"] = np.array([1.0, 2.0, 3.0])
    cols["f_rest_3"] = np.array([0.5, 0.0, 0.0])  # channel 1 (3 per channel), first band-1 basis
    write_vertex_ply(tmp_path / "ascii.ply", cols, text=True)
    g = load_ply(tmp_path / "ascii.ply")
    assert g.sh_degree == 1 and g.means[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert g.sh[0, 1, 1] == 0.5 and g.sh[0].abs().sum() == 0.5
    torch.testing.assert_close(g.opacities, torch.full((3,), 0.5))
    torch.testing.assert_close(g.scales, torch.full((3, 3), math.exp(-2.0)))


def test_bad_ply_not_a_ply(tmp_path):
    path = tmp_path / "picture.ply"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(PlyError, match="not a PLY file") as e:
        load_ply(path)
    assert str(path) in str(e.value)


def test_bad_ply_truncated(tmp_path):
    path = save_ply(random_gaussians(20, 1), tmp_path / "cut.ply")
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(PlyError, match="truncated") as e:
        load_ply(path)
    assert str(path) in str(e.value)


def test_bad_ply_truncated_header(tmp_path):
    path = save_ply(random_gaussians(20, 1), tmp_path / "cut.ply")
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(PlyError, match="header") as e:
        load_ply(path)
    assert str(path) in str(e.value)


def test_bad_ply_missing_properties(tmp_path):
    path = tmp_path / "points.ply"
    cols = {"x": np.zeros(3), "y": np.zeros(3), "z": np.zeros(3), "red": np.zeros(3)}
    write_vertex_ply(path, cols)
    with pytest.raises(PlyError, match="missing the properties f_dc_0, f_dc_1, f_dc_2, opacity") as e:
        load_ply(path)
    assert str(path) in str(e.value) and "rot_3" in str(e.value)


def test_bad_ply_zero_vertices(tmp_path):
    path = tmp_path / "empty.ply"
    write_vertex_ply(path, {k: v[:0] for k, v in splat_columns(1).items()})
    with pytest.raises(PlyError, match="zero vertices") as e:
        load_ply(path)
    assert str(path) in str(e.value)


def test_bad_ply_non_finite(tmp_path):
    path = tmp_path / "nan.ply"
    cols = splat_columns(4)
    cols["scale_1"] = np.array([0.0, np.nan, np.inf, 0.0])
    write_vertex_ply(path, cols)
    with pytest.raises(PlyError, match="2 non-finite values .* 'scale_1'") as e:
        load_ply(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("rest", [10, 44])
def test_bad_ply_wrong_f_rest_count(tmp_path, rest):
    path = tmp_path / "rest.ply"
    write_vertex_ply(path, splat_columns(2, rest=rest))
    with pytest.raises(PlyError, match=f"has {rest} f_rest_") as e:
        load_ply(path)
    assert str(path) in str(e.value)


def test_ply_error_is_a_value_error_and_missing_file_is_not_found(tmp_path):
    assert issubclass(PlyError, ValueError)
    with pytest.raises(FileNotFoundError):
        load_ply(tmp_path / "nope.ply")


def test_empty_scene_is_not_written(tmp_path):
    empty = random_gaussians(3, 0).prune(min_opacity=2.0)
    with pytest.raises(ValueError, match="no Gaussians"):
        save_ply(empty, tmp_path / "empty.ply")
    assert not (tmp_path / "empty.ply").exists()


# ---------------------------------------------------------------------------------------- .splat


def test_splat_layout(tmp_path):
    g = random_gaussians(7, 2)
    path = save_splat(g, tmp_path / "scene.splat")
    data = path.read_bytes()
    assert len(data) == 32 * 7
    rec = np.frombuffer(
        data, dtype=[("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)]
    )
    importance = g.scales.prod(dim=1) * g.opacities
    order = torch.argsort(importance, descending=True)
    np.testing.assert_array_equal(rec["pos"], g.means[order].numpy())
    np.testing.assert_array_equal(rec["scale"], g.scales[order].numpy())
    rgb = np.clip((0.5 + SH_C0 * g.sh[order, :, 0].numpy()) * 255, 0, 255)
    assert np.abs(rec["rgba"][:, :3].astype(float) - rgb).max() <= 1.0
    assert np.abs(rec["rgba"][:, 3] - g.opacities[order].numpy() * 255).max() <= 1.0
    rot = (rec["rot"].astype(np.float64) - 128) / 128
    assert np.abs(rot - g.rotations[order].numpy()).max() <= 1 / 128 + 1e-6


# ---------------------------------------------------------------------------------------- atomic


def test_atomic_write_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as f:
            f.write(b"partial data")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_failure_keeps_previous_file(tmp_path):
    target = atomic_save_bytes(tmp_path / "out.bin", b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as f:
            f.write(b"new")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]
    with atomic_write(target, "w") as f:
        f.write("text")
    assert target.read_text() == "text"


def test_atomic_write_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="output directory .*missing does not exist; create it"):
        atomic_save_bytes(tmp_path / "missing" / "x.ply", b"")


def test_write_behind_hands_every_finished_window_to_the_disk(tmp_path, monkeypatch):
    advice = []
    real = os.posix_fadvise if hasattr(os, "posix_fadvise") else None

    def record(fd, offset, length, how):
        advice.append((offset, length, how))
        assert os.fstat(fd).st_size >= offset + length  # only bytes already written (flushed) are handed over
        if real is not None:
            real(fd, offset, length, how)

    monkeypatch.setattr(atomic.os, "posix_fadvise", record, raising=False)
    monkeypatch.setattr(atomic.os, "POSIX_FADV_DONTNEED", getattr(os, "POSIX_FADV_DONTNEED", 4), raising=False)
    data = np.random.default_rng(0).integers(0, 256, 1_000_003, dtype=np.uint8)
    with atomic_write(tmp_path / "w.bin", "wb") as f:
        stream = WriteBehind(f, window=1 << 16)
        stream.write(b"head")  # small writes accumulate ...
        assert stream.write(data[:700_000]) == 700_000  # ... big ones go out a window at a time
        stream.write(memoryview(data[700_000:]))
    assert (tmp_path / "w.bin").read_bytes() == b"head" + data.tobytes()
    # contiguous ranges from 0, each at least a window, covering all but the unfinished tail
    assert advice and advice[0][0] == 0 and all(how == atomic.os.POSIX_FADV_DONTNEED for *_, how in advice)
    assert all(a[0] + a[1] == b[0] for a, b in zip(advice, advice[1:])) and min(a[1] for a in advice) >= 1 << 16
    assert 4 + data.size - (1 << 16) < advice[-1][0] + advice[-1][1] <= 4 + data.size
    # without posix_fadvise (macOS, Windows) it is a plain write
    monkeypatch.delattr(atomic.os, "posix_fadvise")
    advice.clear()
    with atomic_write(tmp_path / "plain.bin", "wb") as f:
        WriteBehind(f, window=1 << 16).write(data)
    assert (tmp_path / "plain.bin").read_bytes() == data.tobytes() and advice == []


def test_ply_and_splat_files_do_not_depend_on_blocks_or_the_write_behind_window(tmp_path, monkeypatch):
    g = random_gaussians(3000, 2)
    wide = [save_ply(g, tmp_path / "a.ply").read_bytes(), save_splat(g, tmp_path / "a.splat").read_bytes()]
    monkeypatch.setattr(atomic, "WRITE_BEHIND_BYTES", 4096)
    monkeypatch.setattr(ply_module.ply_binary, "CHUNK_BYTES", 1000)  # 7 rows a block: the two buffers alternate
    narrow = [save_ply(g, tmp_path / "b.ply").read_bytes(), save_splat(g, tmp_path / "b.splat").read_bytes()]
    assert wide == narrow


def test_save_ply_failure_mid_write_leaves_no_file(tmp_path, monkeypatch):
    def failing_write(stream, table):
        stream.write(b"\x00" * 64)  # part of the body made it to disk, then the disk filled up
        raise OSError("disk full")

    monkeypatch.setattr(ply_module.ply_binary, "write_table", failing_write)
    with pytest.raises(OSError, match="disk full"):
        save_ply(random_gaussians(5, 0), tmp_path / "scene.ply")
    assert list(tmp_path.iterdir()) == []
