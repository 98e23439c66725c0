"""ComfyUI 0.28's own splat-to-mesh node ("Extract Mesh from Splat", SplatToMesh) on the analytic scenes.

Runs inside ComfyUI 0.28's Python (its node imports comfy.*), with the node's defaults, and writes one
.npz per scene (vertices in the scenes' coordinates, faces, colours, seconds) for bench/mesh_quality.py:

    .cache/comfyui28/venv/bin/python bench/mesh_native28.py --comfyui .cache/comfyui28/ComfyUI-0.28.0 --out DIR [--scenes sphere,torus,room]

(tools/comfyui28_env.py install makes that venv and unpacks that folder.) The node meshes a density grid
of the Gaussians (surface nets on an Otsu-chosen level), so it needs no cameras; it turns its output 180
degrees about X for glTF, which is undone here before scoring.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfyui", required=True, help="ComfyUI 0.28 source folder (has comfy_extras/nodes_gaussian_splat.py)")
    ap.add_argument("--out", required=True, help="folder for <scene>.npz")
    ap.add_argument("--scenes", default="sphere,torus,room")
    ap.add_argument("--resolution", type=int, default=384, help="the node's default: 384")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(args.comfyui).resolve()))
    sys.argv = sys.argv[:1] + ["--cpu"]  # ComfyUI parses its own flags at import
    import comfy.options

    comfy.options.enable_args_parsing()
    from comfy_api.latest import Types
    from comfy_extras.nodes_gaussian_splat import SplatToMesh
    from comfy_extras.nodes_save_3d import get_mesh_batch_item

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import mesh_scenes

    from vist3a.splat_contract import gaussians_to_splat

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.scenes.split(","):
        scene = mesh_scenes.SCENES[name]()
        splat = gaussians_to_splat([scene.gaussians], make=Types.SPLAT)
        t0 = time.perf_counter()
        # the node's defaults: resolution 384, kernel 5, smooth 0, level 0.4, min_component 500, min_opacity 0.02, sharpen 2
        result = SplatToMesh.execute(splat, args.resolution, 5, 0, 0.4, 500, 0.02, 2.0)
        seconds = time.perf_counter() - t0
        v, f, c, _ = get_mesh_batch_item(result.args[0], 0)
        v = v.float().cpu().numpy() * np.array([1.0, -1.0, -1.0], np.float32)  # undo its turn for glTF
        np.savez(out / f"{name}.npz", vertices=v, faces=f.long().cpu().numpy(),
                 colors=(c.float().cpu().numpy() if c is not None else np.zeros_like(v)), seconds=seconds,
                 torch_threads=torch.get_num_threads())
        print(f"{name}: {len(v)} vertices, {len(f)} faces, {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
