#!/usr/bin/env python
"""Text -> 3DGS end to end: the official VIST3A inference path vs ours, side by side in one process.

Both paths get the same architectures and weights (random, deterministic per parameter name; the
official one stored in fp16 as `WanPipeline.from_pretrained(torch_dtype=float16)` gives it, ours in
its own precision), the same prompt, seed and settings; warm-up runs are excluded, the figures are
the median of `--repeats` runs with their spread.

Official path (`inference_t23d.py` of gohyojun15/VIST3A, as it runs): diffusers `WanPipeline` in fp16
with the VIST3A LoRA as an unmerged PEFT adapter, all under `torch.autocast(bf16)`; CFG as two
transformer calls per step; `output_type="latent"`, un-normalised, VAE decode, trilinear resize to
the decoder context, stitched decoder under bf16 autocast.  Stages are timed around the same calls
(the pipeline's own prompt encoding is timed separately by calling `encode_prompt` first and passing
the embeddings, which is what `__call__` does inside).

Ours: `vist3a.pipeline.VIST3APipeline.optimize(...)` with its fast settings (bf16, LoRA merged,
cuDNN attention, batched CFG, sync-free UniPC, text encoder streamed, optional torch.compile and
offload) and `generate`.

Both then render 8 orbit views of their Gaussians with our renderer (gsplat on CUDA when installed).

    python bench/e2e.py --device cuda --model 1.3b                      # the official setting
    python bench/e2e.py --device cuda --model 14b --memory-cap-gib 24   # ours under a 24 GB cap
    python bench/e2e.py --device cpu ... (reduced sizes, see bench/README.md)
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import torch
import torch.nn.functional as F

from common import command_line, fmt, now, write_json, write_results
from measure import (
    PeakMemory,
    StageTimer,
    cpu_has_fast_bf16,
    describe_device,
    materialize_random_,
    mfu,
    peak_flops,
    summarize,
    versions,
    wan_fill_value,
    wan_transformer_flops,
)

from vist3a.functional import to_gaussians
from vist3a.offload import GIB, module_bytes
from vist3a.sync import synchronize

PROMPT = "a cozy wooden cabin in a snowy pine forest"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", choices=["1.3b", "14b", "tiny"], default="1.3b")
    p.add_argument("--size", type=int, default=512, help="video height = width (official 512)")
    p.add_argument("--frames", type=int, default=13, help="video frames (official 13)")
    p.add_argument("--steps", type=int, default=50, help="denoising steps (official 50)")
    p.add_argument("--cfg", type=float, default=7.5)
    p.add_argument("--shift", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="measured runs per path (median and spread)")
    p.add_argument("--warmup", type=int, default=1, help="excluded runs per path before measuring (compile happens here)")
    p.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                   help="ours: torch.compile the transformer blocks (compile time reported); optional mode, "
                        "e.g. --compile max-autotune-no-cudagraphs")
    p.add_argument("--memory-cap-gib", type=float, default=None,
                   help="ours: plan offloading for this budget and enforce it (set_per_process_memory_fraction)")
    p.add_argument("--offload", default="auto", choices=["auto", "none", "text_encoder", "model", "sequential"])
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="ours; auto = bf16 on a GPU and on CPUs with AMX/AVX512-BF16, else fp32")
    p.add_argument("--attention", default="auto", help="ours: diffusers attention backend ('auto', 'native', '_native_cudnn', ...)")
    p.add_argument("--no-lora", action="store_true", help="without the VIST3A LoRA (the official path uses it)")
    p.add_argument("--skip-official", action="store_true", help="measure ours only")
    p.add_argument("--no-sync-check", action="store_true", help="skip the host-sync check of our denoising loop")
    # reduced architectures (CPU runs); default: the released sizes
    p.add_argument("--layers", type=int, default=None, help="transformer blocks (default: all, 30 / 40)")
    p.add_argument("--te-layers", type=int, default=None, help="UMT5 encoder blocks (default: all 24)")
    p.add_argument("--te-vocab", type=int, default=None, help="UMT5 vocabulary rows (default: 256384)")
    p.add_argument("--decoder-depth", type=int, default=None,
                   help="AnySplat alternating-attention blocks (default 24); DINO keeps as many after the cut")
    p.add_argument("--render-size", type=int, default=None, help="render size (default: the decoder context, 448 at 512)")
    p.add_argument("--render-views", type=int, default=8, help="orbit views rendered per run (0: no render stage)")
    p.add_argument("--interleave", choices=["auto", "yes", "no"], default="auto",
                   help="alternate official and ours run by run (auto: on a CPU, where other processes add noise; "
                        "on a GPU the paths run one after the other so each peak memory is its own)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: on a shared machine OpenMP barriers make multi-threaded runs vary 5x)")
    p.add_argument("--out", default=None, help="results JSON (default bench/results/e2e_<gpu|cpu>[_14b].json); .md beside")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------- models


def transformer_config(args) -> dict:
    from vist3a.wan.configs import WAN_T2V_1_3B_TRANSFORMER_CONFIG, WAN_T2V_14B_TRANSFORMER_CONFIG
    from vist3a.wan.tiny import TINY_TRANSFORMER_CONFIG

    cfg = dict({"1.3b": WAN_T2V_1_3B_TRANSFORMER_CONFIG, "14b": WAN_T2V_14B_TRANSFORMER_CONFIG,
                "tiny": TINY_TRANSFORMER_CONFIG}[args.model])
    if args.layers:
        cfg["num_layers"] = args.layers
    return cfg


def text_encoder_config(args, tokenizer) -> dict:
    from vist3a.wan.configs import UMT5_XXL_CONFIG
    from vist3a.wan.tiny import TINY_UMT5_CONFIG

    cfg = dict(TINY_UMT5_CONFIG if args.model == "tiny" else UMT5_XXL_CONFIG)
    if args.te_layers:
        cfg["num_layers"] = cfg["num_decoder_layers"] = args.te_layers
    cfg["vocab_size"] = args.te_vocab or cfg.get("vocab_size") or len(tokenizer)
    cfg["vocab_size"] = max(cfg["vocab_size"], len(tokenizer))
    return cfg


def vae_config(args) -> dict:
    from vist3a.wan.configs import WAN_VAE_CONFIG
    from vist3a.wan.tiny import TINY_VAE_CONFIG

    return dict(TINY_VAE_CONFIG if args.model == "tiny" else WAN_VAE_CONFIG)


def decoder_config(args):
    from vist3a.models import AnySplatConfig, StitchConfig

    if args.model == "tiny":
        from vist3a.tiny import tiny_stitch_config

        return tiny_stitch_config()
    a = AnySplatConfig()
    if args.decoder_depth:
        n = args.decoder_depth
        idx = tuple(sorted({round(i * (n - 1) / 3) for i in range(4)})) if n >= 4 else tuple(range(n))
        a = AnySplatConfig(aa_depth=n, dino_depth=2 + n, intermediate_layer_idx=idx)
    return StitchConfig(anysplat=a)


def _dtype_for(dtype, keep_fp32):
    keep = tuple(keep_fp32 or ())
    return lambda name: torch.float32 if any(m in name.split(".") for m in keep) else dtype


def official_te_dtype(device) -> torch.dtype:
    """fp16 as the official script loads it; on a CPU bf16, because CPU autocast cannot mix fp16 text
    embeddings into its bf16 `torch.cat` (diffusers' prompt padding fails there)."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.bfloat16


def build_wan(args, tokenizer, *, dtype, device, official: bool):
    """Transformer, VAE and UMT5 with deterministic random weights (see bench/measure.py: wan_fill_value)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from vist3a.wan.loading import WanModels

    fill_device = "cuda" if args.device == "cuda" else "cpu"
    value = lambda name, shape: wan_fill_value(name, shape, args.seed, device=fill_device)  # noqa: E731
    with init_empty_weights():
        tr = WanTransformer3DModel.from_config(transformer_config(args))
        vae = AutoencoderKLWan.from_config(vae_config(args))
        te = UMT5EncoderModel(UMT5Config(**text_encoder_config(args, tokenizer)))
    materialize_random_(tr, value, device=device, dtype_for=_dtype_for(dtype, WanTransformer3DModel._keep_in_fp32_modules))
    te_dtype = official_te_dtype(device) if official else dtype
    te_keep = UMT5EncoderModel._keep_in_fp32_modules if te_dtype == torch.float16 else ()
    materialize_random_(te, lambda n, s: value("te." + n, s), device=device, dtype_for=_dtype_for(te_dtype, te_keep))
    vae_dtype = torch.float16 if official else dtype
    materialize_random_(vae, lambda n, s: value("vae." + n, s), device=device, dtype_for=lambda n: vae_dtype)
    return WanModels(transformer=tr.eval(), vae=vae.eval(), text_encoder=te.eval(), tokenizer=tokenizer, dtype=dtype,
                     device=torch.device(device), name=args.model)


def build_decoder(args, device):
    from accelerate import init_empty_weights

    from vist3a.models import StitchedDecoder
    from vist3a.parity import fill_value

    cfg = decoder_config(args)
    with init_empty_weights():
        dec = StitchedDecoder(cfg)
    materialize_random_(dec, lambda n, s: fill_value(n, s, "A", args.seed)[1], device=device,
                        dtype_for=lambda n: torch.float32)
    return dec.eval()


def random_lora(tr_config: dict, seed: int):
    from pathlib import Path

    from vist3a.wan.lora import VIST3A_LORA_TARGETS, WanLoRA

    d = tr_config["num_attention_heads"] * tr_config["attention_head_dim"]
    g = torch.Generator().manual_seed(seed + 77)
    sd = {}
    for i in range(tr_config["num_layers"]):
        for target in VIST3A_LORA_TARGETS:
            sd[f"blocks.{i}.{target}.lora_A.weight"] = torch.randn(8, d, generator=g) / d**0.5
            sd[f"blocks.{i}.{target}.lora_B.weight"] = torch.randn(d, 8, generator=g) * 0.01
    return WanLoRA(Path("random-vist3a-lora"), sd, rank=8, alpha=16.0, num_blocks=tr_config["num_layers"], inner_dim=d)


def tiny_wan(args, dtype, device, official):
    from vist3a.wan.state_dicts import cast_module
    from vist3a.wan.tiny import build_tiny_wan

    m = build_tiny_wan(seed=args.seed)
    keep = type(m.transformer)._keep_in_fp32_modules
    cast_module(m.transformer, dtype, keep)
    te_dtype = official_te_dtype(device) if official else dtype
    cast_module(m.text_encoder, te_dtype, type(m.text_encoder)._keep_in_fp32_modules if te_dtype == torch.float16 else ())
    cast_module(m.vae, torch.float16 if official else dtype)
    m.dtype = dtype
    return m.to(device)


# --------------------------------------------------------------------------------------------- runs


def _free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_official(pipe, decoder, args, device, ctx_hw, render_hw, views=8):
    """One text -> 3DGS run exactly as inference_t23d.py does it; returns (stage seconds, total, latent, extra)."""
    from vist3a.render import render_orbit
    from vist3a.wan import NEGATIVE_PROMPT, build_prompt

    timer = StageTimer(device, sync=True)
    synchronize(device)
    t0 = time.perf_counter()
    with torch.no_grad(), torch.autocast(device.type, enabled=True, dtype=torch.bfloat16):
        with timer("text"):
            pe, ne = pipe.encode_prompt(build_prompt(PROMPT), negative_prompt=[NEGATIVE_PROMPT],
                                        do_classifier_free_guidance=True, max_sequence_length=512, device=device)
        with timer("denoise"):
            out = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, width=args.size, height=args.size,
                       num_frames=args.frames, num_inference_steps=args.steps, guidance_scale=float(args.cfg),
                       output_type="latent", generator=torch.Generator("cpu").manual_seed(args.seed))
            latents = out["frames"]
            latents_mean = torch.tensor(pipe.vae.config.latents_mean).view(1, pipe.vae.config.z_dim, 1, 1, 1).to(
                latents.device, latents.dtype)
            latents_std = 1.0 / torch.tensor(pipe.vae.config.latents_std).view(1, pipe.vae.config.z_dim, 1, 1, 1).to(
                latents.device, latents.dtype)
            latents = latents / latents_std + latents_mean
        with timer("vae"):
            samples = pipe.vae.decode(latents, return_dict=False)[0]
    with timer("splats"):
        with torch.no_grad(), torch.autocast(device.type, enabled=True, dtype=torch.bfloat16):
            feedforward = F.interpolate(samples, (samples.shape[2], *ctx_hw), mode="trilinear", align_corners=False)
        with torch.no_grad(), torch.autocast(device.type, enabled=True, dtype=torch.bfloat16):
            output = decoder.forward_with_latent(latents.to(device), feedforward.to(device))
        gaussians = to_gaussians(output.gaussians[0])
    if views:
        with timer("render"):
            render_orbit(gaussians, n=views, width=render_hw[1], height=render_hw[0])
    synchronize(device)
    total = time.perf_counter() - t0
    return timer.times, total, latents.float().cpu(), {"gaussians": gaussians.num, "depth": output.depth[0, ..., 0].float().cpu()}


def run_ours(pipe, settings, device, render_hw, views=8):
    from vist3a.render import render_orbit

    synchronize(device)
    t0 = time.perf_counter()
    scene, latent = pipe.generate(PROMPT, settings)
    times = dict(pipe.last_timings)
    timer = StageTimer(device, sync=True)
    if views:
        with timer("render"):
            render_orbit(scene.gaussians, n=views, width=render_hw[1], height=render_hw[0])
    synchronize(device)
    total = time.perf_counter() - t0
    times.update(timer.times)
    return times, total, latent.float().cpu(), {"gaussians": scene.gaussians.num, "depth": scene.depth.float().cpu()}


def measure(runs: dict, *, warmup: int, repeats: int, device, interleave: bool) -> dict:
    """Run each path `warmup` times (excluded) then `repeats` times; with `interleave` the paths alternate
    run by run (A B A B ...), otherwise each path completes before the next starts."""

    order = list(runs)
    rec = {name: {"first": [], "stages": [], "totals": [], "peaks": [], "last": None} for name in order}

    def once(name, measured):
        if measured:
            with PeakMemory(device) as pm:
                times, total, latent, extra = runs[name]()
            rec[name]["stages"].append(times)
            rec[name]["totals"].append(total)
            rec[name]["peaks"].append(pm.peak_bytes)
        else:
            times, total, latent, extra = runs[name]()
            rec[name]["first"].append(total)
        rec[name]["last"] = (latent, extra)
        print(f"  {name}: {'run' if measured else 'warm-up'} {total:.3f} s (render {times.get('render', 0):.3f} s)",
              flush=True)

    schedule = [(False, warmup), (True, repeats)]
    if interleave:
        for measured, n in schedule:
            for _ in range(n):
                for name in order:
                    once(name, measured)
    else:
        for name in order:
            for measured, n in schedule:
                for _ in range(n):
                    once(name, measured)
    out = {}
    for name, r in rec.items():
        stage_runs = r["stages"]
        latent, extra = r["last"]
        out[name] = {
            "total_with_render": summarize(r["totals"]),
            # text -> Gaussians: the wall time minus the preview render (same renderer for both paths)
            "total": summarize([t - x.get("render", 0.0) for t, x in zip(r["totals"], stage_runs)]),
            "stages": {k: summarize([x.get(k, 0.0) for x in stage_runs]) for k in stage_runs[0]},
            "peak_gib": max(r["peaks"]) / 1024**3,
            "first_run_s": r["first"][0] if r["first"] else None,
            "latent": latent,
            "gaussians": extra["gaussians"],
            "depth": extra["depth"],
        }
    return out


def rel_diff(a, b):
    if a is None or b is None or a.shape != b.shape:
        return None
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


# -------------------------------------------------------------------------------------------- report


STAGES = ("text", "denoise", "vae", "splats", "render")


def markdown(res: dict) -> str:
    off, ours = res.get("official"), res["ours"]
    lines = [
        f"# End-to-end text -> 3DGS: official path vs ours ({res['device']})",
        "",
        f"Command: `{res['command']}`",
        "",
        f"Settings: model {res['settings']['model']}, {res['settings']['frames']} frames, "
        f"{res['settings']['size']}x{res['settings']['size']}, {res['settings']['steps']} steps, CFG {res['settings']['cfg']}, "
        f"{res['settings']['repeats']} runs (median, spread = (max-min)/median), {res['settings']['warmup']} warm-up excluded. "
        f"{res['architecture']['note']}",
        "",
        "| stage | official ms | ours ms | speedup |",
        "|---|---:|---:|---:|",
    ]
    for st in STAGES:
        o = off["stages"].get(st, {}).get("median") if off else None
        u = ours["stages"].get(st, {}).get("median")
        sp = (o / u) if (o and u) else None
        lines.append(f"| {st} | {fmt(o and o * 1e3)} | {fmt(u and u * 1e3)} | {fmt(sp, 2, 'x')} |")
    lines += [
        f"| **text -> 3DGS** (wall, without render; spread {fmt(off and off['total']['spread'] * 100, 0, '%')} / "
        f"{fmt(ours['total']['spread'] * 100, 0, '%')}) | **{fmt(res['official_s'] and res['official_s'] * 1e3)}** | "
        f"**{fmt(res['ours_s'] * 1e3)}** | **{fmt(res['speedup'], 2, 'x')}** |",
        f"| with the 8-view render | {fmt(res['official_with_render_s'] and res['official_with_render_s'] * 1e3)} | "
        f"{fmt(res['ours_with_render_s'] * 1e3)} | {fmt(res['speedup_with_render'], 2, 'x')} |",
        "",
        "| figure | official | ours |",
        "|---|---:|---:|",
        f"| peak memory GiB ({res['memory_kind']}) | {fmt(res['official_peak_gib'], 2)} | {fmt(res['ours_peak_gib'], 2)} |",
        f"| weights GiB (all components, as stored) | {fmt(off and off.get('weights_gib'), 2)} | {fmt(ours.get('weights_gib'), 2)} |",
        f"| text -> 3DGS s, fastest run | {fmt(off and off['total']['min'], 3)} | {fmt(ours['total']['min'], 3)} "
        f"(speedup {fmt(res['speedup_min'], 2, 'x')}) |",
        f"| transformer step ms (CFG step, {res['flops_per_step'] / 1e12:.3f} TFLOP) | "
        f"{fmt(res['official_transformer_step_ms'])} | {fmt(res['transformer_step_ms'])} |",
        f"| MFU (peak {res['peak_tflops']:.1f} TFLOP/s, {res['peak_source']}) | {fmt(res['official_mfu'], 3)} | {fmt(res['mfu'], 3)} |",
        f"| VAE decode ms | {fmt(res['official_decode_ms'])} | {fmt(res['decode_ms'])} |",
        f"| stitched decode ms | {fmt(res['official_splat_decode_ms'])} | {fmt(res['splat_decode_ms'])} |",
        f"| Gaussians | {off['gaussians'] if off else '-'} | {ours['gaussians']} |",
        "",
        f"Ours: {res['ours']['plan']}. max_rel_diff_latent (ours vs official) = {fmt(res['max_rel_diff_latent'], 4)}, "
        f"max_rel_diff_depth = {fmt(res['max_rel_diff_depth'], 4)}; host syncs in our denoising loop: "
        f"{res['denoise_host_syncs']}."
        + (f" Compile (first run minus median): {res['compile_s']:.1f} s." if res.get("compile_s") is not None else ""),
        "",
    ]
    if res["device_kind"] == "cpu":
        lines.append("CPU figures are for regressions and ratios at reduced sizes, not predictions of the GPU speedup "
                     "(see bench/README.md). Both paths hold their weights in the same process here, so the RSS peaks "
                     "are not separable; compare the weights row.")
        lines.append("")
    if res.get("goals"):
        lines.append("Goals (GPU): " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in res["goals"].items()))
        lines.append("")
    return "\n".join(lines)


def out_path(args, device) -> str:
    return args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                    f"e2e_{'gpu' if device.type == 'cuda' else 'cpu'}{'_14b' if args.model == '14b' else ''}.json")


def write_partial(out: str, res: dict, official: dict, steps: int) -> None:
    """The official path's figures as soon as they exist (JSON only, marked partial); the full results replace them."""
    part = dict(res, partial="official measured; ours not yet",
                official={k: v for k, v in official.items() if k not in ("latent", "depth")},
                official_s=official["total"]["median"], official_peak_gib=official["peak_gib"],
                official_transformer_step_ms=official["stages"]["denoise"]["median"] / steps * 1e3,
                official_decode_ms=official["stages"]["vae"]["median"] * 1e3,
                official_splat_decode_ms=official["stages"]["splats"]["median"] * 1e3)
    write_json(out, part)
    print(f"official: figures written to {out} (partial until ours is measured)", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    from vist3a.pipeline import GenerateSettings, VIST3APipeline
    from vist3a.wan.sampling import latent_shape, sample_latents
    from vist3a.wan.tiny import tiny_tokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is available")
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if (device.type == "cuda" or cpu_has_fast_bf16()) else "fp32"
    ours_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    tokenizer = tiny_tokenizer()  # no hub access: a small UMT5-style sentencepiece vocabulary (ids < 256)
    tcfg = transformer_config(args)
    dcfg = decoder_config(args)
    shape = latent_shape(1, args.frames, args.size, args.size, tcfg["in_channels"])
    ctx_hw = dcfg.context_size(shape[-2:])
    render_hw = (args.render_size, args.render_size) if args.render_size else ctx_hw
    lora = None if args.no_lora else random_lora(tcfg, args.seed)
    flops = wan_transformer_flops(tcfg, shape, text_tokens=512)
    flops_step = 2 * flops.total  # CFG: cond + uncond

    res: dict = {"schema": 1, "created": now(), "device": describe_device(device), "device_kind": device.type,
                 "command": command_line(), "prompt": PROMPT}
    res["settings"] = {k: getattr(args, k) for k in ("model", "size", "frames", "steps", "cfg", "shift", "seed", "repeats",
                                                     "warmup", "compile", "memory_cap_gib", "offload", "attention")}
    res["settings"].update(precision=precision, lora=not args.no_lora, threads=torch.get_num_threads())
    reduced = {k: getattr(args, k) for k in ("layers", "te_layers", "te_vocab", "decoder_depth") if getattr(args, k)}
    res["architecture"] = {
        "transformer": tcfg, "vae_base_dim": vae_config(args)["base_dim"],
        "text_encoder": {k: v for k, v in text_encoder_config(args, tokenizer).items()
                         if k in ("d_model", "d_ff", "num_layers", "num_heads", "vocab_size")},
        "decoder": {k: getattr(dcfg.anysplat, k) for k in ("embed_dim", "dino_depth", "aa_depth", "dpt_features")},
        "latent_shape": list(shape), "decoder_context": list(ctx_hw), "reduced": reduced,
        "note": ("Released architectures, random weights." if not reduced and args.model != "tiny" else
                 f"Reduced architecture ({', '.join(f'{k}={v}' for k, v in reduced.items()) or 'tiny models'}), random weights."),
    }

    # ------------------------------------------------------------------ official
    interleave = args.interleave == "yes" or (args.interleave == "auto" and device.type == "cpu")
    runs, official_parts = {}, {}

    def build_official():
        from diffusers import WanPipeline

        from vist3a.decoders import set_precision
        from vist3a.wan import apply_vist3a_lora
        from vist3a.wan.sampling import make_scheduler

        t0 = time.perf_counter()
        wan16 = tiny_wan(args, torch.float16, device, True) if args.model == "tiny" else \
            build_wan(args, tokenizer, dtype=torch.float16, device=device, official=True)
        if lora is not None:
            apply_vist3a_lora(wan16.transformer, lora, merge=False)  # PeftModel.from_pretrained: an unmerged adapter
        dec = build_decoder(args, device)
        set_precision(dec, "bf16")  # AnySplat casts its aggregator to bf16 when it is built
        pipe = WanPipeline(tokenizer=tokenizer, text_encoder=wan16.text_encoder, vae=wan16.vae,
                           transformer=wan16.transformer, scheduler=make_scheduler(args.shift))
        pipe.set_progress_bar_config(disable=True)
        official_parts.update(pipe=pipe, dec=dec, build_s=time.perf_counter() - t0,
                              weights_gib=sum(module_bytes(m) for m in (wan16.transformer, wan16.text_encoder,
                                                                             wan16.vae, dec)) / GIB)
        print(f"official: built in {official_parts['build_s']:.1f} s", flush=True)
        return lambda: run_official(pipe, dec, args, device, ctx_hw, render_hw, args.render_views)

    def build_ours():
        from vist3a.wan import apply_vist3a_lora

        t0 = time.perf_counter()
        host = torch.device("cpu")  # built in CPU memory; optimize() places it (offload keeps CPU masters)
        wan = tiny_wan(args, ours_dtype, host, False) if args.model == "tiny" else \
            build_wan(args, tokenizer, dtype=ours_dtype, device=host, official=False)
        if lora is not None:
            apply_vist3a_lora(wan.transformer, lora, merge=False)  # optimize() merges it
        dec = build_decoder(args, host)
        if args.memory_cap_gib and device.type == "cuda":
            total_mem = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gib * GIB / total_mem), device)
        pipe = VIST3APipeline(wan, dec, device=device, described={"wan": f"random {args.model}"})
        plan = pipe.optimize(fast=True, precision=precision, compile=args.compile, offload=args.offload,
                             memory_cap_gib=args.memory_cap_gib, attention=args.attention)
        pipe.sync_timings = True
        weights = sum(module_bytes(m) for m in (wan.transformer, wan.text_encoder, wan.vae, dec)) / GIB
        ours_parts.update(pipe=pipe, plan=plan.to_dict(), build_s=time.perf_counter() - t0, weights_gib=weights)
        print(f"ours: built in {ours_parts['build_s']:.1f} s, plan {plan.to_dict()}", flush=True)
        settings = GenerateSettings(frames=args.frames, height=args.size, width=args.size, steps=args.steps,
                                    cfg=args.cfg, shift=args.shift, seed=args.seed)
        return lambda: run_ours(pipe, settings, device, render_hw, args.render_views)

    ours_parts: dict = {}
    official = None
    if interleave:
        if not args.skip_official:
            runs["official"] = build_official()
        runs["ours"] = build_ours()
        measured = measure(runs, warmup=args.warmup, repeats=args.repeats, device=device, interleave=True)
        official, ours = measured.get("official"), measured["ours"]
    else:
        if not args.skip_official:
            official = measure({"official": build_official()}, warmup=args.warmup, repeats=args.repeats,
                               device=device, interleave=False)["official"]
            write_partial(out_path(args, device), res, official, args.steps)  # a run cut short keeps these
            official_parts.pop("pipe"), official_parts.pop("dec")
            _free(device)
        ours = measure({"ours": build_ours()}, warmup=args.warmup, repeats=args.repeats, device=device,
                       interleave=False)["ours"]
    if official is not None:
        official.update(build_s=official_parts["build_s"], weights_gib=official_parts["weights_gib"])
        print(f"official: {official['total']['median']:.3f} s (median)", flush=True)
    pipe = ours_parts["pipe"]
    ours.update(build_s=ours_parts["build_s"], weights_gib=ours_parts["weights_gib"], plan=ours_parts["plan"])
    print(f"ours: {ours['total']['median']:.3f} s (median)", flush=True)

    syncs = "not checked"
    if not args.no_sync_check:
        pos, neg = pipe.encode_prompt(PROMPT)
        try:
            with pipe.stage("denoise"):
                sample_latents(pipe.wan, pos, neg, num_frames=args.frames, height=args.size, width=args.size,
                               steps=min(args.steps, 3), cfg=args.cfg, shift=args.shift, seed=args.seed, check_syncs=True)
            syncs = "none"
        except Exception as exc:  # noqa: BLE001 - recorded, not fatal
            syncs = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]

    # ------------------------------------------------------------------ figures
    peak, peak_src = peak_flops(device, ours_dtype)
    peak_off, _ = peak_flops(device, torch.bfloat16) if official else (None, None)
    step_s = ours["stages"]["denoise"]["median"] / args.steps
    off_step_s = official["stages"]["denoise"]["median"] / args.steps if official else None
    res["official"] = None if official is None else {k: v for k, v in official.items() if k not in ("latent", "depth")}
    res["ours"] = {k: v for k, v in ours.items() if k not in ("latent", "depth")}
    res.update(
        official_s=official["total"]["median"] if official else None,
        ours_s=ours["total"]["median"],
        speedup=(official["total"]["median"] / ours["total"]["median"]) if official else None,
        speedup_min=(official["total"]["min"] / ours["total"]["min"]) if official else None,
        official_with_render_s=official["total_with_render"]["median"] if official else None,
        ours_with_render_s=ours["total_with_render"]["median"],
        speedup_with_render=(official["total_with_render"]["median"] / ours["total_with_render"]["median"])
        if official else None,
        interleaved=interleave,
        official_peak_gib=official["peak_gib"] if official else None,
        ours_peak_gib=ours["peak_gib"],
        peak_ratio=(ours["peak_gib"] / official["peak_gib"]) if official else None,
        memory_kind="torch.cuda.max_memory_allocated" if device.type == "cuda" else "process RSS",
        flops_per_step=flops_step, flops_breakdown=flops.to_dict(),
        transformer_step_ms=step_s * 1e3,
        official_transformer_step_ms=off_step_s * 1e3 if off_step_s else None,
        peak_tflops=(peak or 0) / 1e12, peak_source=peak_src,
        mfu=mfu(flops_step, step_s, peak),
        official_mfu=mfu(flops_step, off_step_s, peak_off) if off_step_s else None,
        decode_ms=ours["stages"]["vae"]["median"] * 1e3,
        official_decode_ms=official["stages"]["vae"]["median"] * 1e3 if official else None,
        splat_decode_ms=ours["stages"]["splats"]["median"] * 1e3,
        official_splat_decode_ms=official["stages"]["splats"]["median"] * 1e3 if official else None,
        max_rel_diff_latent=rel_diff(ours["latent"], official["latent"]) if official else None,
        max_rel_diff_depth=rel_diff(ours["depth"], official["depth"]) if official else None,
        denoise_host_syncs=syncs,
        compile_s=(ours["first_run_s"] - ours["total_with_render"]["median"]) if (args.compile and ours["first_run_s"])
        else None,
        versions=versions(),
    )
    if device.type == "cuda" and official:
        res["goals"] = {"speedup >= 2.2": res["speedup"] >= 2.2, "mfu >= 0.55": (res["mfu"] or 0) >= 0.55,
                        "ours_peak <= 0.7 official_peak": res["peak_ratio"] <= 0.7}
    if device.type == "cuda" and args.memory_cap_gib:
        res.setdefault("goals", {})[f"completes under {args.memory_cap_gib:g} GiB"] = ours["peak_gib"] <= args.memory_cap_gib
    json_path, md_path = write_results(out_path(args, device), res, markdown(res))
    print(markdown(res))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
