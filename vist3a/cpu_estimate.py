"""A one-line time estimate before a long CPU run, so a CPU user learns what to lower before waiting, and the
'step 3 of 50, about 16 min left' line while it runs.

The Wan transformer's work per denoising step is about 2 * parameters * tokens multiply-adds for the
linear layers plus 4 * layers * tokens^2 * width for attention (tokens: latent frames x (H/16) x (W/16)),
twice per step with classifier-free guidance. The CPU's speed is measured on the spot with a short
float32 matrix product, so the figure follows the machine it runs on (a rough guide, not a promise).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .run_sizes import above_quick

__all__ = ["LONG_RUN_S", "wan_tokens", "wan_step_flops", "measure_gflops", "SampleEstimate", "estimate_sample", "describe",
           "DecodeEstimate", "decoder_flops", "estimate_decode", "describe_decode", "estimate_wan_sampling",
           "estimate_stitched_decode", "estimate_anysplat", "describe_anysplat", "quick_advice", "progress_line",
           "human_seconds"]

LONG_RUN_S = 60.0  # say something only when the run will take longer than this


def wan_tokens(frames: int, height: int, width: int) -> int:
    """Transformer tokens of a Wan 2.1 video: latent frames 1+(F-1)//4, VAE /8 then 2x2 patches."""
    return (1 + (frames - 1) // 4) * max(1, height // 16) * max(1, width // 16)


def wan_step_flops(params: int, layers: int, dim: int, tokens: int) -> float:
    """Floating-point operations of one transformer forward pass."""
    return 2.0 * params * tokens + 4.0 * layers * float(tokens) ** 2 * dim


def measure_gflops(size: int = 384, repeats: int = 3) -> float:
    """float32 matmul throughput of this CPU in GFLOP/s (best of a few ~10 ms runs)."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)  # warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / max(best, 1e-9) / 1e9


@dataclass
class SampleEstimate:
    seconds: float
    steps: int
    passes: int
    frames: int
    height: int
    width: int


def estimate_sample(params: int, layers: int, dim: int, steps: int, cfg: float, frames: int, height: int, width: int,
                    gflops: float) -> SampleEstimate:
    """Seconds for `steps` denoising steps (two passes per step when cfg != 1) at `gflops`."""
    passes = 2 if cfg != 1.0 else 1
    flops = steps * passes * wan_step_flops(params, layers, dim, wan_tokens(frames, height, width))
    return SampleEstimate(flops / (gflops * 1e9), steps, passes, frames, height, width)


def estimate_wan_sampling(transformer, steps: int, cfg: float, frames: int, height: int, width: int,
                          gflops: float | None = None) -> SampleEstimate:
    """:func:`estimate_sample` for a diffusers ``WanTransformer3DModel`` (sizes read from its config and blocks);
    ``gflops`` defaults to this CPU's measured speed."""
    config = getattr(transformer, "config", None)
    layers = len(getattr(transformer, "blocks", [])) or 1
    dim = int(getattr(config, "num_attention_heads", 1) * getattr(config, "attention_head_dim", 1)) if config else 1
    params = sum(p.numel() for p in transformer.parameters())
    return estimate_sample(params, layers, dim, steps, cfg, frames, height, width,
                           measure_gflops() if gflops is None else gflops)


def human_seconds(seconds: float) -> str:
    """42 s, 17 min, 1.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


_ADVICE_NAMES = {"steps": "steps", "frames": "frames", "size": "width/height", "views": "views",
                 "view_size": "view size", "max_views": "max_views", "anysplat_size": "size"}


def quick_advice(**settings: int) -> str:
    """What to lower for a quick try, naming only the settings above the quick try's values (vist3a.run_sizes):
    'lower steps to 10 and frames to 5', or that these already are the quick try's sizes."""
    lower = above_quick(**settings)
    if not lower:
        return "these are already the quick-try sizes"
    parts = [f"{_ADVICE_NAMES[name]} to {value}" for name, value in lower.items()]
    return "for a quick try lower " + (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1])


def describe(est: SampleEstimate) -> str:
    """The line printed before a long CPU run, with what to lower for a quick try (only what is above it)."""
    return (f"[VIST3A] Sample on the CPU: about {human_seconds(est.seconds)} ({est.steps} steps x {est.passes} passes, "
            f"{est.frames} frames at {est.width}x{est.height}); "
            f"{quick_advice(steps=est.steps, frames=est.frames, size=max(est.height, est.width))}.")


def progress_line(done: int, total: int, elapsed_s: float, unit: str = "step") -> str:
    """'step 3 of 50, 1 min so far, about 16 min left' (the rate so far, once one unit is done)."""
    line = f"{unit} {done} of {total}, {human_seconds(elapsed_s)} so far"
    if 0 < done < total:
        line += f", about {human_seconds(elapsed_s / done * (total - done))} left"
    return line


# --------------------------------------------------------------------------------------------- decoding
# The stitched decoder is AnySplat from DINO block `cut` on: frame-wise blocks (the remaining DINO blocks and
# the aggregator's frame-attention blocks) attend within each frame, the aggregator's global blocks across all
# frames; its linear work is about 2 * parameters * tokens. The DPT heads add work the formula leaves out, so the
# figure is a lower bound, good enough to tell seconds from hours.


@dataclass
class DecodeEstimate:
    seconds: float
    frames: int
    tokens_per_frame: int


def decoder_flops(params: int, dim: int, frame_blocks: int, global_blocks: int, frames: int, tokens_per_frame: int) -> float:
    """Floating-point operations of one decoder forward pass over `frames` frames."""
    tokens = frames * tokens_per_frame
    attention = 4.0 * dim * (frame_blocks * frames * float(tokens_per_frame) ** 2 + global_blocks * float(tokens) ** 2)
    return 2.0 * params * tokens + attention


def estimate_decode(params: int, dim: int, frame_blocks: int, global_blocks: int, frames: int, tokens_per_frame: int,
                    gflops: float) -> DecodeEstimate:
    flops = decoder_flops(params, dim, frame_blocks, global_blocks, frames, tokens_per_frame)
    return DecodeEstimate(flops / (gflops * 1e9), frames, tokens_per_frame)


def estimate_stitched_decode(decoder, latent_shape, gflops: float | None = None) -> DecodeEstimate:
    """:func:`estimate_decode` for a :class:`~vist3a.models.StitchedDecoder` on a raw Wan latent of ``latent_shape``
    [B, 16, T, h, w]: the latent is upsampled to every video frame, (T-1)*4+1, and the stitching conv's stride 2
    makes (h/2)(w/2) tokens per frame. ``gflops`` defaults to this CPU's measured speed."""
    cfg = decoder.encoder.cfg
    cut = int(decoder.cfg.cut_block)
    batch, _, t, h, w = latent_shape
    frames = (t - 1) * 4 + 1
    params = sum(p.numel() for p in decoder.parameters())
    return estimate_decode(params, cfg.embed_dim, cfg.dino_depth - cut + cfg.aa_depth, cfg.aa_depth, frames * batch,
                           (h // 2) * (w // 2), measure_gflops() if gflops is None else gflops)


def describe_decode(est: DecodeEstimate, frames: int, size: int) -> str:
    """The decode's line; ``frames`` and ``size`` are the sampled video's (what to lower is chosen there)."""
    advice = quick_advice(frames=frames, size=size)
    if advice.startswith("for a quick try lower "):
        advice = "for a quick try sample with " + advice[len("for a quick try lower "):]
    return (f"[VIST3A] Decode Splats on the CPU: at least {human_seconds(est.seconds)} ({est.frames} frames, "
            f"{est.tokens_per_frame} tokens each); {advice}.")


def estimate_anysplat(model, views: int, height: int, width: int, gflops: float | None = None) -> DecodeEstimate:
    """:func:`estimate_decode` for plain AnySplat (Images to Splats) on ``views`` images of ``height`` x ``width``:
    every DINO block runs on each view's (H/14)(W/14) patches, then the aggregator's frame and global blocks."""
    cfg = model.cfg
    params = sum(p.numel() for p in model.parameters())
    tokens = (height // cfg.patch_size) * (width // cfg.patch_size)
    return estimate_decode(params, cfg.embed_dim, cfg.dino_depth + cfg.aa_depth, cfg.aa_depth, views, tokens,
                           measure_gflops() if gflops is None else gflops)


def describe_anysplat(est: DecodeEstimate, views: int, size: int) -> str:
    return (f"[VIST3A] Images to Splats on the CPU: at least {human_seconds(est.seconds)} ({est.frames} views, "
            f"{est.tokens_per_frame} tokens each); {quick_advice(max_views=views, anysplat_size=size)}.")
