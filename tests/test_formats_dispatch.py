"""Splat files that open everywhere: default SH degree, official-layout PLYs, format conversion."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import QUANTISABLE_SH, plain_gaussians, random_gaussians, write_official_ply

from vist3a.formats import VIEWER_SH_DEGREE, load_ply
from vist3a.gaussians import Gaussians
from vist3a.outputs import save_scene_outputs


def ply_rest_count(path) -> int:
    header = path.read_bytes()[:8192].split(b"end_header")[0].decode()
    return sum(line.startswith("property float f_rest_") for line in header.splitlines())


# ------------------------------------------------------------------------------- default SH degree


def test_default_ply_is_sh_degree_3_and_4_stays_available(tmp_path):
    scene = SimpleNamespace(gaussians=random_gaussians(60, 4, **QUANTISABLE_SH))
    (default,) = save_scene_outputs(scene, tmp_path / "default.ply")
    assert VIEWER_SH_DEGREE == 3 and ply_rest_count(default) == 45  # what SuperSplat / Spark accept
    assert load_ply(default).sh_degree == 3
    (full,) = save_scene_outputs(scene, tmp_path / "full.ply", sh_degree=4)
    assert ply_rest_count(full) == 72 and load_ply(full).sh_degree == 4
    (low,) = save_scene_outputs(SimpleNamespace(gaussians=random_gaussians(60, 1, **QUANTISABLE_SH)), tmp_path / "low.ply")
    assert load_ply(low).sh_degree == 1  # capped at what the scene has, never an error


# ------------------------------------------------------------------------- official-layout PLYs



@pytest.fixture()
def official(tmp_path):
    g = random_gaussians(200, 0, 3, **QUANTISABLE_SH)
    g = Gaussians(g.means, g.scales, g.rotations, torch.linspace(0.0, 1.0, g.num), g.sh)  # incl. exactly 0 and 1
    path = tmp_path / "gaussians.ply"
    write_official_ply(path, g)
    return path, g


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


def run_cli(*args):
    """`python -m vist3a ARGS` in this process (a subprocess per call costs ~15 s of imports on CI)."""
    import contextlib
    import io

    from vist3a.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


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


# ------------------------------------------------------------------------------ formats and convert

FORMATS = (".ply", ".spz", ".splat", ".glb", ".spz.glb")
# what each format keeps: .spz quantises (8-bit colour/alpha, 24-bit positions, log-scale /16, 4-5 bit SH),
# .splat keeps float positions/scales but 8-bit colour/alpha and rotation * 128
TOL = {".ply": dict(means=1e-6, scales=1e-6, rot=1e-6, alpha=1e-6, dc=1e-6, rest=1e-6),
       ".spz": dict(means=2.0 ** -12, scales=0.035, rot=0.02, alpha=0.5 / 255 + 1e-6, dc=0.015, rest=0.07),
       ".splat": dict(means=0, scales=0, rot=0.02, alpha=1 / 255 + 1e-6, dc=0.015, rest=None),  # truncates to 8 bits
       ".glb": dict(means=0, scales=0, rot=1e-6, alpha=0, dc=0, rest=0),  # float32 as they are (glTF axes undone exactly)
       ".spz.glb": dict(means=2.0 ** -12, scales=0.035, rot=0.02, alpha=0.5 / 255 + 1e-6, dc=0.015, rest=0.07)}


def assert_kept(got: Gaussians, ref: Gaussians, *formats: str) -> None:
    tol = {k: sum(TOL[f][k] or 0 for f in formats) for k in TOL[".ply"]}
    order = torch.argsort(ref.means[:, 0]), torch.argsort(got.means[:, 0])  # .splat reorders its rows
    ref, got = ref.select(order[0]), got.select(order[1])
    assert (got.means - ref.means).abs().max() <= tol["means"] + 1e-7
    assert ((got.scales / ref.scales).log().abs().max()) <= tol["scales"] + 1e-6
    dots = (got.rotations * ref.rotations).sum(1).abs()  # q and -q are the same rotation
    assert (1 - dots).max() <= tol["rot"]
    assert (got.opacities - ref.opacities).abs().max() <= tol["alpha"] + 1e-6
    assert (got.sh[:, :, 0] - ref.sh[:, :, 0]).abs().max() <= tol["dc"] + 1e-6
    k = got.sh.shape[2]
    if k > 1:
        assert (got.sh[:, :, 1:] - ref.sh[:, :, 1:k]).abs().max() <= tol["rest"] + 1e-6


@pytest.mark.parametrize("src", FORMATS)
@pytest.mark.parametrize("dst", FORMATS)
def test_convert_every_format_pair(tmp_path, src, dst):
    from vist3a.formats import MAX_SH_DEGREE, convert, read_splats, write_splats

    ref = random_gaussians(80, 4, 7, **QUANTISABLE_SH)
    first = write_splats(ref, tmp_path / f"in{src}", sh_degree=None)
    source = read_splats(first)
    assert source.sh_degree == min(4, MAX_SH_DEGREE[src])
    assert_kept(source, ref, src)
    out, g = convert(first, tmp_path / f"out{dst}")
    back = read_splats(out)
    assert back.num == ref.num and back.sh_degree == min(3, MAX_SH_DEGREE[src], MAX_SH_DEGREE[dst])
    assert_kept(back, ref, src, dst)


def test_convert_cli_and_its_errors(tmp_path, official):
    from vist3a.formats import save_ply

    path, g = official
    proc = run_cli("convert", path, tmp_path / "official.spz")
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "official" in proc.stderr  # the layout is reported while converting
    from vist3a.formats.spz import load_spz

    assert (load_spz(tmp_path / "official.spz").opacities - g.opacities.clamp(1e-4, 1 - 1e-4)).abs().max() <= 1 / 255
    src = save_ply(random_gaussians(40, 4, **QUANTISABLE_SH), tmp_path / "d4.ply")
    assert run_cli("convert", src, tmp_path / "full.ply", "--sh-degree", 4).returncode == 0
    assert ply_rest_count(tmp_path / "full.ply") == 72
    assert run_cli("convert", src, tmp_path / "default.ply").returncode == 0
    assert ply_rest_count(tmp_path / "default.ply") == 45
    (tmp_path / "junk.spz").write_bytes(b"not gzip at all")
    for args, needle, out in [
        ((src, tmp_path / "x.obj"), "must end in", "x.obj"),
        ((tmp_path / "nope.ply", tmp_path / "a.spz"), "does not exist", "a.spz"),
        ((src, tmp_path / "b.spz", "--sh-degree", 4), ".spz holds SH up to degree 3", "b.spz"),
        ((src, tmp_path / "c.splat", "--sh-degree", 2), ".splat holds SH up to degree 0", "c.splat"),
        ((tmp_path / "junk.spz", tmp_path / "d.ply"), "junk.spz", "d.ply"),
        ((src, tmp_path / "e.ply", "--sh-degree", 9), "between 0 and 4", "e.ply"),
    ]:
        proc = run_cli("convert", *args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and needle in errors[0], proc.stderr
        assert not (tmp_path / out).exists()


def test_scene_outputs_follow_the_extension(tmp_path):
    from vist3a.formats import read_splats

    scene = SimpleNamespace(gaussians=random_gaussians(50, 4, **QUANTISABLE_SH))
    for name, degree in (("s.spz", 3), ("s.splat", 0), ("s.ply", 3)):
        (path,) = save_scene_outputs(scene, tmp_path / name)
        assert read_splats(path).sh_degree == degree


def test_splat_reader_refuses_damaged_files(tmp_path):
    from vist3a.formats import PlyError, load_splat

    (tmp_path / "odd.splat").write_bytes(bytes(33))
    with pytest.raises(PlyError, match="not a positive multiple of 32"):
        load_splat(tmp_path / "odd.splat")
    (tmp_path / "zero.splat").write_bytes(bytes(64))  # rotation bytes 0 -> (-1,-1,-1,-1): fine; scales 0: fine
    assert load_splat(tmp_path / "zero.splat").num == 2
    rec = bytearray(32)
    rec[28:32] = bytes([128] * 4)  # a zero quaternion
    (tmp_path / "zq.splat").write_bytes(bytes(rec))
    with pytest.raises(PlyError, match="zero-length rotation"):
        load_splat(tmp_path / "zq.splat")


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


# ------------------------------------------------------------------------ trajectory and depth videos


def test_interpolated_trajectory_follows_the_official_rule():
    from vist3a.render import look_at
    from vist3a.render.trajectory import interpolate_cameras

    eyes = torch.tensor([[3.0, 0, 0], [0, 0, 3.0], [-3.0, 0.5, 0]])
    c2w = torch.stack([look_at(e, torch.zeros(3)) for e in eyes])
    K = torch.tensor([[[100.0, 0, 32], [0, 100, 32], [0, 0, 1]], [[120.0, 0, 32], [0, 120, 32], [0, 0, 1]],
                      [[80.0, 0, 30], [0, 80, 34], [0, 0, 1]]])
    cams, Ks = interpolate_cameras(c2w, K, between=10)
    assert cams.shape == (22, 4, 4) and Ks.shape == (22, 3, 3)  # (V-1)(t+1): the last camera is not rendered
    torch.testing.assert_close(cams[0], c2w[0])
    torch.testing.assert_close(cams[11], c2w[1], atol=1e-6, rtol=0)
    t = 3 / 11
    torch.testing.assert_close(cams[3, :3, 3], (1 - t) * c2w[0, :3, 3] + t * c2w[1, :3, 3])
    torch.testing.assert_close(Ks[3], (1 - t) * K[0] + t * K[1])
    R = cams[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(22, 3, 3), atol=1e-5, rtol=0)
    assert (torch.linalg.det(R) > 0).all()
    # the projection of the blended matrix is the closest rotation: for two rotations about one axis it is
    # the rotation by the blended angle's direction (here the halfway one, 45 degrees)
    mid = interpolate_cameras(c2w[:2], K[:2], between=1)[0][1, :3, :3]
    angle = torch.arccos(((c2w[0, :3, :3].T @ mid).trace() - 1) / 2)
    assert abs(float(angle) - math.pi / 4) < 1e-4


def test_trajectory_and_depth_videos_render(tmp_path):
    from vist3a.render import orbit_cameras, scene_bounds
    from vist3a.render.trajectory import colorize_depth, render_trajectory, turbo

    g = random_gaussians(400, 1, 2, **QUANTISABLE_SH)
    center, radius = scene_bounds(g)
    c2w, K = orbit_cameras(center, 3 * radius, 3, 10.0, 50.0, 32, 32)
    seen = []
    rgb, depth = render_trajectory(g, c2w, K, 32, 32, between=2, progress=lambda d, t: seen.append((d, t)))
    assert rgb.shape == depth.shape == (6, 32, 32, 3) and seen[-1] == (6, 6)
    assert (rgb < 0.99).any() and rgb.min() >= 0 and rgb.max() <= 1
    low, mid, high = turbo(torch.tensor([0.15, 0.5, 0.9]))  # blue -> green -> red
    assert low[2] > low[0] and mid[1] > max(mid[0], mid[2]) and high[0] > high[2]
    ramp = colorize_depth(torch.linspace(1, 2, 100).reshape(1, 10, 10, 1))
    assert ramp[0, 2, 0, 2] > ramp[0, 2, 0, 0] and ramp[0, -2, 0, 0] > ramp[0, -2, 0, 2]  # near blue, far red


# ------------------------------------------------------------------------------ speed-path checks


def test_spz_gzip_is_one_member_whichever_compressor_wrote_it(tmp_path, monkeypatch):
    # Big enough (> 8 MB of payload) for the threaded ISA-L path; the reference reader inflates one
    # gzip member, so the stream must be exactly one, with the same payload as the zlib fallback's.
    import zlib

    from vist3a.formats import spz

    g = random_gaussians(150_000, 3, 4, **QUANTISABLE_SH)
    fast = spz.spz_bytes(g)
    inflate = zlib.decompressobj(31)
    payload = inflate.decompress(fast)
    assert inflate.eof and inflate.unused_data == b"" and len(payload) > 8 << 20
    monkeypatch.setattr(spz, "_gzip_module", lambda: (None, None))
    fallback = spz.spz_bytes(g)
    assert zlib.decompress(fallback, 31) == payload
    (tmp_path / "zlib.spz").write_bytes(fallback)
    read_without_isal = spz.load_spz(tmp_path / "zlib.spz")
    monkeypatch.undo()
    (tmp_path / "isal.spz").write_bytes(fast)
    read_with_isal = spz.load_spz(tmp_path / "isal.spz")
    for name in ("means", "scales", "rotations", "opacities", "sh"):
        assert torch.equal(getattr(read_with_isal, name), getattr(read_without_isal, name)), name


@pytest.mark.parametrize("codec", ["isal", "zlib"])
def test_corrupt_spz_is_one_clear_error_with_either_codec(tmp_path, monkeypatch, codec):
    from vist3a.formats import spz

    if codec == "zlib":
        monkeypatch.setattr(spz, "_gzip_module", lambda: (None, None))
    good = spz.spz_bytes(random_gaussians(2000, 1, **QUANTISABLE_SH))
    cases = {"garbage.spz": good[:10] + b"\xff" * 64 + good[74:], "short.spz": good[: len(good) // 2], "plain.spz": b"hello"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(spz.SpzError, match=f"{name} is not a gzip-compressed .spz file"):
            spz.load_spz(tmp_path / name)


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


def test_splat_order_is_the_reference_converters(tmp_path):
    # Descending scale product x opacity, ties in input order (numpy's stable argsort of the negation).
    from vist3a.formats import load_splat, save_splat

    g = random_gaussians(400, 0, 8, **QUANTISABLE_SH)
    g.scales[::3] = 0.05
    g.opacities[::3] = 0.5  # a third of the scene ties
    save_splat(g, tmp_path / "s.splat")
    importance = (g.scales.numpy().prod(axis=1) * g.opacities.numpy())
    order = np.argsort(-importance, kind="stable")
    back = load_splat(tmp_path / "s.splat")
    assert torch.equal(back.means, g.means[torch.from_numpy(order)])
    assert torch.equal(back.scales, g.scales[torch.from_numpy(order)])


def _smallest_three(q_wxyz: np.ndarray) -> np.ndarray:
    """The .spz v3 rotation bytes, encoded independently here from the format's description: x, y, z, w
    order; 2-bit index of the largest-magnitude component, then for each other component in order a
    sign bit and a 9-bit magnitude scaled by 1/sqrt(1/2); the quaternion is flipped so the largest is
    positive; one little-endian uint32."""
    xyzw = q_wxyz[:, [1, 2, 3, 0]].astype(np.float64)
    largest = np.abs(xyzw).argmax(1)
    xyzw *= np.where(xyzw[np.arange(len(xyzw)), largest] < 0, -1.0, 1.0)[:, None]
    words = []
    for row, big in zip(xyzw, largest):
        word = int(big)
        for i in range(4):
            if i != big:
                word = (word << 10) | (int(row[i] < 0) << 9) | int(math.floor(511 * abs(row[i]) / math.sqrt(0.5) + 0.5))
        words.append(word)
    return np.asarray(words, "<u4").view(np.uint8)


def test_spz_version_3_rotations(tmp_path):
    import gzip

    from vist3a.formats.spz import load_spz, spz_bytes

    g = random_gaussians(400, 2, 9, **QUANTISABLE_SH)
    v2 = bytearray(gzip.decompress(spz_bytes(g)))
    n, rot_at = g.num, 16 + g.num * (9 + 1 + 3 + 3)
    v3 = v2[:4] + (3).to_bytes(4, "little") + v2[8:rot_at] + _smallest_three(g.rotations.numpy()).tobytes() + v2[rot_at + 3 * n:]
    (tmp_path / "v3.spz").write_bytes(gzip.compress(bytes(v3)))
    (tmp_path / "v2.spz").write_bytes(gzip.compress(bytes(v2)))
    a, b = load_spz(tmp_path / "v2.spz"), load_spz(tmp_path / "v3.spz")
    for name in ("means", "scales", "opacities", "sh"):  # only the rotation block differs
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    dots = (b.rotations.double() * g.rotations.double()).sum(1).abs()
    assert dots.min() > 1 - 1e-5 and (b.rotations.norm(dim=1) - 1).abs().max() < 1e-6  # 9-bit: far finer than v2's 8
    assert ((a.rotations.double() * g.rotations.double()).sum(1).abs().min()) > 0.99


def test_spz_positions_decode_exactly_across_the_24_bit_range(tmp_path):
    from vist3a.formats.spz import load_spz, save_spz

    fixed = np.array([-(1 << 23) + 1, -(1 << 22), -4097, -1, 0, 1, 4095, (1 << 23) - 1], dtype=np.float64)
    means = torch.from_numpy(np.stack([fixed, fixed[::-1], np.roll(fixed, 3)], 1) / 4096).float()
    g = plain_gaussians(means, opacity=0.5)
    assert torch.equal(load_spz(save_spz(g, tmp_path / "p.spz")).means, means)


@pytest.mark.parametrize("codec", ["isal", "zlib"])
def test_spz_stream_reading_checks_size_crc_and_members(tmp_path, monkeypatch, codec):
    import gzip

    from vist3a.formats import spz

    if codec == "zlib":
        monkeypatch.setattr(spz, "_gzip_module", lambda: (None, None))
    monkeypatch.setattr(spz._Inflater, "_STEP", 4096)  # many pieces, sections split across them
    monkeypatch.setattr(spz._GzipStream, "_INPUT_STEP", 1000)
    g = random_gaussians(3000, 3, 2, **QUANTISABLE_SH)
    payload = gzip.decompress(spz.spz_bytes(g))
    (tmp_path / "one.spz").write_bytes(gzip.compress(payload))
    # members one after another and trailing zero padding read like one member (as gzip.decompress does)
    third = len(payload) // 3
    (tmp_path / "members.spz").write_bytes(b"".join(gzip.compress(payload[i:i + third]) for i in range(0, len(payload), third)) + bytes(8))
    one, members = spz.load_spz(tmp_path / "one.spz"), spz.load_spz(tmp_path / "members.spz")
    for name in ("means", "scales", "rotations", "opacities", "sh"):
        assert torch.equal(getattr(one, name), getattr(members, name)), name
    assert (one.means - g.means).abs().max() < 2.0 ** -12
    wrong_sizes = {"long.spz": payload + b"\x07" * 5, "cut.spz": payload[:-5], "headless.spz": payload[:10]}
    for name, data in wrong_sizes.items():
        (tmp_path / name).write_bytes(gzip.compress(data))
    with pytest.raises(spz.SpzError, match=f"long.spz holds {len(payload) - 16 + 5} data bytes, expected {len(payload) - 16} for 3000"):
        spz.load_spz(tmp_path / "long.spz")
    with pytest.raises(spz.SpzError, match=f"cut.spz holds {len(payload) - 16 - 5} data bytes"):
        spz.load_spz(tmp_path / "cut.spz")
    with pytest.raises(spz.SpzError, match="headless.spz is too short to hold an .spz header"):
        spz.load_spz(tmp_path / "headless.spz")
    good = (tmp_path / "one.spz").read_bytes()
    (tmp_path / "crc.spz").write_bytes(good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:])  # payload intact
    with pytest.raises(spz.SpzError, match="crc.spz is not a gzip-compressed .spz file"):
        spz.load_spz(tmp_path / "crc.spz")
    with pytest.raises(FileNotFoundError, match="missing.spz"):
        spz.load_spz(tmp_path / "missing.spz")
    (tmp_path / "tail.spz").write_bytes(good + b"trailing junk")
    with pytest.raises(spz.SpzError, match="tail.spz is not a gzip-compressed .spz file"):
        spz.load_spz(tmp_path / "tail.spz")
