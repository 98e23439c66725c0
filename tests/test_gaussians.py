"""The Gaussians container: shapes checked on construction, values by validate(), quaternion order, prune, truncate, to."""

from __future__ import annotations

import pytest
import torch
from helpers import random_gaussians

from vist3a.gaussians import Gaussians, wxyz_to_xyzw, xyzw_to_wxyz


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
