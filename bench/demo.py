#!/usr/bin/env python
"""CPU benchmark of the `make demo` path (tiny random models), for catching regressions.

Times what `python -m vist3a demo` does without real weights: load the tiny models, generate (text,
denoise, VAE, splats) with the demo settings (5 frames, 64x64, 8 steps), write the PLY and the
preview renders.  Runs the pipeline's defaults ("fast") and the reference (`fast=False`: two
transformer calls per step, diffusers' scheduler), interleaved, `--repeats` times after `--warmup`.

    python bench/demo.py                  # writes bench/results/demo_cpu.json and .md
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from common import command_line, fmt, now, write_results
from measure import describe_device, summarize, versions

from vist3a.demo import PROMPT
from vist3a.outputs import save_scene_outputs
from vist3a.pipeline import GenerateSettings, VIST3APipeline


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=8, help="demo default: 8")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: on a shared machine OpenMP barriers make multi-threaded runs vary 5x)")
    p.add_argument("--out", default=None, help="default bench/results/demo_cpu.json (.md beside)")
    return p.parse_args(argv)


STAGES = ("load", "text", "denoise", "vae", "splats", "save")


def run_once(fast: bool, steps: int) -> dict:

    t0 = time.perf_counter()
    pipe = VIST3APipeline.load(tiny=True, device="cpu", fast=fast)
    times = {"load": time.perf_counter() - t0}
    scene, _ = pipe.generate(PROMPT, GenerateSettings(frames=5, height=64, width=64, steps=steps))
    times.update(pipe.last_timings)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        save_scene_outputs(scene, Path(tmp) / "scene.ply", views=Path(tmp), size=128)
    times["save"] = time.perf_counter() - t1
    times["total"] = time.perf_counter() - t0
    times["gaussians"] = scene.gaussians.num
    return times


def main(argv=None) -> int:
    args = parse_args(argv)

    torch.set_num_threads(args.threads)
    variants = {"fast": True, "reference": False}
    runs = {k: [] for k in variants}
    for i in range(args.warmup + args.repeats):
        for name, fast in variants.items():
            r = run_once(fast, args.steps)
            print(f"  {name}: {'warm-up' if i < args.warmup else 'run'} {r['total']:.3f} s", flush=True)
            if i >= args.warmup:
                runs[name].append(r)
    res = {"schema": 1, "created": now(), "device": describe_device("cpu"), "device_kind": "cpu",
           "command": command_line(), "settings": {"frames": 5, "size": 64, "steps": args.steps, "repeats": args.repeats,
                                                   "warmup": args.warmup, "threads": torch.get_num_threads()}}
    for name, rs in runs.items():
        res[name] = {"total": summarize([r["total"] for r in rs]),
                     "stages": {k: summarize([r[k] for r in rs]) for k in STAGES},
                     "gaussians": rs[-1]["gaussians"]}
    res["speedup"] = res["reference"]["total"]["median"] / res["fast"]["total"]["median"]
    res["versions"] = versions()
    lines = [f"# `make demo` path on the CPU ({res['device']})", "", f"Command: `{res['command']}`", "",
             f"Tiny random models, 5 frames, 64x64, {args.steps} steps; {args.repeats} runs interleaved (median, min), "
             f"{args.warmup} warm-up excluded. fast = the pipeline's defaults; reference = `fast=False`.", "",
             "| stage | fast ms (median / min) | reference ms (median / min) |", "|---|---:|---:|"]
    for st in STAGES + ("total",):
        f = res["fast"]["total"] if st == "total" else res["fast"]["stages"][st]
        r = res["reference"]["total"] if st == "total" else res["reference"]["stages"][st]
        lines.append(f"| {st} | {fmt(f['median'] * 1e3)} / {fmt(f['min'] * 1e3)} | {fmt(r['median'] * 1e3)} / {fmt(r['min'] * 1e3)} |")
    lines += ["", f"Speedup of the median total: {res['speedup']:.2f}x; {res['fast']['gaussians']} Gaussians.", ""]
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "demo_cpu.json")
    json_path, md_path = write_results(out, res, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
