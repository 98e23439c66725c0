"""Splat files by extension (vist3a.formats.dispatch): every format converted to every other keeps what both hold, and
`vist3a convert` with its one-line errors."""

from __future__ import annotations

import pytest
import torch
from helpers import QUANTISABLE_SH, official_ply, ply_rest_count, random_gaussians, run_cli

from vist3a.formats import save_ply
from vist3a.gaussians import Gaussians


@pytest.fixture()
def official(tmp_path):
    return official_ply(tmp_path)


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
