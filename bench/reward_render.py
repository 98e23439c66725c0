"""The reward's render step without gsplat: VIST3A's pure-torch rasteriser, forward + backward, on the
reward's scene size (13 views at 448², ~1M Gaussians, as align.py renders on GH200 where gsplat has no
aarch64 wheel).

On a CPU the full size is out of reach, so the scene is *scaled* by a factor s: N = 1M / s Gaussians
rendered at 448 / sqrt(s) pixels, with world scales grown by sqrt(s) so every Gaussian keeps the same
pixel footprint. Work (pixel-Gaussian pairs) and memory then shrink by s, and the JSON records each
measured s and the linear extrapolation to s = 1, labelled as such. On a CUDA device run it with
``--scales 1`` for the real figure.

    PYTHONPATH=$PWD python bench/reward_render.py --scales 256 64 --out bench/results/reward_render_cpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FULL_GAUSSIANS = 1_000_000
FULL_SIZE = 448
VIEWS = 13


def scene(n: int, s: float, seed: int = 0, device="cpu"):
    """Gaussians filling a room-sized box seen by an arc of cameras (like a decoded AnySplat scene)."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([4.0, 2.0, 4.0])
    scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.004), math.log(0.02), generator=g)) * math.sqrt(s)
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=1)
    opac = torch.empty(n).uniform_(0.3, 0.95, generator=g)
    sh = torch.randn(n, 3, 1, generator=g) * 0.5
    return [t.to(device) for t in (means, quats, scales, opac, sh)]


def cameras(size: int, device="cpu"):
    from vist3a.render import look_at, world_to_camera

    c2w = []
    for i in range(VIEWS):
        az = -0.6 + 1.2 * i / (VIEWS - 1)
        c2w.append(look_at((3.5 * math.sin(az), -0.4, -3.5 * math.cos(az)), (0.0, 0.0, 0.0)))
    f = 0.5 / math.tan(math.radians(30))
    K = torch.tensor([[f * size, 0, size / 2], [0, f * size, size / 2], [0, 0, 1.0]]).expand(VIEWS, 3, 3)
    return world_to_camera(torch.stack(c2w)).to(device), K.contiguous().to(device)


def measure(s: float, device: str) -> dict:
    from vist3a.render import rasterize

    n = int(FULL_GAUSSIANS / s)
    size = int(round(FULL_SIZE / math.sqrt(s)))
    means, quats, scales, opac, sh = scene(n, s, device=device)
    params = [means, scales, opac, sh]
    for p in params:
        p.requires_grad_(True)
    viewmats, Ks = cameras(size, device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    rgb, alpha, _ = rasterize(means, quats, scales, opac, sh, viewmats, Ks, size, size, background=0.5,
                              backend="torch", near=0.1, far=100.0)
    loss = rgb.mean()
    if device == "cuda":
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    finite = all(bool(torch.isfinite(p.grad).all()) for p in params)
    out = {"scale_factor": s, "gaussians": n, "size": size, "views": VIEWS, "forward_s": round(t1 - t0, 3),
           "backward_s": round(t2 - t1, 3), "coverage_mean_alpha": round(float(alpha.mean()), 4),
           "grads_finite": finite, "host_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device == "cuda":
        out["device_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", type=float, nargs="+", default=[256.0, 64.0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "reward_render_cpu.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [measure(s, args.device) for s in sorted(args.scales, reverse=True)]
    smallest = min(runs, key=lambda r: r["scale_factor"])
    # time(s) = fixed + work / s, fitted through the two largest measured scenes (the fixed part is
    # per-call overhead that dominates tiny scenes); one run: pure work / s
    pts = sorted(runs, key=lambda r: r["scale_factor"])[:2]
    t = [r["forward_s"] + r["backward_s"] for r in pts]
    if len(pts) == 2:
        inv = [1.0 / r["scale_factor"] for r in pts]
        work = (t[0] - t[1]) / (inv[0] - inv[1])
        fixed = t[0] - work * inv[0]
    else:
        work, fixed = t[0] * pts[0]["scale_factor"], 0.0
    per_unit = fixed + work
    doc = {
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "what": "pure-torch rasteriser (vist3a.render, backend='torch'), forward + backward of mean(rgb), "
                f"{VIEWS} views; full size = {FULL_GAUSSIANS} Gaussians at {FULL_SIZE}^2",
        "device": args.device, "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "runs": runs,
        "full_size_estimate": None if smallest["scale_factor"] == 1 else {
            "label": "EXTRAPOLATED, not measured: time = fixed + work/s fitted through the runs at s = "
                     + ", ".join(f"{r['scale_factor']:g}" for r in pts),
            "fit_fixed_s": round(fixed, 2), "fit_work_s_at_full_size": round(work, 1),
            "forward_plus_backward_s": round(per_unit, 1),
            "host_peak_rss_mb_note": "the rasteriser's memory is bounded by PAIR_BUDGET batches plus O(N) per view"},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(out)
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
