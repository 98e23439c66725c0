"""The CPU rasteriser with torch's configured threads, with one thread, and with the count it picks itself.

    python bench/render_threads.py [--views 40 --size 448 --big-size 256 --rounds 2]

Two scenes: the tiny pipeline's scene (15,680 Gaussians, what `python -m vist3a batch --tiny` renders into
its trajectory videos; `--views` orbit views at `--size`², like `python -m vist3a render X.ply --orbit 40
--size 448`) and the decoder-sized scene of bench/scenes.py (2.6M Gaussians, one view at `--big-size`²).
Each configuration runs once per round, rounds interleaved so a change of machine load hits all of them;
the 1-minute load average is recorded before and after. Results: bench/results/render_threads.json/.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from scenes import pixel_aligned_scene  # noqa: E402

from common import ROOT, command_line, fmt, now, write_results  # noqa: E402  (puts the repo on sys.path)


def tiny_scene():
    from vist3a.pipeline import GenerateSettings, VIST3APipeline

    pipe = VIST3APipeline.load(tiny=True, device="cpu")
    scene, _ = pipe.generate("a red car", GenerateSettings(frames=5, height=64, width=64, steps=4))
    return scene.gaussians


def commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def timed(fn) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--views", type=int, default=40)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--big-size", dest="big_size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "render_threads.json"))
    args = ap.parse_args()
    configured = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(configured)

    from vist3a.render import framing_orbit, render_gaussians, threads

    original_pick = threads.pick_threads
    picked: list[int] = []

    def record_pick(elements, configured=None):
        n = original_pick(elements, configured)
        picked.append(n)
        return n

    modes = {f"{configured} threads": lambda e, c=None: configured, "1 thread": lambda e, c=None: 1, "picked": record_pick}
    small, big = tiny_scene(), pixel_aligned_scene(13, 448, 3)
    jobs = {
        f"tiny scene ({small.num:,} Gaussians), {args.views} views at {args.size}²": (small, args.views, args.size),
        f"decoder-sized scene ({big.num:,} Gaussians), 1 view at {args.big_size}²": (big, 1, args.big_size),
    }
    load_before = os.getloadavg()
    runs: dict = {job: {mode: [] for mode in modes} for job in jobs}
    for _ in range(args.rounds):
        for job, (g, n, px) in jobs.items():
            c2w, K = framing_orbit(g, n, px, px)
            for mode, pick in modes.items():
                threads.pick_threads = pick
                with torch.no_grad():
                    wall, cpu = timed(lambda: render_gaussians(g, c2w, K, px, px, background=1.0, backend="torch"))
                runs[job][mode].append({"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)})
                print(job, mode, runs[job][mode][-1], flush=True)
    threads.pick_threads = original_pick
    result = {"command": command_line(), "date": now(), "commit": commit(), "torch": torch.__version__, "configured_threads": configured,
              "cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
              "picked_thread_counts": sorted(set(picked)), "runs": runs,
              "median_wall_s": {job: {m: statistics.median(r["wall_s"] for r in rs) for m, rs in by.items()}
                                for job, by in runs.items()}}
    write_results(args.out, result, markdown(result))


def markdown(r: dict) -> str:
    modes = list(next(iter(r["median_wall_s"].values())))
    lines = ["# CPU rasteriser: configured threads, one thread, or the count it picks (median wall seconds)", "",
             f"`{r['command']}` — {r['date']}, commit {r.get('commit') or '?'}, {r['cpus']} CPUs, torch {r['torch']}, 1-min load average "
             f"{r['loadavg_before'][0]:.1f} before, {r['loadavg_after'][0]:.1f} after; the picks were "
             f"{', '.join(map(str, r['picked_thread_counts']))} thread(s).", "",
             "| scene | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
    for job, by in r["median_wall_s"].items():
        lines.append(f"| {job} | " + " | ".join(fmt(by[m], 2) for m in modes) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
