"""What a generated scene leaves on disk (vist3a.outputs): the splat file its extension names, SH degree 3 by default
(what viewers accept), 4 on request."""

from __future__ import annotations

from types import SimpleNamespace

from helpers import QUANTISABLE_SH, ply_rest_count, random_gaussians

from vist3a.formats import VIEWER_SH_DEGREE, load_ply
from vist3a.outputs import save_scene_outputs


def test_default_ply_is_sh_degree_3_and_4_stays_available(tmp_path):
    scene = SimpleNamespace(gaussians=random_gaussians(60, 4, **QUANTISABLE_SH))
    (default,) = save_scene_outputs(scene, tmp_path / "default.ply")
    assert VIEWER_SH_DEGREE == 3 and ply_rest_count(default) == 45  # what SuperSplat / Spark accept
    assert load_ply(default).sh_degree == 3
    (full,) = save_scene_outputs(scene, tmp_path / "full.ply", sh_degree=4)
    assert ply_rest_count(full) == 72 and load_ply(full).sh_degree == 4
    (low,) = save_scene_outputs(SimpleNamespace(gaussians=random_gaussians(60, 1, **QUANTISABLE_SH)), tmp_path / "low.ply")
    assert load_ply(low).sh_degree == 1  # capped at what the scene has, never an error


def test_scene_outputs_follow_the_extension(tmp_path):
    from vist3a.formats import read_splats

    scene = SimpleNamespace(gaussians=random_gaussians(50, 4, **QUANTISABLE_SH))
    for name, degree in (("s.spz", 3), ("s.splat", 0), ("s.ply", 3)):
        (path,) = save_scene_outputs(scene, tmp_path / name)
        assert read_splats(path).sh_degree == degree
