"""The SPLAT contract (ComfyUI's native splat type): Gaussians <-> SPLAT is exact both ways, batches
with different lengths carry `counts`, the layout is the native one, and bad values get one-line errors."""

from __future__ import annotations

import pytest
import torch
from helpers import random_gaussians

from vist3a.formats import load_ply, save_ply
from vist3a.gaussians import Gaussians
from vist3a.splat_contract import SplatBatch, SplatContractError, gaussians_to_splat, is_splat, splat_to_gaussians


def _same(a: Gaussians, b: Gaussians) -> None:
    for f in ("means", "scales", "rotations", "opacities", "sh"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f


def test_single_scene_round_trip_is_exact_and_native_layout():
    g = random_gaussians(37, 4)
    s = gaussians_to_splat([g])
    assert isinstance(s, SplatBatch) and is_splat(s)
    assert s.positions.shape == (1, 37, 3) and s.scales.shape == (1, 37, 3) and s.rotations.shape == (1, 37, 4)
    assert s.opacities.shape == (1, 37, 1) and s.sh.shape == (1, 37, 25, 3) and s.counts is None
    # DC at sh[..., 0, :]: the colour channel is the last axis
    assert torch.equal(s.sh[0, :, 0, :], g.sh[:, :, 0])
    assert torch.equal(s.sh[0, 5, 7], g.sh[5, :, 7])
    assert torch.equal(s.opacities[0, :, 0], g.opacities)
    (back,) = splat_to_gaussians(s)
    _same(back, g)


def test_batch_with_different_lengths_is_padded_with_counts():
    scenes = [random_gaussians(10, 2, 1), random_gaussians(4, 2, 2), random_gaussians(7, 2, 3)]
    s = gaussians_to_splat(scenes)
    assert s.positions.shape == (3, 10, 3) and s.counts.tolist() == [10, 4, 7]
    assert torch.count_nonzero(s.positions[1, 4:]) == 0 and torch.count_nonzero(s.sh[2, 7:]) == 0
    back = splat_to_gaussians(s)
    assert [g.num for g in back] == [10, 4, 7]
    for a, b in zip(back, scenes):
        _same(a, b)


def test_equal_lengths_have_no_counts_and_make_builds_the_given_class():
    made = {}

    class Native:  # stands in for comfy_api.latest.Types.SPLAT (same constructor)
        def __init__(self, positions, scales, rotations, opacities, sh, counts=None):
            made.update(positions=positions, counts=counts)
            self.positions, self.scales, self.rotations, self.opacities, self.sh, self.counts = (
                positions, scales, rotations, opacities, sh, counts)

    s = gaussians_to_splat([random_gaussians(5, 2, 1), random_gaussians(5, 2, 2)], make=Native)
    assert isinstance(s, Native) and made["counts"] is None and made["positions"].shape == (2, 5, 3)
    assert [g.num for g in splat_to_gaussians(s)] == [5, 5]


def test_native_style_splat_without_counts_attribute_is_read():
    class Bare:  # a look-alike that has only the five tensors
        pass

    g = random_gaussians(6, 0)
    s = gaussians_to_splat([g])
    bare = Bare()
    for f in ("positions", "scales", "rotations", "opacities", "sh"):
        setattr(bare, f, getattr(s, f))
    (back,) = splat_to_gaussians(bare)
    _same(back, g)


def test_round_trip_through_ply_keeps_the_values(tmp_path):
    g = random_gaussians(20, 3)
    (loaded,) = splat_to_gaussians(gaussians_to_splat([load_ply(save_ply(g, tmp_path / "a.ply"))]))
    torch.testing.assert_close(loaded.means, g.means)
    torch.testing.assert_close(loaded.sh, g.sh)
    torch.testing.assert_close(loaded.opacities, g.opacities, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("breaks, words", [
    (lambda s: setattr(s, "sh", s.sh.transpose(2, 3)), "SPLAT.sh"),         # our channel-major layout by mistake
    (lambda s: setattr(s, "opacities", s.opacities[..., 0]), "SPLAT.opacities"),
    (lambda s: setattr(s, "rotations", s.rotations[..., :3]), "SPLAT.rotations"),
    (lambda s: setattr(s, "counts", torch.tensor([99])), "SPLAT.counts"),
    (lambda s: setattr(s, "positions", None), "positions"),
])
def test_contract_violations_are_one_line_errors(breaks, words):
    s = gaussians_to_splat([random_gaussians(4, 2)])
    breaks(s)
    with pytest.raises(SplatContractError) as e:
        splat_to_gaussians(s)
    msg = str(e.value)
    assert words in msg and "\n" not in msg


def test_mixed_sh_degrees_and_empty_batches_are_refused():
    with pytest.raises(SplatContractError, match="SH"):
        gaussians_to_splat([random_gaussians(3, 1), random_gaussians(3, 2)])
    with pytest.raises(SplatContractError, match="no scenes"):
        gaussians_to_splat([])
    assert not is_splat([random_gaussians(3, 2)]) and not is_splat(None)
