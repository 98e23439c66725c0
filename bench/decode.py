#!/usr/bin/env python
"""The stitched decode alone: Wan latent + decoded video -> Gaussians, official style vs ours.

One decoder (released AnySplat architecture, random weights by the parity fill rule A, precision as
both paths set it: bf16 transformer, fp32 heads) runs on the same inputs two ways:

- official: resize the video to the decoder context and run `forward_with_latent` under
  `torch.autocast(bf16)`, as inference_t23d.py does;
- ours: `vist3a.functional.splats_from_latent` (no autocast; the stored dtypes decide).

Reported per path: median time over `--repeats` (after `--warmup`), peak memory, Gaussian count,
and on CUDA the number of device -> host syncs in one decode (`torch.cuda.set_sync_debug_mode`).
The JSON is rewritten after each path, so a run cut short keeps what it measured.

    python bench/decode.py --device cuda                    # 13 frames, 512 video -> 448 context
    python bench/decode.py --device cpu --model tiny --frames 5 --size 32 --repeats 1 --warmup 0
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch
import torch.nn.functional as F

from common import command_line, fmt, now, write_results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", choices=["full", "tiny"], default="full", help="decoder: released sizes or tiny")
    p.add_argument("--decoder-depth", type=int, default=None, help="AnySplat blocks (default: all 24)")
    p.add_argument("--frames", type=int, default=13, help="video frames (official 13)")
    p.add_argument("--size", type=int, default=512, help="video height = width; the context is 448 at 512")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--out", default=None, help="results JSON (default bench/results/decode_<gpu|cpu>.json); .md beside")
    return p.parse_args(argv)


def build(args, device):
    """The decoder as both paths hold it, and seeded inputs of the official shapes."""
    from e2e import build_decoder

    from vist3a.decoders import set_precision

    spec = argparse.Namespace(model="tiny" if args.model == "tiny" else "1.3b", decoder_depth=args.decoder_depth,
                              seed=args.seed)
    dec = build_decoder(spec, device)
    set_precision(dec, "bf16" if device.type == "cuda" else "fp32")
    g = torch.Generator().manual_seed(args.seed)
    t = (args.frames - 1) // 4 + 1
    latent = torch.randn(1, 16, t, args.size // 8, args.size // 8, generator=g).to(device)
    video = (torch.rand(1, 3, args.frames, args.size, args.size, generator=g) * 2 - 1).to(device)
    return dec, latent, video


def decode_official(dec, latent, video):
    from vist3a.functional import to_gaussians

    ctx = dec.cfg.context_size(latent.shape[-2:])
    dev = latent.device.type
    with torch.no_grad(), torch.autocast(dev, enabled=dev == "cuda", dtype=torch.bfloat16):
        feed = F.interpolate(video, (video.shape[2], *ctx), mode="trilinear", align_corners=False)
        out = dec.forward_with_latent(latent, feed)
    return to_gaussians(out.gaussians[0]), out.depth[0, ..., 0]


def decode_ours(dec, latent, video):
    from vist3a.functional import splats_from_latent

    scene = splats_from_latent(dec, latent, video)[0]
    return scene.gaussians, scene.depth


def count_host_syncs(fn, device) -> int | None:
    """Device -> host syncs in one call of `fn` (CUDA's sync debug mode warns once per sync)."""
    if device.type != "cuda":
        return None
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return sum("synchroniz" in str(w.message) for w in caught)


def measure(fn, device, warmup, repeats) -> dict:
    from gpu_check_deps import PeakMemory, summarize, synchronize

    for _ in range(warmup):
        fn()
    times, peak, result = [], 0.0, None
    for _ in range(max(1, repeats)):
        with PeakMemory(device) as pm:
            synchronize(device)
            t0 = time.perf_counter()
            result = fn()
            synchronize(device)
            times.append(time.perf_counter() - t0)
        peak = max(peak, pm.peak_gib)
    gaussians, depth = result
    return {"ms": summarize([t * 1e3 for t in times]), "peak_gib": peak, "gaussians": int(gaussians.num),
            "host_syncs": count_host_syncs(fn, device), "_depth": depth.float().cpu()}


def markdown(res) -> str:
    rows = [f"# Stitched decode alone ({res['device']})", "", f"Command: `{res['command']}`", "",
            f"{res['settings']['frames']} frames, latent {res['latent_shape']}, context {res['context']}; "
            f"median of {res['settings']['repeats']} after {res['settings']['warmup']} warm-up.", "",
            "| path | ms (median) | spread | peak GiB | host syncs | Gaussians |", "|---|---:|---:|---:|---:|---:|"]
    for name in ("official", "ours"):
        r = res.get(name)
        if r:
            syncs = "-" if r["host_syncs"] is None else r["host_syncs"]
            rows.append(f"| {name} | {fmt(r['ms']['median'])} | {fmt(r['ms']['spread'] * 100, 0, '%')} | "
                        f"{fmt(r['peak_gib'], 2)} | {syncs} | {r['gaussians']} |")
    rows += ["", f"Speedup {fmt(res.get('speedup'), 2, 'x')}; "
                 f"max_rel_diff_depth {fmt(res.get('max_rel_diff_depth'), 4)}.", ""]
    return "\n".join(rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    from gpu_check_deps import GIB, describe_device, module_bytes, versions

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is available")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    dec, latent, video = build(args, device)
    res = {"schema": 1, "created": now(), "device": describe_device(device), "device_kind": device.type,
           "command": command_line(), "settings": vars(args).copy(), "build_s": time.perf_counter() - t0,
           "latent_shape": list(latent.shape), "context": list(dec.cfg.context_size(latent.shape[-2:])),
           "decoder_gib": module_bytes(dec) / GIB, "partial": "building"}
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"decode_{'gpu' if device.type == 'cuda' else 'cpu'}.json")
    depths = {}
    for name, fn in (("official", decode_official), ("ours", decode_ours)):
        r = measure(lambda: fn(dec, latent, video), device, args.warmup, args.repeats)
        depths[name] = r.pop("_depth")
        res[name] = r
        res["partial"] = None if name == "ours" else "official measured; ours not yet"
        print(f"{name}: {r['ms']['median']:.1f} ms (median), peak {r['peak_gib']:.2f} GiB, "
              f"host syncs {r['host_syncs']}", flush=True)
        if name == "ours":
            res["speedup"] = res["official"]["ms"]["median"] / r["ms"]["median"]
            a, b = depths["ours"], depths["official"]
            res["max_rel_diff_depth"] = float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
            res["decode_ms"] = r["ms"]["median"]
            res["versions"] = versions()
        write_results(out, res, markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
