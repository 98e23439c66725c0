"""The 3DGS PLY (vist3a.formats.ply and its binary tables): round trips, the 3DGS layout, every layout the reader takes,
block by block, the official exporter's variant (opacity stored linear), one-line errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import QUANTISABLE_SH, official_ply, random_gaussians, run_cli
from plyfile import PlyData, PlyElement

from vist3a.formats import PlyError, load_ply, save_ply
from vist3a.gaussians import Gaussians


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


# ------------------------------------------------------------------- PLY layouts the fast reader takes


def _plyfile_write(path, g: Gaussians, byte_order="<", double=("x",), shuffle_rest=False, extra_elements=(), text=False):
    """The same scene as a PLY written by plyfile with a twist: other byte order, some double properties,
    f_rest properties out of order, other elements before/after the vertices."""
    from plyfile import PlyData, PlyElement

    n, k = g.num, g.sh.shape[2]
    o = g.opacities.double()
    cols = {"x": g.means[:, 0], "y": g.means[:, 1], "z": g.means[:, 2]}
    cols.update({f"f_dc_{c}": g.sh[:, c, 0] for c in range(3)})
    rest = {f"f_rest_{c * (k - 1) + j}": g.sh[:, c, j + 1] for c in range(3) for j in range(k - 1)}
    cols.update(dict(reversed(list(rest.items()))) if shuffle_rest else rest)
    cols["opacity"] = (o / (1 - o)).log()
    cols.update({f"scale_{i}": g.scales[:, i].log() for i in range(3)})
    cols.update({f"rot_{i}": g.rotations[:, i] for i in range(4)})
    table = np.empty(n, dtype=[(name, "f8" if name in double else "f4") for name in cols])
    for name, values in cols.items():
        table[name] = values.double().numpy()
    faces = np.empty(2, dtype=[("vertex_indices", "i4", (3,))])
    faces["vertex_indices"] = [[0, 1, 2], [1, 2, 3]]
    extra = {"face": PlyElement.describe(faces, "face"),
             "camera": PlyElement.describe(np.zeros(1, dtype=[("f", "f4"), ("id", "u1")]), "camera")}
    elements = [extra[e] for e in extra_elements if e.startswith("camera")]
    elements.append(PlyElement.describe(table, "vertex"))
    elements += [extra[e] for e in extra_elements if e == "face"]
    PlyData(elements, text=text, byte_order=byte_order, comments=["written by a test"]).write(str(path))


@pytest.mark.parametrize("layout", [
    dict(), dict(byte_order=">"), dict(double=("x", "f_rest_3", "opacity")), dict(shuffle_rest=True),
    dict(extra_elements=("camera", "face")), dict(text=True),
])
def test_reader_takes_every_ply_layout(tmp_path, layout):
    g = random_gaussians(30, 2, 11, **QUANTISABLE_SH)
    path = tmp_path / "layout.ply"
    _plyfile_write(path, g, **layout)
    got = load_ply(path)
    for name in ("means", "scales", "rotations", "opacities", "sh"):
        torch.testing.assert_close(getattr(got, name), getattr(g, name), rtol=1e-5, atol=1e-6, msg=name)


def test_reader_header_errors_are_one_line(tmp_path):
    from vist3a.formats import PlyError, save_ply

    body = save_ply(random_gaussians(3, 0, **QUANTISABLE_SH), tmp_path / "ok.ply").read_bytes()
    head, rest = body.split(b"end_header\n", 1)
    cases = {
        "dup.ply": (head.replace(b"property float y\n", b"property float x\n") + b"end_header\n" + rest, "appears twice"),
        "type.ply": (head.replace(b"property float y", b"property quad y") + b"end_header\n" + rest, "cannot read"),
        "count.ply": (head.replace(b"element vertex 3", b"element vertex three") + b"end_header\n" + rest, "not a number"),
        "format.ply": (head.replace(b"binary_little_endian", b"binary_middle_endian") + b"end_header\n" + rest, "format"),
        "big.ply": (head.replace(b"element vertex 3", b"element vertex 99999999999") + b"end_header\n" + rest, "truncated"),
        "noend.ply": (head, "header"),
    }
    for name, (data, needle) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(PlyError, match=needle) as e:
            load_ply(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and "\n" not in str(e.value)


def test_ply_reader_gives_the_same_scene_block_by_block(tmp_path, monkeypatch):
    from vist3a.formats import PlyError, ply_binary, save_ply

    g = random_gaussians(500, 3, **QUANTISABLE_SH)
    save_ply(g, tmp_path / "s.ply")
    whole = load_ply(tmp_path / "s.ply")
    monkeypatch.setattr(ply_binary, "CHUNK_BYTES", 1000)  # 4 rows a block
    blocks = load_ply(tmp_path / "s.ply")
    for name in ("means", "scales", "rotations", "opacities", "sh"):
        assert torch.equal(getattr(whole, name), getattr(blocks, name)), name
    # problems in the last block are still found and counted over every block
    raw = (tmp_path / "s.ply").read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    row = (len(raw) - end) // 500
    table = np.frombuffer(raw, np.float32, offset=end).reshape(500, row // 4).copy()
    table[[3, 498], -4:] = 0.0  # rot_0..3 close each row
    (tmp_path / "zero.ply").write_bytes(raw[:end] + table.tobytes())
    with pytest.raises(PlyError, match="has 2 zero-length rotation"):
        load_ply(tmp_path / "zero.ply")
    table = np.frombuffer(raw, np.float32, offset=end).reshape(500, row // 4).copy()
    table[499, 1] = np.nan  # y of the last row
    (tmp_path / "nan.ply").write_bytes(raw[:end] + table.tobytes())
    with pytest.raises(PlyError, match="1 non-finite values .* property 'y'"):
        load_ply(tmp_path / "nan.ply")


# ------------------------------------------------------------------------- official-layout PLYs


@pytest.fixture()
def official(tmp_path):
    return official_ply(tmp_path)


def test_official_ply_is_detected_and_read_linear(official):
    from vist3a.formats import read_ply

    path, g = official
    notes = []
    loaded = load_ply(path, report=notes.append)
    torch.testing.assert_close(loaded.opacities, g.opacities)  # 0.129 stays 0.129, not sigmoid(0.129)
    torch.testing.assert_close(loaded.sh, g.sh)
    torch.testing.assert_close(loaded.scales, g.scales, rtol=1e-5, atol=1e-7)
    assert len(notes) == 1 and str(path) in notes[0] and "official" in notes[0] and "linear" in notes[0]
    forced = read_ply(path, opacity="logit")
    assert forced.opacity == "logit" and not forced.detected and forced.note() is None
    torch.testing.assert_close(forced.gaussians.opacities, torch.sigmoid(g.opacities))


def test_standard_ply_stays_logit_and_linear_is_refused_when_impossible(tmp_path):
    from vist3a.formats import PlyError, read_ply, save_ply

    g = random_gaussians(50, 0, 1, **QUANTISABLE_SH)
    path = save_ply(g, tmp_path / "ours.ply")  # DC only too, but logits outside [0, 1]
    scene = read_ply(path)
    assert scene.opacity == "logit" and scene.note() is None
    torch.testing.assert_close(scene.gaussians.opacities, g.opacities)
    with pytest.raises(PlyError, match="outside \\[0, 1\\], so they cannot be linear") as e:
        read_ply(path, opacity="linear")
    assert str(path) in str(e.value)
    with pytest.raises(ValueError, match="opacity must be one of auto, logit, linear"):
        read_ply(path, opacity="sigmoid")


def test_official_ply_renders_like_the_scene_it_was_written_from(official):
    from vist3a.render import render_orbit

    path, g = official
    ref, _, _ = render_orbit(g, n=2, width=40, height=40)
    got, _, _ = render_orbit(load_ply(path), n=2, width=40, height=40)
    assert (ref - 1.0).abs().max() > 0.1  # something is drawn
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)


def test_cli_info_and_render_report_the_convention(official, tmp_path):
    from vist3a.formats import save_ply

    path, _ = official
    proc = run_cli("info", path)
    assert proc.returncode == 0 and "opacity stored linear" in proc.stdout and "official" in proc.stdout
    ours = save_ply(random_gaussians(30, 3, **QUANTISABLE_SH), tmp_path / "ours.ply")
    proc = run_cli("info", ours)
    assert proc.returncode == 0 and "opacity stored as a logit" in proc.stdout
    proc = run_cli("render", path, "-o", tmp_path / "r.png", "--orbit", 1, "--size", 16)
    assert proc.returncode == 0 and "note:" in proc.stderr and "official" in proc.stderr
    proc = run_cli("render", path, "-o", tmp_path / "r2.png", "--orbit", 1, "--size", 16, "--opacity", "logit")
    assert proc.returncode == 0 and "note:" not in proc.stderr
    proc = run_cli("render", ours, "-o", tmp_path / "r3.png", "--orbit", 1, "--size", 16, "--opacity", "linear")
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1 and "cannot be linear" in proc.stderr
    assert not (tmp_path / "r3.png").exists()
