"""Sizes, times and peak memory of the sharing outputs for a decoder-sized scene: the .html page and meshes.

    python bench/share_formats.py [--views 13 --size 448 --degree 4] [--repeats 3] [--skip-mesh] [--browser]

The scene is bench/scenes.py's pixel-aligned one (13 views of 448x448 = 2,609,152 Gaussians, SH 4, what
the decoder predicts without voxelisation); its 13 orbit cameras play the predicted cameras.

* ``.html`` (SH 3): write time (median of --repeats), size, and the peak resident memory above the
  loaded scene while writing (the page holds the .spz bytes once; base64 is written block by block).
  ``--browser`` also opens it from disk in headless Chromium (software WebGL) and records its load time.
  The plain ``.spz`` (SH 3) is written in the same run for reference: the page is that file plus base64
  and the viewer, so the difference is what the page costs.
* meshes: `splats_to_mesh` with the CLI defaults (256 voxels, 384-pixel views, 13 cameras + 48 far-side
  views), its time and peak memory, then the .glb, .ply and .obj writes (time, size).

Results: bench/results/share_formats.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from scenes import pixel_aligned_scene

from common import ROOT, command_line, now, write_results
from measure import PeakMemory

from vist3a.formats import save_spz, write_mesh
from vist3a.mesh import mesh_topology, splats_to_mesh
from vist3a.render import orbit_cameras
from vist3a.scene_view import CameraSet
from vist3a.share_html import save_html

MB = 1e6


def _timed(fn, repeats: int) -> tuple[float, list[float], int]:
    """Median seconds of ``fn``, every run, and the peak RSS above the start of the runs (bytes)."""
    runs, peak = [], 0
    for _ in range(repeats):
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        peak = max(peak, mem.peak_bytes - mem.base_bytes)
    return statistics.median(runs), runs, peak


def _open_in_browser(page: Path) -> dict:
    r = subprocess.run(["node", "html_check.mjs", json.dumps({"path": str(page), "timeoutMs": 600000})],
                       cwd=ROOT / "tests" / "browser", capture_output=True, text=True, timeout=900)
    out = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {"error": r.stderr[-500:]}
    return {k: out.get(k) for k in ("loadMs", "stats", "coverage", "consoleErrors", "error")}


def markdown(res: dict) -> str:
    h, m = res["html"], res.get("mesh")
    lines = [f"# Sharing outputs of a {res['gaussians']:,}-Gaussian scene (SH {res['sh_degree']})", "",
             f"`{res['command']}` — {res['date']}, {res['threads']} torch threads, load average {res['load_average']} at the "
             "start (a shared 2-core VM: times vary run to run). Scene in memory: "
             f"{res['scene_mb']:.0f} MB.", "",
             "| output | MB | seconds | peak memory above the scene, MB |", "|---|---|---|---|",
             f"| scene.html (SH 3, .spz inside as base64) | {h['mb']:.1f} | {h['write_s']:.2f} ({min(h['runs']):.2f}-{max(h['runs']):.2f}) | "
             f"{h['peak_mb']:.0f} |"]
    if res.get("spz"):
        z = res["spz"]
        lines.append(f"| scene.spz (SH 3, for reference) | {z['mb']:.1f} | {z['write_s']:.2f} ({min(z['runs']):.2f}-{max(z['runs']):.2f}) | "
                     f"{z['peak_mb']:.0f} |")
    if m:
        lines.append(f"| mesh: fuse {m['views']} views + extract + colour | - | {m['seconds']:.0f} | {m['peak_mb']:.0f} |")
        for ext, w in m["files"].items():
            lines.append(f"| mesh.{ext} ({m['faces']:,} faces) | {w['mb']:.1f} | {w['write_s']:.2f} | - |")
    if res.get("browser"):
        b = res["browser"]
        lines += ["", f"Headless Chromium (SwiftShader) opened scene.html from disk, offline, in {b.get('loadMs')} ms "
                      f"(splats drawn: {(b.get('stats') or {}).get('splats')}, console errors: {len(b.get('consoleErrors') or [])})."]
    if m:
        lines += ["", f"Mesh: {m['vertices']:,} vertices, {m['components']} piece(s), {m['boundary_loops']} hole(s); "
                      f"{m['view_description']}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", type=int, default=13)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--degree", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--skip-mesh", action="store_true")
    ap.add_argument("--browser", action="store_true", help="also open the page in headless Chromium (tests/browser)")
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "share_formats.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = pixel_aligned_scene(args.views, args.size, args.degree)
    scene_bytes = sum(t.numel() * t.element_size() for t in (g.means, g.scales, g.rotations, g.opacities, g.sh))
    res = {"command": command_line(), "date": now(), "threads": args.threads, "load_average": round(os.getloadavg()[0], 1),
           "gaussians": g.num, "sh_degree": args.degree, "scene_mb": scene_bytes / MB}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        page = Path(tmp) / "scene.html"
        median, runs, peak = _timed(lambda: save_html(g, page), args.repeats)
        res["html"] = {"mb": page.stat().st_size / MB, "write_s": median, "runs": runs, "peak_mb": peak / MB}
        print("html", json.dumps(res["html"]), flush=True)
        if args.browser:
            res["browser"] = _open_in_browser(page)
            print("browser", json.dumps(res["browser"]), flush=True)
        page.unlink()
        spz = Path(tmp) / "scene.spz"
        median, runs, peak = _timed(lambda: save_spz(g, spz, sh_degree=3), args.repeats)
        res["spz"] = {"mb": spz.stat().st_size / MB, "write_s": median, "runs": runs, "peak_mb": peak / MB}
        print("spz", json.dumps(res["spz"]), flush=True)
        spz.unlink()
        if not args.skip_mesh:
            c2w, K = orbit_cameras(torch.zeros(3), 3.0, args.views, 15.0, 50.0, args.size, args.size)
            cams = CameraSet(c2w, K / torch.tensor([args.size, args.size, 1.0])[:, None], (args.size, args.size))
            t0 = time.perf_counter()
            with PeakMemory() as mem:
                mesh = splats_to_mesh(g, cams)
            seconds = time.perf_counter() - t0
            topo = mesh_topology(mesh.vertices, mesh.faces)
            files = {}
            for ext in ("glb", "ply", "obj"):
                path = Path(tmp) / f"mesh.{ext}"
                t1 = time.perf_counter()
                write_mesh(mesh, path)
                files[ext] = {"write_s": time.perf_counter() - t1, "mb": path.stat().st_size / MB}
                path.unlink()
            res["mesh"] = {"seconds": seconds, "peak_mb": (mem.peak_bytes - mem.base_bytes) / MB, "views": mesh.info["views"],
                           "view_description": mesh.info["view_description"], "faces": topo.faces, "vertices": topo.vertices,
                           "components": topo.components, "boundary_loops": topo.boundary_loops, "files": files}
            print("mesh", json.dumps(res["mesh"]), flush=True)
    write_results(args.out, res, markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
