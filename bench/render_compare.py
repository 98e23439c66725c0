#!/usr/bin/env python
"""Renderer comparison: gsplat vs our pure-torch rasteriser on the same Gaussians and cameras.

A seeded random scene sized like a stitched decoder's output (SH degree 4, small anisotropic
Gaussians in a unit ball) is rendered from `--views` orbit cameras by both backends; reported: the
median time of each (after `--warmup`), and how far apart the images are (PSNR, max and mean
absolute difference of RGB and alpha) against the tolerance in `agreement` below.  The JSON is
rewritten after each backend; without gsplat (CPU, or kernels that did not build) the torch figures
and the reason are still written.

    python bench/render_compare.py --device cuda                 # 300k Gaussians, 8 views of 448^2
    python bench/render_compare.py --build-gsplat                # only build gsplat's kernels (JIT, once)
    python bench/render_compare.py --device cpu --gaussians 2000 --views 2 --size 48 --repeats 1 --warmup 0
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

from common import command_line, fmt, now, write_results

# Same image within tolerance: the torch backend follows gsplat's "classic" mode (EWA + 0.3 blur,
# alpha >= 1/255, transmittance stop 1e-4) except its alpha cap (0.99 vs 0.999) and float rounding
# (gsplat builds with fast math), which move few pixels by little.
MIN_PSNR_DB = 35.0  # RGB in [0, 1], over all views
MAX_MEAN_ALPHA_DIFF = 5e-3


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--gaussians", type=int, default=300_000)
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--size", type=int, default=448, help="image height = width (the decoder context at 512)")
    p.add_argument("--sh-degree", type=int, default=4, help="AnySplat: 4")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--build-gsplat", action="store_true",
                   help="only load gsplat's kernels (JIT-compiling them once, for this GPU's architecture) and exit")
    p.add_argument("--no-gsplat", default=None, metavar="REASON",
                   help="do not touch gsplat (importing it would start its kernel build), recording REASON")
    p.add_argument("--out", default=None, help="results JSON (default bench/results/render_<gpu|cpu>.json); .md beside")
    return p.parse_args(argv)


def random_scene(n: int, sh_degree: int, seed: int, device):
    """Gaussians like a decoder's: centres in a unit ball, log-normal scales ~0.01, random rotations,
    opacities sigmoid(N(0,1)), SH with a dominant DC term."""
    from vist3a.gaussians import Gaussians

    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.4
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.3 - 4.6)
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    opac = torch.sigmoid(torch.randn(n, generator=g))
    k = (sh_degree + 1) ** 2
    sh = torch.randn(n, 3, k, generator=g) * 0.1
    sh[:, :, 0] = torch.randn(n, 3, generator=g) * 0.8
    return Gaussians(means=means.to(device), scales=scales.to(device), rotations=quats.to(device),
                     opacities=opac.to(device), sh=sh.to(device))


def cameras(views: int, size: int):
    from vist3a.render import orbit_cameras

    return orbit_cameras((0.0, 0.0, 0.0), 2.5, views, elevation_deg=15.0, fov_deg=50.0, width=size, height=size)


def render(scene, c2w, K, size, backend):
    from vist3a.render import render_gaussians

    with torch.no_grad():
        rgb, alpha, _ = render_gaussians(scene, c2w.to(scene.means.device), K.to(scene.means.device), size, size,
                                         backend=backend)
    return rgb, alpha


def agreement(rgb_a, alpha_a, rgb_b, alpha_b) -> dict:
    """How far two renders are apart, and whether that is within the tolerance above."""
    d = (rgb_a.float() - rgb_b.float()).abs()
    da = (alpha_a.float() - alpha_b.float()).abs()
    mse = float((d**2).mean())
    psnr = 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")
    res = {"psnr_db": psnr, "rgb_max_abs": float(d.max()), "rgb_mean_abs": float(d.mean()),
           "rgb_frac_over_1_255": float((d > 1 / 255).float().mean()), "alpha_max_abs": float(da.max()),
           "alpha_mean_abs": float(da.mean()), "min_psnr_db": MIN_PSNR_DB, "max_mean_alpha_diff": MAX_MEAN_ALPHA_DIFF}
    res["within_tolerance"] = psnr >= MIN_PSNR_DB and res["alpha_mean_abs"] <= MAX_MEAN_ALPHA_DIFF
    return res


def time_backend(scene, c2w, K, size, backend, device, warmup, repeats):
    from gpu_check_deps import PeakMemory, summarize, synchronize

    for _ in range(warmup):
        render(scene, c2w, K, size, backend)
    times, out = [], None
    with PeakMemory(device) as pm:
        for _ in range(max(1, repeats)):
            synchronize(device)
            t0 = time.perf_counter()
            out = render(scene, c2w, K, size, backend)
            synchronize(device)
            times.append(time.perf_counter() - t0)
    return {"ms": summarize([t * 1e3 for t in times]), "peak_gib": pm.peak_gib}, out


def build_gsplat() -> int:
    """Trigger gsplat's one-time JIT build for this GPU only (TORCH_CUDA_ARCH_LIST), report, exit 0 if usable."""
    if torch.cuda.is_available() and "TORCH_CUDA_ARCH_LIST" not in os.environ:
        major, minor = torch.cuda.get_device_capability()
        os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"
    from vist3a.render import gsplat_backend

    t0 = time.perf_counter()
    reason = gsplat_backend.unavailable_reason()
    print(f"gsplat: {'kernels loaded' if reason is None else reason} ({time.perf_counter() - t0:.1f} s)", flush=True)
    return 0 if reason is None else 1


def markdown(res) -> str:
    rows = [f"# Renderer: gsplat vs torch ({res['device']})", "", f"Command: `{res['command']}`", "",
            f"{res['gaussians']} Gaussians (SH degree {res['settings']['sh_degree']}), {res['settings']['views']} views "
            f"of {res['settings']['size']}^2, median of {res['settings']['repeats']}.", "",
            "| backend | ms (median, all views) | peak GiB |", "|---|---:|---:|"]
    for name in ("torch", "gsplat"):
        r = res.get(name)
        if r:
            rows.append(f"| {name} | {fmt(r['ms']['median'])} | {fmt(r['peak_gib'], 2)} |")
    a = res.get("agreement")
    rows.append("")
    if a:
        rows.append(f"Agreement: PSNR {fmt(a['psnr_db'], 1)} dB (>= {MIN_PSNR_DB:g}), RGB max/mean abs "
                    f"{fmt(a['rgb_max_abs'], 4)}/{fmt(a['rgb_mean_abs'], 5)}, alpha mean abs {fmt(a['alpha_mean_abs'], 5)} "
                    f"(<= {MAX_MEAN_ALPHA_DIFF:g}): {'' if a['within_tolerance'] else 'NOT '}within tolerance; "
                    f"gsplat speedup {fmt(res.get('speedup'), 1, 'x')}.")
    else:
        rows.append(f"gsplat: {res.get('gsplat_unavailable') or 'not measured'}.")
    rows.append("")
    return "\n".join(rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.build_gsplat:
        return build_gsplat()
    from gpu_check_deps import describe_device, versions

    from vist3a.render import gsplat_backend, select_backend

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is available")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    scene = random_scene(args.gaussians, args.sh_degree, args.seed, device)
    c2w, K = cameras(args.views, args.size)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"render_{'gpu' if device.type == 'cuda' else 'cpu'}.json")
    res = {"schema": 1, "created": now(), "device": describe_device(device), "device_kind": device.type,
           "command": command_line(), "settings": vars(args).copy(), "gaussians": args.gaussians, "versions": versions()}
    res["torch"], (rgb_t, alpha_t) = time_backend(scene, c2w, K, args.size, "torch", device, args.warmup, args.repeats)
    print(f"torch: {res['torch']['ms']['median']:.1f} ms", flush=True)
    if args.no_gsplat:
        reason = args.no_gsplat
    elif device.type != "cuda":
        reason = "gsplat renders on CUDA only"
    else:
        write_results(out, dict(res, partial="torch measured; loading gsplat"), markdown(res))
        reason = gsplat_backend.unavailable_reason()
        res["auto_backend"] = select_backend("auto", device, torch.float32)
    if reason is not None:
        res["gsplat_unavailable"] = reason
        write_results(out, res, markdown(res))
        print(markdown(res))
        return 0
    res["gsplat"], (rgb_g, alpha_g) = time_backend(scene, c2w, K, args.size, "gsplat", device, args.warmup, args.repeats)
    res["speedup"] = res["torch"]["ms"]["median"] / res["gsplat"]["ms"]["median"]
    res["agreement"] = agreement(rgb_t, alpha_t, rgb_g, alpha_g)
    write_results(out, res, markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
