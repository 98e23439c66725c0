"""How far the installed diffusers' UniPC flow grid is from the official (diffusers 0.33.1) one, and how
far our schedule is (both against the official table).  CPU only, a few seconds.

    python bench/schedule_official.py [--out bench/results/schedule_official.json]
"""

from __future__ import annotations

import argparse
import json

import diffusers
import torch
from diffusers import UniPCMultistepScheduler

import common  # noqa: F401  (puts the repository root on sys.path)

from vist3a.wan.sampling import _apply_update, make_scheduler, unipc_plan

TABLE = common.ROOT / "tests" / "fixtures" / "unipc_official_0331.json"


def grid_diff(t_ref, s_ref, t, s) -> dict:
    t_ref, t = torch.tensor(t_ref), torch.as_tensor(t)
    s_ref, s = torch.tensor(s_ref, dtype=torch.float64), torch.as_tensor(s).double()
    return {"timesteps_differing": int((t != t_ref).sum()), "max_timestep_diff": int((t - t_ref).abs().max()),
            "max_sigma_diff": float((s - s_ref).abs().max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(common.ROOT / "bench" / "results" / "schedule_official.json"))
    args = ap.parse_args()
    table = json.loads(TABLE.read_text())
    rows = []
    for g in table["grids"]:
        plain = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=g["shift"], num_train_timesteps=1000)
        plain.set_timesteps(g["steps"])
        ours = make_scheduler(g["shift"])
        ours.set_timesteps(g["steps"])
        rows.append({"steps": g["steps"], "shift": g["shift"],
                     "installed_diffusers": grid_diff(g["timesteps"], g["sigmas"], plain.timesteps, plain.sigmas),
                     "ours": grid_diff(g["timesteps"], g["sigmas"], ours.timesteps, ours.sigmas)})
    traj = []
    for tr in table["trajectories"]:
        ref = torch.tensor(tr["latents"][-1])
        plain = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=tr["shift"], num_train_timesteps=1000)
        plain.set_timesteps(tr["steps"])
        x = torch.tensor(tr["start"]).view(1, -1)
        for i, t in enumerate(plain.timesteps):
            x = plain.step(tr["slope"] * x + torch.tensor(tr["offsets"][i]).view(1, -1), t, x, return_dict=False)[0]
        _, updates = unipc_plan(tr["steps"], tr["shift"])
        state = [torch.tensor(tr["start"]).view(1, -1), None, None, None]
        for i, u in enumerate(updates):
            state = _apply_update(u, state, [(tr["slope"] * state[0] + torch.tensor(tr["offsets"][i]).view(1, -1), 1.0)])
        scale = float(ref.abs().max())
        traj.append({"steps": tr["steps"], "shift": tr["shift"],
                     "installed_diffusers_rel_err": float((x.view(-1) - ref).abs().max()) / scale,
                     "ours_rel_err": float((state[0].view(-1) - ref).abs().max()) / scale})
    result = {"command": common.command_line(), "time": common.now(), "installed_diffusers": diffusers.__version__,
              "reference": f"{TABLE.name} (diffusers {table['made_with']['diffusers']})", "grids": rows,
              "toy_trajectories_final_latent": traj}
    md = [f"# UniPC schedule vs the official diffusers 0.33.1 (installed diffusers {diffusers.__version__})", "",
          f"`{result['command']}`", "",
          "| steps | shift | installed: timesteps differing | installed: max sigma diff | ours: differing | ours: max sigma diff |",
          "|---|---|---|---|---|---|"]
    for r in rows:
        a, b = r["installed_diffusers"], r["ours"]
        md.append(f"| {r['steps']} | {r['shift']:g} | {a['timesteps_differing']} | {a['max_sigma_diff']:.2e} | "
                  f"{b['timesteps_differing']} | {b['max_sigma_diff']:.2e} |")
    md += ["", "Toy trajectory (eps = 0.25 x + c_i), final latent, relative max error vs 0.33.1 stepping:", "",
           "| steps | shift | installed diffusers | ours (sync-free plan) |", "|---|---|---|---|"]
    md += [f"| {t['steps']} | {t['shift']:g} | {t['installed_diffusers_rel_err']:.2e} | {t['ours_rel_err']:.2e} |"
           for t in traj]
    print("\n".join(md))
    common.write_results(args.out, result, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
