"""The pure-torch rasteriser (the fallback without gsplat) on a decoder-sized scene, per view.

    python bench/render_torch.py --label after [--views 13 --size 448 --sizes 256,512 --repeats 3]

Renders the pixel-aligned scene of bench/scenes.py (2.6M Gaussians, SH degree 3 as our PLYs are
written) from orbit cameras framing it, like `python -m vist3a render`, one view per call, median of
--repeats (each repeat a different orbit view), on torch's CPU threads (OMP_NUM_THREADS, default 2).
Results go into bench/results/render_torch.json under --label, so "before" and "after" sit side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from scenes import pixel_aligned_scene  # noqa: E402

from common import ROOT, command_line, fmt, now, write_results  # noqa: E402  (puts the repo on sys.path)


def _commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--views", type=int, default=13)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--degree", type=int, default=3)
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "render_torch.json"))
    ap.add_argument("--save", help="also save the first view of each size as PNGs with this prefix")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

    from vist3a.render import framing_orbit, render_gaussians

    g = pixel_aligned_scene(args.views, args.size, args.degree)
    figures = {}
    for px in map(int, args.sizes.split(",")):
        c2w, K = framing_orbit(g, max(args.repeats, 1), px, px)
        times, first = [], None
        for i in range(args.repeats):
            t0 = time.perf_counter()
            with torch.no_grad():
                rgb, _, _ = render_gaussians(g, c2w[i:i + 1], K[i:i + 1], px, px, background=1.0, backend="torch")
            times.append(time.perf_counter() - t0)
            first = rgb if first is None else first
        figures[str(px)] = {"median_s": statistics.median(times), "runs": times}
        print(px, json.dumps(figures[str(px)]), flush=True)
        if args.save:
            from vist3a.render.media import save_png_grid

            save_png_grid(first, Path(f"{args.save}_{px}.png"))
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    results["runs"][args.label] = {"command": command_line(), "date": now(), "gaussians": g.num, "sh_degree": args.degree,
                                   "threads": torch.get_num_threads(), "torch": torch.__version__, "figures": figures,
                                   "loadavg_1min_at_end": os.getloadavg()[0], "commit": _commit()}
    write_results(out, results, markdown(results))


def markdown(results: dict) -> str:
    lines = ["# Torch rasteriser, one view of the decoder-sized scene (median seconds)", ""]
    for label, run in results["runs"].items():
        load = f", load average {run['loadavg_1min_at_end']:.1f}" if "loadavg_1min_at_end" in run else ""
        lines += [f"## {label}: {run['gaussians']:,} Gaussians, SH {run['sh_degree']}, {run['threads']} threads, {run['date']}{load}",
                  f"`{run['command']}`", "", "| size | s / view |", "|---|---|"]
        lines += [f"| {px}² | {fmt(r['median_s'], 2)} |" for px, r in run["figures"].items()]
        lines += ["", run["note"], ""] if run.get("note") else [""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
