"""Splat files that open everywhere: default SH degree, official-layout PLYs, format conversion."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vist3a.cli import save_scene_outputs
from vist3a.gaussians import VIEWER_SH_DEGREE, Gaussians, load_ply


def make_scene(n: int = 60, degree: int = 4, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=torch.randn(n, 3, generator=g) * 2,
        scales=torch.exp(torch.randn(n, 3, generator=g) - 3),
        rotations=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        opacities=torch.rand(n, generator=g) * 0.98 + 0.01,
        sh=(torch.randn(n, 3, (degree + 1) ** 2, generator=g) * 0.3).clamp(-0.95, 0.95),
    )


def ply_rest_count(path) -> int:
    header = path.read_bytes()[:8192].split(b"end_header")[0].decode()
    return sum(line.startswith("property float f_rest_") for line in header.splitlines())


# ------------------------------------------------------------------------------- default SH degree


def test_default_ply_is_sh_degree_3_and_4_stays_available(tmp_path):
    scene = SimpleNamespace(gaussians=make_scene(degree=4))
    (default,) = save_scene_outputs(scene, tmp_path / "default.ply")
    assert VIEWER_SH_DEGREE == 3 and ply_rest_count(default) == 45  # what SuperSplat / Spark accept
    assert load_ply(default).sh_degree == 3
    (full,) = save_scene_outputs(scene, tmp_path / "full.ply", sh_degree=4)
    assert ply_rest_count(full) == 72 and load_ply(full).sh_degree == 4
    (low,) = save_scene_outputs(SimpleNamespace(gaussians=make_scene(degree=1)), tmp_path / "low.ply")
    assert load_ply(low).sh_degree == 1  # capped at what the scene has, never an error


# ------------------------------------------------------------------------- official-layout PLYs


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


@pytest.fixture()
def official(tmp_path):
    g = make_scene(200, degree=0, seed=3)
    g = Gaussians(g.means, g.scales, g.rotations, torch.linspace(0.0, 1.0, g.num), g.sh)  # incl. exactly 0 and 1
    path = tmp_path / "gaussians.ply"
    write_official_ply(path, g)
    return path, g


def test_official_ply_is_detected_and_read_linear(official):
    from vist3a.gaussians import read_ply

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
    from vist3a.gaussians import PlyError, read_ply, save_ply

    g = make_scene(50, degree=0, seed=1)
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
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "vist3a", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_cli_info_and_render_report_the_convention(official, tmp_path):
    from vist3a.gaussians import save_ply

    path, _ = official
    proc = run_cli("info", path)
    assert proc.returncode == 0 and "opacity stored linear" in proc.stdout and "official" in proc.stdout
    ours = save_ply(make_scene(30, degree=3), tmp_path / "ours.ply")
    proc = run_cli("info", ours)
    assert proc.returncode == 0 and "opacity stored as a logit" in proc.stdout
    proc = run_cli("render", path, "-o", tmp_path / "r.png", "--orbit", 1, "--size", 16)
    assert proc.returncode == 0 and "note:" in proc.stderr and "official" in proc.stderr
    proc = run_cli("render", path, "-o", tmp_path / "r2.png", "--orbit", 1, "--size", 16, "--opacity", "logit")
    assert proc.returncode == 0 and "note:" not in proc.stderr
    proc = run_cli("render", ours, "-o", tmp_path / "r3.png", "--orbit", 1, "--size", 16, "--opacity", "linear")
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1 and "cannot be linear" in proc.stderr
    assert not (tmp_path / "r3.png").exists()
