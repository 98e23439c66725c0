#!/usr/bin/env python
"""Per-GPU memory plan of align.py (and stitch.py) from the real parameter counts.

Builds Wan2.1-T2V (1.3B / 14B), the UMT5-XXL text encoder, the Wan VAE and the stitched AnySplat
decoder on the meta device (no weights, no memory), counts parameters, and prints the per-rank bytes
of parameters, gradients and optimizer state under ZeRO-2 and ZeRO-3 for a given number of GPUs,
plus the activation estimates documented in vist3a_train/README.md.

    python vist3a_train/memory_plan.py --model 14B --gpus 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

GB = 1e9
WAN = {
    "1.3B": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30),
    "14B": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40),
}
REWARD_PARAMS = 986_000_000  # each of PickScore_v1 and DFN5B-CLIP-ViT-H-14-378 (CLIP ViT-H/14, ~0.99 B)


def counts(size: str) -> dict:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from vist3a.models import AnySplat, AnySplatConfig, StitchConfig, StitchedDecoder
    from vist3a.wan.configs import UMT5_XXL_CONFIG, WAN_VAE_CONFIG
    from vist3a_train.common.lora import add_wan_lora, inject_lora, mark_stitch_trainable

    n = lambda m, trainable=False: sum(p.numel() for p in m.parameters() if p.requires_grad or not trainable)  # noqa: E731
    with torch.device("meta"):
        wan = WanTransformer3DModel(patch_size=[1, 2, 2], in_channels=16, out_channels=16, text_dim=4096, freq_dim=256,
                                    cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, **WAN[size])
        base = n(wan)
        lora = n(add_wan_lora(wan, 8, 16), trainable=True)
        te = n(UMT5EncoderModel(UMT5Config(**{k: v for k, v in UMT5_XXL_CONFIG.items() if not k.startswith("_")})))
        vae = n(AutoencoderKLWan(**{k: v for k, v in WAN_VAE_CONFIG.items() if not k.startswith("_")}))
        dec = StitchedDecoder(StitchConfig())
        dec_n = n(dec)
        inject_lora(dec, 64, 32)
        mark_stitch_trainable(dec)
        stitch_train = n(dec, trainable=True)
        teacher = n(AnySplat(AnySplatConfig()))
    return dict(wan=base, lora=lora, text_encoder=te, vae=vae, decoder=dec_n, stitch_trainable=stitch_train,
                teacher=teacher, blocks=WAN[size]["num_layers"],
                dim=WAN[size]["num_attention_heads"] * WAN[size]["attention_head_dim"], ffn=WAN[size]["ffn_dim"])


def plan(size: str, gpus: int, tokens: int = 4 * 32 * 32, grad_calls: int = 3) -> list[tuple[str, float, float]]:
    c = counts(size)
    rows = []
    add = lambda name, z2, z3: rows.append((name, z2 / GB, z3 / GB))  # noqa: E731
    add(f"Wan {size} base weights, bf16 ({c['wan']:,} params)", 2 * c["wan"], 2 * c["wan"] / gpus)
    live = 2 * c["wan"] / c["blocks"] * 2  # ~2 gathered blocks (current + prefetch) under ZeRO-3
    add("  ZeRO-3 gathered working set (~2 blocks)", 0, live)
    add(f"LoRA weights, bf16 ({c['lora']:,} params)", 2 * c["lora"], 2 * c["lora"] / gpus)
    add("LoRA gradients, bf16 (partitioned after reduce-scatter)", 2 * c["lora"] / gpus, 2 * c["lora"] / gpus)
    add("reduce buckets (reduce_bucket_size 2e8, bf16)", 0.4e9, 0.4e9)
    add("optimizer: fp32 master + Adam m, v (12 B/param, partitioned)", 12 * c["lora"] / gpus, 12 * c["lora"] / gpus)
    add("EMA of the LoRA, fp32, full on every rank", 4 * c["lora"], 4 * c["lora"])
    add(f"UMT5-XXL text encoder, bf16 ({c['text_encoder']:,}; 0 with text_encoder_device: cpu)",
        2 * c["text_encoder"], 2 * c["text_encoder"])
    add(f"Wan VAE, bf16 ({c['vae']:,})", 2 * c["vae"], 2 * c["vae"])
    add(f"stitched decoder, fp32 ({c['decoder']:,})", 4 * c["decoder"], 4 * c["decoder"])
    add("PickScore + DFN5B CLIP rewards, bf16 (2 x ~0.99 B)", 2 * 2 * REWARD_PARAMS, 2 * 2 * REWARD_PARAMS)
    per_call = c["blocks"] * 2 * tokens * c["dim"] * 2  # checkpointed block inputs, CFG batch 2, bf16
    add(f"act: transformer, flow matching ({tokens} tokens, block inputs)", per_call / 2, per_call / 2)
    add(f"act: transformer, {grad_calls} reward steps with grad (CFG x2)", grad_calls * per_call, grad_calls * per_call)
    add("act: VAE decode 13x512^2, bf16, per-frame checkpointed caches", 4.3e9, 4.3e9)
    add("act: stitched decoder 13x448^2, blocks+heads checkpointed", 6.0e9, 6.0e9)
    add("act: renders (13 views) + reward ViTs (checkpointed)", 4.0e9, 4.0e9)
    add("transient peak: largest recompute (VAE 4-frame chunk / fp32 heads)", 10e9, 10e9)
    add("CUDA context, NCCL, allocator slack", 4e9, 4e9)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(WAN), default="14B")
    ap.add_argument("--gpus", type=int, default=4)
    args = ap.parse_args(argv)
    rows = plan(args.model, args.gpus)
    print(f"| align.py, Wan {args.model}, {args.gpus} GPUs, per rank | ZeRO-2 GB | ZeRO-3 GB |")
    print("|---|---:|---:|")
    for name, z2, z3 in rows:
        print(f"| {name} | {z2:.2f} | {z3:.2f} |")
    print(f"| **total** | **{sum(r[1] for r in rows):.1f}** | **{sum(r[2] for r in rows):.1f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
