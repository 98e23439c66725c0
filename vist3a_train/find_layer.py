#!/usr/bin/env python
"""Layer search: which AnySplat DINO block can a Conv3d on Wan latents imitate best?

Multi-view clips go through the frozen Wan VAE encoder (raw latents, a posterior sample as in the
official search) and, at the context resolution, through the frozen AnySplat DINO encoder; both are
rounded to fp16, as the official search stores them. For each candidate cut k (the tokens after k blocks,
i.e. the input of block k; default every block) the Conv3d stitching layer (16 -> embed dim, k(5,3,3),
s(1,2,2), p(2,1,1)) on the temporally upsampled latent is fitted by streaming ridge regression: float64
X^T X / X^T Y summed over the data and over ranks (all-reduce), ridge 1e-4. As officially, the fit pads
the latent with zeros and the MSE per layer runs the fitted conv with its replicate padding on the fp16
upsampled latent (see common/ridge.py). Writes ``OUTPUT/layer_search.json``
(``mse_per_layer``, ``chosen_layer`` = lowest MSE, ``chosen_cut``) and the solved conv weights
(``stitching_layer.safetensors`` for the chosen layer, ``stitching_layers.safetensors`` for all),
which stitch.py uses to initialise the stitched decoder. (As in the official search the target is
the block's output tokens; the stitched model adds DINO's position embedding to the conv output
once more, which the stitched fine-tune absorbs.)

    torchrun --standalone --nproc_per_node 2 vist3a_train/find_layer.py \\
        --config vist3a_train/configs/tiny_cpu.yaml --output-dir runs/tiny
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from vist3a_train.common import distributed as D
from vist3a_train.common.config import ConfigError, resolve_path
from vist3a_train.common.data import BadSampleMonitor, StreamDataset, build_dataset, make_loader
from vist3a_train.common.models import check_sizes, load_teacher, load_wan_models
from vist3a_train.common.ridge import RidgeStats, solve_ridge, unfold_conv3d, upsample_latent
from vist3a_train.common.script import Context, resume, run_main
from vist3a_train.common.vae import encode_latents

STATS_FILE = "ridge_stats.safetensors"


class _Stop(Exception):
    pass


def candidate_cuts(spec, depth: int) -> list[int]:
    if spec == "all":
        return list(range(1, depth + 1))
    cuts = [int(c) for c in (spec if isinstance(spec, (list, tuple)) else [spec])]
    bad = [c for c in cuts if not 1 <= c <= depth]
    if bad or not cuts:
        raise ConfigError(f"find_layer.candidate_layers {spec!r}: cuts must be in 1..{depth} (the DINO blocks)")
    return sorted(set(cuts))


def layer_name(cut: int) -> str:
    return f"enc_blocks_{cut}"


@torch.no_grad()
def dino_tokens(teacher, context: torch.Tensor, cuts: list[int], bf16: bool) -> dict[int, torch.Tensor]:
    """context [B, 3, V, H, W] in [-1, 1] -> {cut: patch tokens after `cut` blocks [B, V, P, C]} (float32)."""
    agg = teacher.encoder.aggregator
    B, _, V = context.shape[:3]
    images01 = ((context + 1) / 2).permute(0, 2, 1, 3, 4)
    x = agg.normalize_images(images01.bfloat16().float()).flatten(0, 1)  # the same input as AnySplat.forward
    skip = 1 + teacher.cfg.num_register_tokens
    captured: dict[int, torch.Tensor] = {}
    last = max(cuts)

    def hook_for(cut):
        def hook(module, inputs, output):
            captured[cut] = output[:, skip:].float().reshape(B, V, -1, output.shape[-1])
            if cut == last:
                raise _Stop

        return hook

    handles = [agg.patch_embed.blocks[c - 1].register_forward_hook(hook_for(c)) for c in cuts]
    try:
        with torch.autocast(context.device.type, dtype=torch.bfloat16, enabled=bf16 and context.device.type == "cuda"):
            agg.patch_embed.forward_images(x)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return captured


def design_rows(latents: torch.Tensor, sc) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit rows, MSE rows) of raw latents [B, 16, T, h, w], as the official search builds them: the latents
    rounded to fp16 (how it stores them), upsampled in float64 and unfolded with zero padding for the fit
    (find_layer_for_stitching.py:87-106); upsampled from fp16 and rounded to fp16 for its MSE pass, which
    runs the conv with replicate padding (:328-353)."""
    z16 = latents.half()
    fit = unfold_conv3d(upsample_latent(z16.double(), sc.temporal_upsample), sc.kernel, sc.stride, sc.padding, "zeros")
    up16 = upsample_latent(z16.float(), sc.temporal_upsample).half().double()
    return fit, unfold_conv3d(up16, sc.kernel, sc.stride, sc.padding, "replicate")


def body(ctx: Context) -> None:
    cfg, fl = ctx.cfg, ctx.cfg.find_layer
    device = ctx.device
    teacher = load_teacher(cfg, device)
    vae = load_wan_models(cfg, device, dtype=torch.float32, components=("vae",)).vae
    cuts = candidate_cuts(fl.candidate_layers, len(teacher.encoder.aggregator.patch_embed.blocks))
    layers = [layer_name(c) for c in cuts]
    from vist3a.models import StitchConfig

    sc = StitchConfig(anysplat=teacher.cfg)
    d = sc.latent_channels * sc.kernel[0] * sc.kernel[1] * sc.kernel[2]
    stats = RidgeStats(d, teacher.cfg.embed_dim, layers, device=device, separate_eval=True)

    dataset = build_dataset("multiview", cfg.data.multiview, resolve=lambda p: resolve_path(cfg, p), num_views=fl.num_views,
                            window=fl.window)
    first = dataset.parts[0] if hasattr(dataset, "parts") else dataset
    check_sizes(teacher, first.video_size, first.context_size)
    step, folder, _ = resume(ctx)
    if folder is not None and ctx.dist.is_main:
        from safetensors.torch import load_file

        stats.load_tensors(load_file(str(folder / STATS_FILE)))  # global sums live on rank 0 only
    stream = StreamDataset(dataset, seed=ctx.seed, name="find_layer")
    per_rank = ctx.per_rank(fl.batch_size)
    loader = make_loader(stream, global_batch=fl.batch_size, rank=ctx.dist.rank, world=ctx.dist.world_size,
                         start_step=step, num_workers=cfg.run.num_workers)
    ctx.log.info(f"{len(dataset)} clips ({dataset.describe()}), candidate layers {', '.join(layers)}, "
                 f"{per_rank} clip(s) per rank per step, steps {step} -> {ctx.max_steps}")

    def save(at_step: int) -> None:
        total = stats.all_reduced()

        def writers(tmp: Path) -> None:
            if ctx.dist.is_main:
                from vist3a.weights import save_safetensors_atomic

                save_safetensors_atomic({k: v.cpu() for k, v in total.tensors().items()}, tmp / STATS_FILE)

        ctx.ckpt.save(at_step, state={"data_position": at_step * fl.batch_size}, writers=writers)
        # what is now on disk is the global sum: keep it on rank 0 and restart the others from zero
        for (_, mine), (_, tot) in zip(stats.tensors().items(), total.tensors().items()):
            mine.copy_(tot if ctx.dist.is_main else torch.zeros_like(tot))

    bad_samples = BadSampleMonitor("data.multiview", cfg.run.max_bad_sample_share, cfg.run.bad_sample_min_count)
    bar = ctx.log.progress(ctx.max_steps, step)
    while step < ctx.max_steps:
        t = time.time()
        batch = next(loader)
        data_stats = bad_samples.update(batch)
        video = batch["video"].to(device)
        context = batch["context"].to(device)
        latents = encode_latents(vae, video, batch["position"].tolist(), ctx.seed)
        X, X_eval = design_rows(latents, sc)
        tokens = {c: t.half().double() for c, t in dino_tokens(teacher, context, cuts, ctx.bf16).items()}  # stored fp16
        if tokens[cuts[0]].shape[2] * tokens[cuts[0]].shape[1] * tokens[cuts[0]].shape[0] != X.shape[0]:
            raise ConfigError(f"latent grid {list(upsample_latent(latents, sc.temporal_upsample).shape[2:])} (stride {sc.stride}) does not match AnySplat's token grid "
                              f"({tokens[cuts[0]].shape[1]} views x {tokens[cuts[0]].shape[2]} tokens); check the sizes")
        stats.add(X, {layer_name(c): tokens[c].reshape(-1, tokens[c].shape[-1]) for c in cuts}, X_eval)
        step += 1
        bar.update(1)
        if step % cfg.run.log_every == 0:
            ctx.log.log(step, {"rows_per_rank": float(stats.n), **data_stats, "step_time_s": time.time() - t})
        if step % ctx.save_every == 0 or step == ctx.max_steps:
            save(step)
    bar.close()
    if step == 0:
        raise ConfigError("find_layer needs at least one step of data (--max-steps >= 1)")
    write_result(ctx, stats.all_reduced(), sc, cuts, step)  # rank 0 holds the saved sum, the others zeros


def write_result(ctx: Context, total: RidgeStats, sc, cuts: list[int], step: int) -> None:
    D.barrier()
    if not ctx.dist.is_main:
        return
    from vist3a.atomic import atomic_write
    from vist3a.weights import save_safetensors_atomic

    ridge = ctx.cfg.find_layer.ridge
    C = total.XtY[layer_name(cuts[0])].shape[1]
    mse, weights = {}, {}
    for c in cuts:
        W, b, err = solve_ridge(total, layer_name(c), ridge)
        mse[layer_name(c)] = err
        weights[layer_name(c)] = {"weight": W.T.reshape(C, sc.latent_channels, *sc.kernel).float().cpu().contiguous(),
                                  "bias": b.float().cpu().contiguous()}
    chosen = min(mse, key=mse.get)
    out = ctx.out_dir
    save_safetensors_atomic(weights[chosen], out / "stitching_layer.safetensors", metadata={"layer": chosen})
    files = {"chosen_weights": "stitching_layer.safetensors"}
    if ctx.cfg.find_layer.keep_all_layer_weights:
        save_safetensors_atomic({f"{k}.{p}": v for k, w in weights.items() for p, v in w.items()},
                                out / "stitching_layers.safetensors")
        files["all_weights"] = "stitching_layers.safetensors"
    result = {
        "mse_per_layer": mse,
        "chosen_layer": chosen,
        "chosen_cut": int(chosen.rsplit("_", 1)[1]),
        "ridge": ridge,
        "num_rows": int(total.n),
        "steps": step,
        "conv": {"in_channels": sc.latent_channels, "out_channels": C, "kernel": list(sc.kernel),
                 "stride": list(sc.stride), "padding": list(sc.padding), "padding_mode": "replicate",
                 "fit_padding_mode": "zeros",
                 "temporal_upsample": sc.temporal_upsample},
        "files": files,
    }
    with atomic_write(out / "layer_search.json", "w") as f:
        json.dump(result, f, indent=2)
    if ctx.log.tb is not None:
        for k, v in mse.items():
            ctx.log.tb.add_scalar("find_layer/mse_per_layer", v, int(k.rsplit("_", 1)[1]))
    ctx.log.info("MSE per layer: " + ", ".join(f"{k} {v:.5g}" for k, v in mse.items()))
    ctx.log.info(f"chosen layer {chosen} (MSE {mse[chosen]:.5g}); wrote {out / 'layer_search.json'}")


def main(argv=None) -> int:
    return run_main("find_layer", __doc__, body, argv)


if __name__ == "__main__":
    sys.exit(main())
