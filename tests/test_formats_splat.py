"""antimatter15's .splat (vist3a.formats.splat): the byte layout, the reference converter's row order, damaged files refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import QUANTISABLE_SH, random_gaussians

from vist3a.formats import PlyError, save_splat
from vist3a.gaussians import SH_C0


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


def test_splat_reader_refuses_damaged_files(tmp_path):
    from vist3a.formats import load_splat

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
