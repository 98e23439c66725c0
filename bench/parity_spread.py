"""How far the parity fixtures move across CPU kernels: the measurement behind the test bounds.

The same fp32 model gives results that differ in the last bits between CPU families (Intel with AMX,
AMD EPYC with AVX512) because MKL and oneDNN pick other kernels, and between thread counts because
reductions split differently. This script re-runs `python -m vist3a parity` on each public fixture
under several settings that force other kernel paths, records the worst relative error per tensor
group, and writes the table the bound in tests/test_parity.py is derived from:

    python bench/parity_spread.py                      # all settings, both fixtures (~10-20 min on 2 cores)
    python bench/parity_spread.py --settings default,t1 --fixtures anysplat

Each setting runs in a fresh process, because the oneDNN/MKL variables are read once at start-up.
Results go to bench/results/parity_spread_<cpu>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT / "tools"))
from machine_info import cpu_model  # noqa: E402

# name -> (environment overrides, torch threads)
SETTINGS: dict[str, tuple[dict[str, str], int]] = {
    "default": ({}, 2),
    "t1": ({}, 1),
    "onednn_avx2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, 2),
    "onednn_sse41_t1": ({"ONEDNN_MAX_CPU_ISA": "SSE41"}, 1),
    "mkl_cbwr_compatible": ({"MKL_CBWR": "COMPATIBLE"}, 2),
    "mkl_avx2_t1": ({"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, 1),
}

CHILD = r"""
import json, sys, torch
torch.set_num_threads(int(sys.argv[2]))
from vist3a import parity
lines = []
report = parity.run_parity(sys.argv[1], tol=1.0, echo=lambda *_: None)
print("@@" + json.dumps({
    "capability": torch.backends.cpu.get_cpu_capability(),
    "lines": [[l.name, l.rel, l.note] for l in report.lines],
}))
"""


def run_one(fixture: Path, env_over: dict[str, str], threads: int) -> dict:
    env = {**os.environ, **env_over, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(fixture), str(threads)],
                          capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"parity run failed ({fixture.name}, {env_over}, {threads} threads):\n{proc.stderr[-3000:]}")
    payload = json.loads(next(l[2:] for l in proc.stdout.splitlines() if l.startswith("@@")))
    payload["wall_s"] = round(time.perf_counter() - t0, 1)
    return payload


def group_of(name: str) -> str:
    """ruleB/out/depth -> out; inter/agg_out_12 -> inter; stats/out/... -> stats."""
    name = name.removeprefix("ruleB/")
    return re.split(r"[/]", name, maxsplit=1)[0]


def summarise(lines: list) -> dict:
    worst = max(lines, key=lambda l: l[1])
    groups: dict[str, float] = {}
    for name, rel, _ in lines:
        if name.endswith("num_gaussians"):
            continue  # a count, compared with its own slack
        g = group_of(name)
        groups[g] = max(groups.get(g, 0.0), rel)
    counts = [l for l in lines if l[0].endswith("num_gaussians")]
    return {"worst_rel": worst[1], "worst_tensor": worst[0], "per_group": groups,
            "voxel_count": [c[2] for c in counts]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma list of: " + ", ".join(SETTINGS))
    ap.add_argument("--fixtures", default="stitched,anysplat")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/parity_spread_<cpu>.json)")
    args = ap.parse_args(argv)
    import torch

    cpu = cpu_model()
    record = {
        "command": "python bench/parity_spread.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
        "capability_default": torch.backends.cpu.get_cpu_capability(),
        "date": time.strftime("%Y-%m-%d"), "runs": [],
    }
    slug = re.sub(r"[^a-z0-9]+", "_", cpu.lower()).strip("_")[:40]
    out = args.out or RESULTS / f"parity_spread_{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_file():  # keep earlier settings measured on this CPU; re-measured ones are replaced
        wanted = {(f, n) for f in args.fixtures.split(",") for n in args.settings.split(",")}
        earlier = json.loads(out.read_text()).get("runs", [])
        record["runs"] = [r for r in earlier if (r["fixture"], r["setting"]) not in wanted]
    for fx in args.fixtures.split(","):
        fixture = FIXTURES / f"parity_{fx}_small.safetensors"
        for name in args.settings.split(","):
            env_over, threads = SETTINGS[name]
            res = run_one(fixture, env_over, threads)
            row = {"fixture": fx, "setting": name, "env": env_over, "threads": threads,
                   "capability": res["capability"], "wall_s": res["wall_s"], **summarise(res["lines"])}
            record["runs"].append(row)
            print(f"{fx:9s} {name:22s} worst {row['worst_rel']:.2e} ({row['worst_tensor']}) {row['wall_s']} s",
                  flush=True)
            out.write_text(json.dumps(record, indent=1))  # a run cut short keeps what it took
    md = [f"# Parity spread on {cpu} ({os.cpu_count()} cores, torch {torch.__version__})", "",
          f"`{record['command']}`", "", "| fixture | setting | threads | worst rel | tensor | voxel counts |",
          "|---|---|---|---|---|---|"]
    for r in record["runs"]:
        md.append(f"| {r['fixture']} | {r['setting']} | {r['threads']} | {r['worst_rel']:.2e} | "
                  f"{r['worst_tensor']} | {'; '.join(r['voxel_count'])} |")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
