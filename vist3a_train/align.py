#!/usr/bin/env python
"""Reward alignment of Wan 2.1 for 3D: a PEFT LoRA (r8/alpha16 on attn1/attn2 to_q, to_k, to_v,
to_out.0) trained with two terms per step.

1. Flow matching on captioned multi-view clips (DL3DV captions, or synthetic clips): the clip is
   encoded by the frozen VAE (posterior sample, normalised), ``z_s = (1 - s) z_0 + s eps`` with
   ``s ~ U(0, 1)``, and the transformer (timestep ``1000 s``) regresses ``eps - z_0`` (MSE).
2. A reward back-propagated through the end of sampling: for each prompt (camera-motion augmented)
   a video is sampled with UniPC (flow shift 3) and classifier-free guidance (scale drawn from
   [4, 6], empty negative prompt) from a random number of steps; all steps run without gradient
   except a few random ones and the last. The latent is decoded by the VAE, fed with the frames to
   the frozen stitched decoder, the resulting Gaussians are rendered from a random subset of the
   predicted cameras with the differentiable rasteriser, and the renders plus one decoded frame are
   scored against the prompt (PickScore + a CLIP model, weight 0.25 each; pluggable).

The sampling choices (step count, guided steps, guidance) are the same on every rank (ZeRO-3 needs
the same sequence of transformer calls everywhere). An EMA (0.99) of the LoRA is kept and exported
with the raw LoRA as the official PEFT folders ``OUTPUT/export/vist3a_lora_ema/`` and
``OUTPUT/export/vist3a_lora/``. The stitched decoder comes from ``models.decoder`` or stitch.py's
export in the same output folder.

    torchrun --standalone --nproc_per_node 2 vist3a_train/align.py \\
        --config vist3a_train/configs/tiny_cpu.yaml --output-dir runs/tiny
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from vist3a_train.common import distributed as D
from vist3a_train.common.config import ConfigError, resolve_path
from vist3a_train.common.data import BadSampleMonitor, StreamDataset, build_dataset, make_loader
from vist3a_train.common.ema import EMA
from vist3a_train.common.engine import LRSchedule, TrainEngine, autocast_context
from vist3a_train.common.export import LORA_EMA_EXPORT, LORA_EXPORT, export_wan_lora
from vist3a_train.common.lora import add_wan_lora, wan_adapter_config, wan_peft_state_dict
from vist3a_train.common.models import enable_block_checkpointing, load_decoder, load_wan_models
from vist3a_train.common.prompts import augment_camera_prompt, load_camera_templates
from vist3a_train.common.rewards import build_rewards
from vist3a_train.common.script import Context, resume, run_main
from vist3a_train.common.vae import decode_with_grad, encode_latents
from vist3a_train.common.zero_load import load_wan_transformer_zero3

EMA_FILE = "ema.safetensors"


def reward_context_frames(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Decoded frames [B, 3, F, H, W] -> the stitched decoder's context images [B, 3, F, *size].

    Deliberately ``align_corners=True``: the official reward (``calculate_reward`` in the release's
    utils/reward.py, lines 201-206) resizes the decoded video this way, and the alignment is trained
    against exactly that input. Inference (``vist3a.pipeline``, and the release's inference_t23d.py,
    lines 118-122) uses ``align_corners=False``; the two differ by under a pixel of shift (512 -> 448).
    """
    return F.interpolate(video, size=(video.shape[2], *size), mode="trilinear", align_corners=True)


def reward_frame(context: torch.Tensor, index: int) -> torch.Tensor:
    """The decoded frame the official reward scores: frame ``index`` of the resized context clip (448 px,
    utils/reward.py:243-250), not of the VAE's 512 px video. [B, 3, F, h, w] -> [B, 3, h, w]."""
    return context[:, :, index]


def reward_renders(g, c2w: torch.Tensor, intrinsics: torch.Tensor, size: int, rc) -> torch.Tensor:
    """The reward's renders [V, 3, size, size] in [-1, 1] of Gaussians ``g`` (decoder output) from predicted cameras
    (c2w, normalised intrinsics), from their covariances as the official reward does (utils/reward.py:225-237
    through DecoderSplattingCUDA), with the settings of ``align.reward.render_*`` (default the official decoder's)."""
    from vist3a.render import RenderSettings, denormalize_intrinsics, rasterize, world_to_camera

    settings = RenderSettings(near=float(rc.render_near), far=float(rc.render_far),
                              radius_clip=float(rc.render_radius_clip), background=float(rc.render_background))
    K = denormalize_intrinsics(intrinsics, size, size)
    rgb, _, _ = rasterize(g.means, None, None, g.opacities, g.harmonics, world_to_camera(c2w), K, size, size,
                          covars=g.covariances, **settings.kwargs())
    return rgb.clamp(0, 1).permute(0, 3, 1, 2) * 2 - 1


class Rollout:
    """Sampling with a few differentiable steps, then decode -> stitched decoder -> render -> reward."""

    def __init__(self, ctx: Context, engine: TrainEngine, wan, decoder, rewards, latent_shape, encode):
        self.ctx, self.engine, self.wan, self.decoder, self.rewards = ctx, engine, wan, decoder, rewards
        self.rc = ctx.cfg.align.reward
        self.latent_shape = latent_shape  # [16, T, h, w]
        self.encode = encode

        self.context_hw = decoder.cfg.context_size(tuple(latent_shape[2:]))
        self.render_size = int(self.rc.render_size or self.context_hw[0])
        self.voxelize = self.rc.voxelize
        self.autocast = autocast_context(ctx.device, ctx.bf16)
        self._negative = None
        self.camera_templates = None
        if self.rc.camera_prompts:
            path = resolve_path(ctx.cfg, self.rc.camera_prompts, must_exist=True, what="align.reward.camera_prompts")
            self.camera_templates = load_camera_templates(path)
            ctx.log.info(f"{len(self.camera_templates)} camera-prompt templates from {path}")
        else:
            ctx.log.info("align.reward.camera_prompts is not set: reward prompts are used without camera-motion templates")

    def plan(self, step: int) -> dict:
        """Choices shared by every rank (seeded by the step only)."""
        rnd = D.py_random(self.ctx.seed, "rollout-plan", step)
        lo, hi = (int(v) for v in self.rc.steps_range)
        full = int(self.rc.full_steps_every or 0)
        n = hi if full and step % full == 0 else rnd.randint(lo, hi)
        grad = set(rnd.sample(range(n), min(self.rc.grad_steps, n))) | {n - 1}
        g_lo, g_hi = (float(v) for v in self.rc.guidance_range)
        return {"steps": n, "grad_steps": sorted(grad), "guidance": rnd.uniform(g_lo, g_hi)}

    def __call__(self, step: int, prompt: str, position: int) -> tuple[torch.Tensor, dict]:
        from vist3a.wan.sampling import denormalize_latents, make_scheduler

        ctx, device = self.ctx, self.ctx.device
        plan = self.plan(step)
        rnd = D.py_random(ctx.seed, "rollout-prompt", position)
        text = (augment_camera_prompt(prompt, rnd, self.camera_templates, self.rc.camera_prompt_style)
                if self.camera_templates else prompt)
        if self._negative is None:
            self._negative = self.encode([str(self.rc.negative_prompt)])
        cond = torch.cat([self.encode([text]), self._negative])
        scheduler = make_scheduler(ctx.cfg.align.flow_shift)
        scheduler.set_timesteps(plan["steps"], device=device)
        latents = torch.randn([1, *self.latent_shape], generator=D.generator(ctx.seed, "rollout-noise", position)).to(device)
        for i, t in enumerate(scheduler.timesteps):
            x = torch.cat([latents, latents]).detach().to(self.wan.dtype)
            with torch.set_grad_enabled(i in plan["grad_steps"]), self.autocast():
                out = self.engine(hidden_states=x, timestep=t.expand(2), encoder_hidden_states=cond, return_dict=False)[0]
            c, u = out.float().chunk(2)
            noise = u + plan["guidance"] * (c - u)
            latents = scheduler.step(noise, t, latents.float(), return_dict=False)[0]
        raw = denormalize_latents(latents, self.wan.vae)
        vae = self.wan.vae
        with torch.set_grad_enabled(self.rc.decode_grad):
            video = decode_with_grad(vae, raw.to(vae.dtype), self.rc.vae_checkpointing).float()  # [1, 3, F, H, W]
        F_ = video.shape[2]
        context = reward_context_frames(video, self.context_hw)
        out = self.decoder.forward_with_latent(raw, context, voxelize_output=self.voxelize)
        g = out.gaussians[0]
        n_views = min(self.rc.render_views, F_)
        pick = torch.randperm(F_, generator=D.generator(ctx.seed, "rollout-views", position))[:n_views].to(device)
        renders = reward_renders(g, out.extrinsics[0][pick], out.intrinsics[0][pick], self.render_size, self.rc)
        loss_render, scores = self.rewards(renders, [prompt] * n_views)
        j = int(torch.randint(F_, (1,), generator=D.generator(ctx.seed, "rollout-frame", position)))
        loss_frame, frame_scores = self.rewards(reward_frame(context, j), [prompt])
        metrics = {f"reward/render_{k}": float(v) for k, v in scores.items()}
        metrics.update({f"reward/frame_{k}": float(v) for k, v in frame_scores.items()})
        metrics.update({"reward/steps": plan["steps"], "reward/guidance": plan["guidance"]})
        return loss_render + loss_frame, metrics


def zero3_streaming_plan(ctx: Context):
    """(path, DeepSpeed config) when the Wan transformer can be streamed into ZeRO-3 partitions: ZeRO-3,
    ``models.stream_zero3`` on, and a diffusers transformer folder or a safetensors file + config.json."""
    cfg = ctx.cfg
    if cfg.models.tiny or not cfg.models.stream_zero3 or cfg.run.engine != "deepspeed" or not cfg.models.wan:
        return None
    from vist3a_train.common.engine import load_deepspeed_config
    from vist3a_train.common.zero_load import zero3_source

    path = resolve_path(cfg, cfg.models.wan)
    if cfg.models.wan_vae or cfg.models.wan_text_encoder or zero3_source(path) is None:
        return None
    ds = load_deepspeed_config(ctx.deepspeed_config(), micro_batch=ctx.per_rank(cfg.align.batch_size),
                               grad_clip=cfg.align.grad_clip, bf16=ctx.bf16)
    if int(ds["zero_optimization"]["stage"]) != 3:
        return None
    return path, ds


def body(ctx: Context) -> None:
    cfg, ac = ctx.cfg, ctx.cfg.align
    device = ctx.device
    if (ac.num_views - 1) % 4:
        raise ConfigError(f"align.num_views {ac.num_views} must be 4k+1 (Wan clips)")
    dtype = torch.bfloat16 if ctx.bf16 else torch.float32
    if ac.vae_dtype not in ("fp32", "bf16") or ac.text_encoder_device not in ("auto", "cpu"):
        raise ConfigError("align.vae_dtype must be fp32 or bf16 and align.text_encoder_device auto or cpu")
    vae_dtype = torch.bfloat16 if ac.vae_dtype == "bf16" else torch.float32
    streamed = zero3_streaming_plan(ctx)
    if streamed is not None:  # each rank holds only its ZeRO-3 shard of the frozen transformer
        wan = load_wan_models(cfg, device, dtype=dtype, vae_dtype=vae_dtype, components=("vae", "text_encoder"))
        wan.transformer = load_wan_transformer_zero3(streamed[0], streamed[1], dtype)
        tc = wan.transformer.config
        from vist3a.wan.configs import wan_size_name

        wan.name = wan_size_name(tc.num_layers, tc.num_attention_heads * tc.attention_head_dim)
        ctx.log.info(f"Wan transformer streamed from {streamed[0]} into ZeRO-3 partitions")
    else:
        wan = load_wan_models(cfg, device, dtype=dtype, vae_dtype=vae_dtype)
    if ac.text_encoder_device == "cpu":
        wan.text_encoder.to("cpu")
    transformer = wan.transformer
    if cfg.run.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    with torch.random.fork_rng(devices=[]):  # the LoRA init must not depend on how the base was loaded
        torch.manual_seed(ctx.seed)
        peft_model = add_wan_lora(transformer, ac.lora_rank, ac.lora_alpha)
    for p in peft_model.parameters():  # the LoRA (ZeRO-3 partitions already sit on their device)
        if not hasattr(p, "ds_id"):
            p.data = p.data.to(device)
    for b in peft_model.buffers():
        b.data = b.data.to(device)
    peft_model.train()
    n_train = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    per_rank = ctx.per_rank(ac.batch_size)
    engine = TrainEngine(
        peft_model, kind=cfg.run.engine, lr=ac.lr, weight_decay=ac.weight_decay, betas=ac.betas,
        schedule=LRSchedule("constant", ac.warmup_steps, ac.schedule_steps), grad_clip=ac.grad_clip,
        micro_batch=per_rank, deepspeed_config=ctx.deepspeed_config(),
        bf16_params=ctx.bf16 and cfg.run.engine == "deepspeed",
    )
    step, folder, _ = resume(ctx, engine)
    ema = EMA(engine.full_trainable_state(), ac.ema_decay)
    if folder is not None:
        ema.load(folder / EMA_FILE)
    ctx.log.info(f"Wan {wan.name}: LoRA r{ac.lora_rank}/a{ac.lora_alpha}, {n_train / 1e6:.3f} M trainable parameters")

    reward_on = ac.reward.enabled
    decoder = rewards = None
    if reward_on:
        decoder = load_decoder(cfg, ctx.out_dir, device)
        if cfg.run.gradient_checkpointing:  # frozen, but the reward's gradient passes through it
            enable_block_checkpointing(decoder)
        if ctx.bf16:
            decoder.encoder.transformer_autocast = torch.bfloat16
        rewards = build_rewards(ac.reward.models, device, dtype)

    resolve = lambda p: resolve_path(cfg, p)  # noqa: E731
    clips = build_dataset("captioned", cfg.data.captioned, resolve=resolve, num_views=ac.num_views,
                          video_size=ac.video_size)
    prompts = build_dataset("prompts", cfg.data.prompts, resolve=resolve)
    world, rank, nw = ctx.dist.world_size, ctx.dist.rank, cfg.run.num_workers
    clip_loader = make_loader(StreamDataset(clips, seed=ctx.seed, name="align-clips"), global_batch=ac.batch_size,
                              rank=rank, world=world, start_step=step, num_workers=nw)
    rollouts_per_rank = ctx.per_rank(ac.reward.batch_size, "align.reward.batch_size")
    prompt_loader = make_loader(StreamDataset(prompts, seed=ctx.seed, name="align-prompts"), global_batch=ac.reward.batch_size,
                                rank=rank, world=world, start_step=step, num_workers=0)
    ctx.log.info(f"{len(clips)} captioned clips ({clips.describe()}), {len(prompts)} prompts, reward "
                 f"{'on' if reward_on else 'off'}, {per_rank} clip(s) + {rollouts_per_rank} rollout(s) per rank, steps {step} -> {ctx.max_steps}")

    bad_samples = BadSampleMonitor("data.captioned", cfg.run.max_bad_sample_share, cfg.run.bad_sample_min_count)
    max_len = ac.max_sequence_length
    cache: dict[str, torch.Tensor] = {}

    def encode(texts: list[str]) -> torch.Tensor:
        from vist3a.wan.sampling import encode_prompt

        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            if len(cache) > 512:
                cache.clear()
            cache.update(zip(missing, encode_prompt(wan, missing, max_sequence_length=max_len).to(device, dtype)))
        return torch.stack([cache[t] for t in texts])

    T = (ac.num_views - 1) // 4 + 1
    latent_shape = [wan.transformer.config.in_channels, T, ac.video_size // 8, ac.video_size // 8]
    rollout = Rollout(ctx, engine, wan, decoder, rewards, latent_shape, encode) if reward_on else None
    autocast = autocast_context(device, ctx.bf16)
    from vist3a.wan.sampling import normalize_latents

    bar = ctx.log.progress(ctx.max_steps, step)
    while step < ctx.max_steps:
        t0 = time.time()
        batch = next(clip_loader)
        data_stats = bad_samples.update(batch)
        positions = batch["position"].tolist()
        z0 = normalize_latents(encode_latents(wan.vae, batch["video"].to(device), positions, ctx.seed), wan.vae)
        eps = torch.stack([torch.randn(z0.shape[1:], generator=D.generator(ctx.seed, "fm-eps", p)) for p in positions]).to(device)
        sigma = torch.stack([torch.rand((), generator=D.generator(ctx.seed, "fm-sigma", p)) for p in positions]).to(device)
        s = sigma.view(-1, 1, 1, 1, 1)
        z_s = (1 - s) * z0 + s * eps
        with autocast():
            pred = engine(hidden_states=z_s.to(dtype), timestep=sigma * 1000, encoder_hidden_states=encode(batch["caption"]),
                          return_dict=False)[0]
        fm_loss = F.mse_loss(pred.float(), (eps - z0).float())
        total = ac.flow_matching_weight * fm_loss
        metrics = {}
        reward_loss = torch.zeros((), device=device)
        if reward_on and step % ac.reward.every == 0:
            pbatch = next(prompt_loader)
            for prompt, pos in zip(pbatch["prompt"], pbatch["position"].tolist()):
                loss_r, m = rollout(step, prompt, pos)
                reward_loss = reward_loss + loss_r / rollouts_per_rank
                for k, v in m.items():
                    metrics[k] = metrics.get(k, 0.0) + v / rollouts_per_rank
            total = total + reward_loss
        elif reward_on:
            next(prompt_loader)
        if step + 1 in cfg.run.inject_nonfinite_steps:
            total = total * float("nan")
        engine.backward(total)
        info = engine.step()
        if not info["skipped"]:  # as the official loop: no optimizer step, no EMA update
            ema.update(step, engine.full_trainable_state())
        else:
            ctx.log.info(f"step {step + 1}: non-finite gradient norm ({info['grad_norm']}), update skipped")
        step += 1
        bar.update(1)
        keys = ["loss", "loss/flow_matching", "loss/reward"] + sorted(metrics)
        values = torch.tensor([float(total.detach()), float(fm_loss.detach()), float(reward_loss.detach())] + [metrics[k] for k in sorted(metrics)],
                              dtype=torch.float64)
        values = D.all_reduce_(values) / ctx.dist.world_size
        if step % cfg.run.log_every == 0 or step == ctx.max_steps:
            ctx.log.log(step, {**dict(zip(keys, values.tolist())), "lr": info["lr"], "grad_norm": info["grad_norm"],
                               "skipped": float(info["skipped"]), **data_stats, "step_time_s": time.time() - t0})
        bar.set_postfix(loss=f"{float(values[0]):.4f}")
        if step % ctx.save_every == 0 or step == ctx.max_steps:
            def writers(tmp: Path) -> None:
                if ctx.dist.is_main:
                    ema.save(tmp / EMA_FILE)

            ctx.ckpt.save(step, engine=engine, state={"data_position": step * ac.batch_size}, writers=writers)
    bar.close()
    export(ctx, engine, ema, peft_model, wan, step)


def export(ctx: Context, engine: TrainEngine, ema: EMA, peft_model, wan, step: int) -> None:
    full = engine.full_trainable_state()  # collective
    if ctx.dist.is_main:
        ac = ctx.cfg.align
        cfg = wan.transformer.config
        config = wan_adapter_config(peft_model)
        arch = {"base": wan.name, "num_blocks": int(cfg.num_layers),
                "inner_dim": int(cfg.num_attention_heads * cfg.attention_head_dim),
                "lora_rank": ac.lora_rank, "lora_alpha": ac.lora_alpha}
        out = ctx.out_dir / "export"
        export_wan_lora(out / LORA_EMA_EXPORT, wan_peft_state_dict(ema.shadow), config, architecture=arch,
                        extra={"step": step, "ema_decay": ac.ema_decay})
        if ac.export_raw_lora:
            export_wan_lora(out / LORA_EXPORT, wan_peft_state_dict(full), config, architecture=arch, extra={"step": step})
        ctx.log.info(f"exported the Wan LoRA (EMA) to {out / LORA_EMA_EXPORT}")
    D.barrier()


def main(argv=None) -> int:
    return run_main("align", __doc__, body, argv)


if __name__ == "__main__":
    sys.exit(main())
