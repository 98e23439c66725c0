#!/usr/bin/env python
"""Stitched fine-tune: teach AnySplat, cut after block k and fed Wan latents through the stitching
conv, to reproduce the frozen AnySplat on the same frames.

The student is the stitched decoder (AnySplat weights after the cut, conv initialised from
find_layer.py's ridge solution). LoRA r64/alpha32 wraps every Linear/Conv2d of it; the LoRA
factors, the biases of the wrapped layers, the stitching conv and the DINO cls/register/mask tokens
train. Each step draws one view count from ``stitch.view_counts`` (official {9, 13, 17, 21}, the same
on every rank), encodes that many frames with the frozen Wan VAE (a posterior sample), and runs the
student on the latent with the frames as its RGB context and the teacher on the frames; the loss is
the official sum of L1 distillation terms (see ``vist3a_train/common/losses.py``). At the end the
decoder is exported to ``OUTPUT/export/stitched_decoder/`` as the official ``anysplat_stitched.pth``
plus merged ``model.safetensors`` and a manifest.

    torchrun --standalone --nproc_per_node 2 vist3a_train/stitch.py \\
        --config vist3a_train/configs/tiny_cpu.yaml --output-dir runs/tiny
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from vist3a_train.common import distributed as D
from vist3a_train.common.config import ConfigError, resolve_path
from vist3a_train.common.data import BadSampleMonitor, StreamDataset, build_dataset, make_loader
from vist3a_train.common.engine import LRSchedule, TrainEngine
from vist3a_train.common.export import STITCHED_EXPORT, export_stitched
from vist3a_train.common.find_layer_io import load_layer_search
from vist3a_train.common.lora import inject_lora, mark_stitch_trainable
from vist3a_train.common.losses import distillation_losses
from vist3a_train.common.models import (
    build_student,
    check_sizes,
    enable_block_checkpointing,
    load_teacher,
    load_wan_models,
)
from vist3a_train.common.script import Context, resume, run_main
from vist3a_train.common.vae import encode_latents

_FIELDS = ("depth", "depth_conf", "raw_gs", "extrinsics", "intrinsics", "pose_enc_list")
_GAUSSIAN_FIELDS = ("means", "covariances", "harmonics", "opacities", "scales", "rotations")


class Student(nn.Module):
    """``forward`` = the stitched decoder's ``forward_with_latent`` (engines call ``forward``).

    Returns plain dicts/lists of tensors (what ZeRO-3 can hook for the backward pass) rather than the
    SplatOutput dataclass; :func:`as_output` gives attribute access back.
    """

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, z, context_image):
        out = self.decoder.forward_with_latent(z, context_image, voxelize_output=False)
        d = {k: getattr(out, k) for k in _FIELDS}
        d["gaussians"] = [{k: getattr(g, k) for k in _GAUSSIAN_FIELDS} for g in out.gaussians]
        return d


def as_output(d: dict) -> SimpleNamespace:
    ns = SimpleNamespace(**{k: d[k] for k in _FIELDS})
    ns.gaussians = [SimpleNamespace(**g) for g in d["gaussians"]]
    return ns


def body(ctx: Context) -> None:
    cfg, sc = ctx.cfg, ctx.cfg.stitch
    device = ctx.device
    teacher = load_teacher(cfg, device)
    vae = load_wan_models(cfg, device, dtype=torch.float32, components=("vae",)).vae
    cut, conv_init, source = load_layer_search(cfg, ctx.out_dir, sc.cut)
    student = build_student(teacher, cut, conv_init)
    names = inject_lora(student, sc.lora_rank, sc.lora_alpha, seed=ctx.seed)
    trainable = mark_stitch_trainable(student)
    if cfg.run.gradient_checkpointing:
        enable_block_checkpointing(student)
    if ctx.bf16:  # the official mixed precision: bf16 transformer under autocast, fp32 heads
        student.encoder.transformer_autocast = torch.bfloat16
        teacher.encoder.transformer_autocast = torch.bfloat16
    model = Student(student.to(device)).train()
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ctx.log.info(f"cut after DINO block {cut} ({source}); LoRA r{sc.lora_rank}/a{sc.lora_alpha} on {len(names)} layers; "
                 f"{len(trainable)} trainable tensors, {n_train / 1e6:.2f} M parameters")

    view_counts = [int(v) for v in sc.view_counts]
    if any((v - 1) % 4 for v in view_counts) or not view_counts:
        raise ConfigError(f"stitch.view_counts {view_counts}: each must be 4k+1 (Wan clips), e.g. [9, 13, 17, 21]")
    dataset = build_dataset("multiview", cfg.data.multiview, resolve=lambda p: resolve_path(cfg, p),
                            num_views=max(view_counts), window=sc.window, color_jitter=sc.color_jitter)
    first = dataset.parts[0] if hasattr(dataset, "parts") else dataset
    check_sizes(teacher, first.video_size, first.context_size)
    if first.num_views < max(view_counts):
        raise ConfigError(f"data.multiview.num_views {first.num_views} < the largest stitch.view_counts {max(view_counts)}")

    per_rank = ctx.per_rank(sc.batch_size)
    engine = TrainEngine(
        model, kind=cfg.run.engine, lr=sc.lr, weight_decay=sc.weight_decay, betas=sc.betas,
        schedule=LRSchedule("cosine", sc.warmup_steps, sc.schedule_steps), grad_clip=sc.grad_clip,
        micro_batch=per_rank, deepspeed_config=ctx.deepspeed_config(), bf16_params=False,
        # forward_tokens reads the DINO encoder's own tokens/pos_embed outside its forward()
        external_params=list(student.encoder.aggregator.patch_embed.parameters(recurse=False)),
    )
    step, _, _ = resume(ctx, engine)
    stream = StreamDataset(dataset, seed=ctx.seed, name="stitch")
    loader = make_loader(stream, global_batch=sc.batch_size, rank=ctx.dist.rank, world=ctx.dist.world_size,
                         start_step=step, num_workers=cfg.run.num_workers)
    ctx.log.info(f"{len(dataset)} clips ({dataset.describe()}), view counts {view_counts}, {per_rank} clip(s) per rank, "
                 f"steps {step} -> {ctx.max_steps}")
    raw_dim = teacher.cfg.raw_gs_dim
    bad_samples = BadSampleMonitor("data.multiview", cfg.run.max_bad_sample_share, cfg.run.bad_sample_min_count)
    bar = ctx.log.progress(ctx.max_steps, step)
    while step < ctx.max_steps:
        t = time.time()
        views = view_counts[D.py_random(ctx.seed, "views", step).randrange(len(view_counts))]
        batch = next(loader)
        data_stats = bad_samples.update(batch)
        video = batch["video"][:, :, :views].to(device)
        context = batch["context"][:, :, :views].to(device)
        z = encode_latents(vae, video, batch["position"].tolist(), ctx.seed)
        with torch.no_grad():
            target = teacher(((context + 1) / 2).permute(0, 2, 1, 3, 4), voxelize_output=False)
        out = as_output(engine(z, context))
        losses = distillation_losses(out, target, sc.loss_weights, raw_dim)
        loss = losses["loss"]
        if step + 1 in cfg.run.inject_nonfinite_steps:
            loss = loss * float("nan")
        engine.backward(loss)
        info = engine.step()
        step += 1
        bar.update(1)
        names_ = sorted(losses)
        mean = D.all_reduce_(torch.stack([losses[k].detach().float() for k in names_])) / ctx.dist.world_size
        if step % cfg.run.log_every == 0 or step == ctx.max_steps:
            ctx.log.log(step, {**dict(zip(names_, mean.tolist())), "lr": info["lr"], "grad_norm": info["grad_norm"],
                               "skipped": float(info["skipped"]), **data_stats, "views": views,
                               "step_time_s": time.time() - t})
        if info["skipped"]:
            ctx.log.info(f"step {step}: non-finite gradient norm ({info['grad_norm']}), update skipped")
        bar.set_postfix(loss=f"{float(mean[names_.index('loss')]):.4f}")
        if step % ctx.save_every == 0 or step == ctx.max_steps:
            ctx.ckpt.save(step, engine=engine, state={"data_position": step * sc.batch_size})
    bar.close()
    export(ctx, engine, teacher, cut, step)


def export(ctx: Context, engine: TrainEngine, teacher, cut: int, step: int) -> None:
    from vist3a import weights as wt
    from vist3a.models import StitchConfig

    full = engine.full_trainable_state()  # collective
    if ctx.dist.is_main:
        sc = ctx.cfg.stitch
        trained = {k[len("decoder."):]: v.cpu() for k, v in full.items()}
        base = wt.stitched_from_anysplat({k: v.detach().float().cpu() for k, v in teacher.state_dict().items()}, cut)
        folder = ctx.out_dir / "export" / STITCHED_EXPORT
        export_stitched(folder, base_state=base, trained=trained, cfg=StitchConfig(cut_block=cut, anysplat=teacher.cfg),
                        lora_rank=sc.lora_rank, lora_alpha=sc.lora_alpha, extra={"step": step})
        ctx.log.info(f"exported the stitched decoder to {folder}")
        if sc.export_anysplat_base:
            from vist3a.decoders import save_anysplat_export
            from vist3a_train.common.export import atomic_folder

            with atomic_folder(ctx.out_dir / "export" / "anysplat_base") as tmp:
                save_anysplat_export(teacher, tmp, created_by="vist3a_train/stitch.py")
    D.barrier()


def main(argv=None) -> int:
    return run_main("stitch", __doc__, body, argv)


if __name__ == "__main__":
    sys.exit(main())
