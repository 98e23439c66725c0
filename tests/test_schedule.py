"""The official UniPC schedule (diffusers 0.33.1's grid and update) from our own code.

The reference table tests/fixtures/unipc_official_0331.json was made with diffusers 0.33.1 in a scratch
environment (command inside the file and in make_unipc_official.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vist3a.wan.sampling import _apply_update, make_scheduler, unipc_plan
from vist3a.wan.schedule import official_flow_schedule, unipc_updates

TABLE = json.loads((Path(__file__).parent / "fixtures" / "unipc_official_0331.json").read_text())
# Our coefficients are float64 formulas, diffusers' are float32 tensors: measured worst 1.2e-6 on 50 steps.
TRAJ_TOL = 1e-5


def test_table_was_made_with_the_official_pin():
    assert TABLE["made_with"]["diffusers"] == "0.33.1"
    assert {g["steps"] for g in TABLE["grids"]} >= {1, 2, 10, 20, 50, 100}
    assert {g["shift"] for g in TABLE["grids"]} == {1.0, 3.0, 5.0, 8.0}


@pytest.mark.parametrize("entry", TABLE["grids"], ids=lambda g: f"{g['steps']}steps-shift{g['shift']:g}")
def test_grid_is_identical_to_diffusers_0331(entry):
    timesteps, sigmas = official_flow_schedule(entry["steps"], entry["shift"])
    assert timesteps.dtype == torch.int64 and sigmas.dtype == torch.float32
    assert timesteps.tolist() == entry["timesteps"]
    assert sigmas.tolist() == entry["sigmas"]  # bit-identical float32 values
    # The diffusers scheduler we hand out (WanPipeline, training roll-outs) carries the same grid.
    sched = make_scheduler(entry["shift"])
    sched.set_timesteps(entry["steps"])
    assert sched.timesteps.tolist() == entry["timesteps"] and sched.sigmas.tolist() == entry["sigmas"]


def _run_plan(traj):
    _, updates = unipc_plan(traj["steps"], traj["shift"])
    state = [torch.tensor(traj["start"]).view(1, -1)] + [None] * (len(updates[0]) - 1)
    out = []
    for i, update in enumerate(updates):
        eps = traj["slope"] * state[0] + torch.tensor(traj["offsets"][i]).view(1, -1)
        state = _apply_update(update, state, [(eps, 1.0)])
        out.append(state[0])
    return out


@pytest.mark.parametrize("traj", TABLE["trajectories"], ids=lambda t: f"{t['steps']}steps-shift{t['shift']:g}")
def test_sync_free_updates_follow_diffusers_0331_stepping(traj):
    for got, ref in zip(_run_plan(traj), traj["latents"]):
        ref = torch.tensor(ref).view(1, -1)
        assert (got - ref).abs().max() <= TRAJ_TOL * ref.abs().max()


@pytest.mark.parametrize("traj", TABLE["trajectories"], ids=lambda t: f"{t['steps']}steps-shift{t['shift']:g}")
def test_installed_diffusers_stepping_on_our_grid_matches_0331(traj):
    sched = make_scheduler(traj["shift"])
    sched.set_timesteps(traj["steps"])
    x = torch.tensor(traj["start"]).view(1, -1)
    for i, t in enumerate(sched.timesteps):
        x = sched.step(traj["slope"] * x + torch.tensor(traj["offsets"][i]).view(1, -1), t, x, return_dict=False)[0]
    ref = torch.tensor(traj["latents"][-1]).view(1, -1)
    assert (x - ref).abs().max() <= TRAJ_TOL * ref.abs().max()


def test_the_grid_differs_from_a_plain_newer_diffusers_grid_where_expected():
    """The point of owning the grid: 0.33.1 never reaches sigma 1 (its first sigma is shift(0.999))."""
    _, sigmas = official_flow_schedule(50, 5.0)
    assert sigmas[0].item() == pytest.approx(5 * 0.999 / (1 + 4 * 0.999), rel=1e-7) and sigmas[0] < 1.0
    assert sigmas[-1].item() == 0.0 and bool((sigmas[1:] < sigmas[:-1]).all())


@pytest.mark.parametrize("steps, shift", [(0, 5.0), (2.5, 5.0), (10, 0.0), (10, float("nan"))])
def test_impossible_settings_are_refused(steps, shift):
    with pytest.raises(ValueError, match="steps|shift"):
        official_flow_schedule(steps, shift)


def test_updates_refuse_a_grid_without_final_zero():
    with pytest.raises(ValueError, match="final 0"):
        unipc_updates(torch.tensor([0.9, 0.5]))
