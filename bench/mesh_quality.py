"""Splat-to-mesh quality on analytic scenes: ours (TSDF of rendered depth) beside ComfyUI 0.28's own node.

    python bench/mesh_quality.py [--scenes sphere,torus,room] [--comfyui28 .cache/comfyui28] [--threads 2]

For each scene of bench/mesh_scenes.py (a sphere, a torus and a box room seen from inside, each made of
flat splats, with 13 cameras playing the decoder's predicted ones): our mesh with the defaults of
`python -m vist3a mesh` (256 voxels, 384-pixel views, 48 far-side views) from the scene's cameras, our
mesh without cameras (what a bare splat file gets), and ComfyUI 0.28's "Extract Mesh from Splat" with
its defaults (run by bench/mesh_native28.py in ComfyUI's own Python; skipped with a note when that
install is missing). Each row: Chamfer distance to the true surface relative to the scene's bounding-box
diagonal (mean of mesh->surface and surface->mesh), the 95th percentile of surface->mesh, pieces,
holes (boundary loops and edges), non-manifold edges, genus (true: 0, 1, 0), faces and seconds.
Results: bench/results/mesh_quality.json and .md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from mesh_scenes import SCENES, chamfer

from common import ROOT, command_line, now, write_results
from measure import PeakMemory

from vist3a.mesh import mesh_topology, splats_to_mesh


def score(scene, vertices, faces, seconds, **extra) -> dict:
    topo = mesh_topology(vertices, faces)
    return {"seconds": round(seconds, 1), **chamfer(scene, vertices.astype(np.float64), faces), **topo.as_dict(), **extra}


def run_native(comfyui28: Path, names: list[str], out: Path) -> str | None:
    """bench/mesh_native28.py in ComfyUI 0.28's venv; returns why it could not run, or None."""
    python, source = comfyui28 / "venv" / "bin" / "python", comfyui28 / "ComfyUI-0.28.0"
    if not python.is_file() or not (source / "comfy_extras" / "nodes_gaussian_splat.py").is_file():
        return f"ComfyUI 0.28 is not installed under {comfyui28} (python tools/comfyui28_env.py install)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([str(python), str(ROOT / "bench" / "mesh_native28.py"), "--comfyui", str(source), "--out", str(out),
                        "--scenes", ",".join(names)], env=env, capture_output=True, text=True)
    print(r.stdout, end="")
    return None if r.returncode == 0 else f"mesh_native28.py failed: {r.stderr.strip().splitlines()[-1:]}"


def markdown(result: dict) -> str:
    lines = ["# Splats to mesh on analytic scenes: ours beside ComfyUI 0.28's Extract Mesh from Splat", "",
             f"`{result['command']}` — {result['date']}, {result['threads']} torch threads, load average "
             f"{result['load_average']} when it started (a shared 2-core VM: the seconds are loose).", "",
             "Chamfer: mean distance between the mesh and the true surface both ways, relative to the scene's bounding-box "
             "diagonal; p95: 95th percentile of true surface -> mesh. Holes: boundary loops (edges). True genus: sphere 0, "
             "torus 1, room 0.", "",
             "| scene | method | Chamfer | p95 | pieces | holes (edges) | non-manifold edges | genus | faces | s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, rows in result["scenes"].items():
        for method, r in rows.items():
            if "error" in r:
                lines.append(f"| {name} | {method} | {r['error']} | | | | | | | |")
                continue
            lines.append(f"| {name} | {method} | {r['chamfer']:.4f} | {r['true_to_mesh_p95']:.4f} | {r['components']} | "
                         f"{r['boundary_loops']} ({r['boundary_edges']}) | {r['nonmanifold_edges']} | {r['genus']:g} | "
                         f"{r['faces']:,} | {r['seconds']} |")
    lines += ["", *result.get("notes", [])]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", default="sphere,torus,room")
    ap.add_argument("--comfyui28", default=str(ROOT / ".cache" / "comfyui28"), help="tools/comfyui28_env.py's install folder")
    ap.add_argument("--native-npz", help="folder of mesh_native28.py results to use instead of running it")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=384)
    ap.add_argument("--orbit-views", type=int, default=48)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "mesh_quality.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.scenes.split(",")
    result = {"command": command_line(), "date": now(), "threads": args.threads,
              "load_average": round(os.getloadavg()[0], 1), "settings": {"resolution": args.resolution,
              "image_size": args.image_size, "orbit_views": args.orbit_views}, "scenes": {}, "notes": []}
    with tempfile.TemporaryDirectory() as tmp:
        native_dir = Path(args.native_npz) if args.native_npz else Path(tmp)
        why = None if args.native_npz else run_native(Path(args.comfyui28), names, native_dir)
        if why:
            result["notes"].append(f"ComfyUI 0.28 rows missing: {why}.")
        for name in names:
            scene = SCENES[name]()
            rows = result["scenes"][name] = {}
            for label, cams in (("ours, with the 13 cameras", scene.cameras), ("ours, no cameras (a bare file)", None)):
                t0 = time.perf_counter()
                with PeakMemory() as mem:
                    m = splats_to_mesh(scene.gaussians, cams, resolution=args.resolution, image_size=args.image_size,
                                       extra_views=args.orbit_views)
                rows[label] = score(scene, m.vertices, m.faces, time.perf_counter() - t0, views=m.info["view_description"],
                                    peak_rss_gib=round(mem.peak_bytes / 2**30, 2))
                print(name, label, {k: rows[label][k] for k in ("chamfer", "components", "boundary_loops", "genus", "seconds")}, flush=True)
            npz = native_dir / f"{name}.npz"
            if npz.is_file():
                d = np.load(npz)
                rows["ComfyUI 0.28 SplatToMesh (defaults)"] = score(scene, d["vertices"], d["faces"], float(d["seconds"]),
                                                                     torch_threads=int(d["torch_threads"]))
    result["notes"].append("ComfyUI rows: bench/mesh_native28.py in ComfyUI 0.28's own Python (run by this script, or read "
                           "with --native-npz from an earlier run of it), with the torch threads it had (2).")
    result["notes"].append("Our meshes sit about a splat radius outside the surface: a pixel's depth blends the centre "
                           "depths of the splats it sees, and the front ones weigh most (the scenes' splats are flat discs of "
                           "radius 0.016-0.03). The room without cameras is meshed from outside: the walls' outer faces.")
    write_results(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
