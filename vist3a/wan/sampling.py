"""Text -> Wan 2.1 latent, the way the official VIST3A inference does it, with a lean loop.

Numerically this is diffusers' ``WanPipeline`` with the official UniPC flow scheduler (same
prompt cleaning and padding, same initial noise for the same generator, same update), so results
match it; the differences are engineering: classifier-free guidance can run as one batched
transformer call, the loop reports progress and honours cancellation without host syncs, and the
output is the **raw** VAE latent (ComfyUI's ``LATENT`` convention), not the normalised one.

Host syncs: diffusers' UniPC ``step`` moves scalar sigmas to the device and solves a small linear
system there on every step, each a blocking device -> host round trip.  Every UniPC update is
linear in the sample, its own state and the model output with coefficients that depend only on the
schedule, so :func:`unipc_plan` computes those coefficients once in float64 (:mod:`.schedule`, on the
official diffusers-0.33.1 grid) and the ``sync_free`` loop applies them as plain tensor arithmetic: same
update, no syncs, agreement with the scheduler to ~1e-6 (fp32 rounding).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Optional, Sequence, Union

import torch

from ..block_hooks import block_checks
from ..errors import Cancelled, SamplingInputError
from ..finite import check_finite_values
from ..offload import execution_device
from ..sync import no_host_sync
from .configs import WAN_VAE_CONFIG
from .loading import WanModels
from .schedule import UniPCUpdate, make_official_scheduler, official_flow_schedule, unipc_updates
from .seeding import SEED_MODES, initial_noise
from .text_clean import clean_prompt

__all__ = [
    "Cancelled",
    "SamplingInputError",
    "make_scheduler",
    "check_video_shape",
    "latent_shape",
    "encode_prompt",
    "sample_latents",
    "unipc_plan",
    "decode_latents",
    "normalize_latents",
    "denormalize_latents",
    "vae_checks",
]

# Official inference defaults (inference_t23d.py / utils/argument.py).
DEFAULT_FRAMES = 13
DEFAULT_SIZE = 512
DEFAULT_STEPS = 50
DEFAULT_CFG = 7.5
DEFAULT_SHIFT = 5.0
MAX_SEQUENCE_LENGTH = 512




def make_scheduler(shift: float = DEFAULT_SHIFT):
    """The official scheduler: UniPC with flow-matching sigmas shifted by ``shift``, on the grid of
    diffusers 0.33.1 (the official pin) whatever diffusers is installed (see :mod:`.schedule`)."""
    return make_official_scheduler(shift)


def check_video_shape(num_frames: int, height: int, width: int, steps: Optional[int] = None) -> None:
    """Reject impossible settings up front, naming the value and the values that would work."""
    if int(num_frames) != num_frames or num_frames < 1 or (num_frames - 1) % 4:
        lower = max(1, (int(num_frames) - 1) // 4 * 4 + 1)
        raise SamplingInputError(
            f"frames={num_frames} is not possible: Wan needs 4k+1 frames (1, 5, 9, 13, 17, 21, ...), "
            f"e.g. {lower} or {lower + 4}; VIST3A was trained with 13"
        )
    for name, value in (("height", height), ("width", width)):
        if int(value) != value or value < 16 or value % 16:
            lower = max(16, int(value) // 16 * 16)
            raise SamplingInputError(
                f"{name}={value} is not possible: it must be a positive multiple of 16 (the VAE downsamples by 8 "
                f"and the transformer patches by 2), e.g. {lower} or {lower + 16}; VIST3A was trained at 512"
            )
    if steps is not None and (int(steps) != steps or steps < 1):
        raise SamplingInputError(f"steps={steps} is not possible: use at least 1 denoising step (official: 50)")


def latent_shape(batch: int, num_frames: int, height: int, width: int, channels: int = 16) -> tuple[int, ...]:
    """Shape of the Wan latent for a video: ``[B, 16, 1 + (F-1)//4, H/8, W/8]``."""
    return (batch, channels, 1 + (num_frames - 1) // 4, height // 8, width // 8)


def _latent_stats(vae_or_config) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = getattr(vae_or_config, "config", vae_or_config)
    get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k)
    mean = torch.tensor(get("latents_mean"), dtype=torch.float32).view(1, -1, 1, 1, 1)
    std = torch.tensor(get("latents_std"), dtype=torch.float32).view(1, -1, 1, 1, 1)
    return mean, std


def denormalize_latents(latents: torch.Tensor, vae_or_config) -> torch.Tensor:
    """Diffusion-space latent -> raw VAE latent: ``z * std + mean`` (the official un-normalisation)."""
    mean, std = _latent_stats(vae_or_config)
    return latents * std.to(latents.device, latents.dtype) + mean.to(latents.device, latents.dtype)


def normalize_latents(latents: torch.Tensor, vae_or_config) -> torch.Tensor:
    """Raw VAE latent -> diffusion-space latent: ``(z - mean) / std``."""
    mean, std = _latent_stats(vae_or_config)
    return (latents - mean.to(latents.device, latents.dtype)) / std.to(latents.device, latents.dtype)


@torch.no_grad()
def encode_prompt(models: WanModels, prompts: Union[str, Sequence[str]],
                  max_sequence_length: int = MAX_SEQUENCE_LENGTH, *, should_cancel: Optional[Callable[[], bool]] = None,
                  progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """UMT5 embeddings ``[B, max_sequence_length, 4096]`` exactly as ``WanPipeline`` computes them:
    cleaned text, padded to ``max_sequence_length``, positions after the prompt zeroed. ``should_cancel()`` is
    asked before every encoder layer (raising Cancelled); ``progress(done, total)`` counts the layers."""
    models.require("text_encoder", "tokenizer", purpose="Encoding a prompt")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    text_inputs = models.tokenizer(
        [clean_prompt(p) for p in prompts], padding="max_length", max_length=max_sequence_length,
        truncation=True, add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
    )
    text_encoder = models.text_encoder
    device = execution_device(text_encoder)
    ids, mask = text_inputs.input_ids.to(device), text_inputs.attention_mask.to(device)
    embedding = getattr(getattr(text_encoder, "encoder", None), "embed_tokens", None) or text_encoder.get_input_embeddings()
    with block_checks(text_encoder, should_cancel, progress, what="Text encoding"):
        if embedding.weight.device != device:
            # An offloaded text encoder keeps its (2 GB) token table on the CPU: look up there, ship the rows.
            embeds = embedding(text_inputs.input_ids.to(embedding.weight.device)).to(device)
            hidden = text_encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        else:
            hidden = text_encoder(ids, mask).last_hidden_state
    # Same as the pipeline's per-prompt truncate-and-zero-pad (right padding), without a host round trip.
    return torch.where(mask.unsqueeze(-1).bool(), hidden, torch.zeros((), dtype=hidden.dtype, device=device))


def _batch(embeds: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if embeds.ndim != 3:
        raise SamplingInputError(f"{name} must be [batch, tokens, channels], got shape {tuple(embeds.shape)}")
    if embeds.shape[0] == batch:
        return embeds
    if embeds.shape[0] == 1:
        return embeds.expand(batch, -1, -1)
    raise SamplingInputError(f"{name} has batch {embeds.shape[0]} but the prompt batch is {batch}")


@functools.lru_cache(maxsize=32)
def unipc_plan(steps: int, shift: float = DEFAULT_SHIFT) -> tuple[torch.Tensor, tuple[UniPCUpdate, ...]]:
    """Timesteps and per-step update coefficients of the official UniPC scheduler (see the module doc):
    the diffusers-0.33.1 grid and UniPC's coefficients on it, both computed by :mod:`.schedule`."""
    timesteps, sigmas = official_flow_schedule(int(steps), float(shift))
    return timesteps, unipc_updates(sigmas)


def _apply_update(update: UniPCUpdate, state: list, eps_terms: list[tuple[torch.Tensor, float]]) -> list:
    """New state from ``update``; the model output is sum(w * tensor) over ``eps_terms`` (CFG folded in),
    so guidance and the scheduler step are a few fused-by-nothing axpys in float32, no host reads."""
    n_state = len(state)
    new = []
    for terms in update:
        if terms is None:
            new.append(None)
            continue
        if len(terms) == 1 and terms[0][1] == 1.0 and terms[0][0] < n_state:
            new.append(state[terms[0][0]])  # a plain shift of the history
            continue
        expanded = []
        for j, c in terms:
            if j < n_state:
                if state[j] is None:
                    raise RuntimeError(f"UniPC plan reads state slot {j} before it is set")
                expanded.append((state[j], c))
            else:
                expanded.extend((t, c * w) for t, w in eps_terms)
        first, c0 = expanded[0]
        acc = (first if first.dtype == torch.float32 else first.float()) * c0
        for t, c in expanded[1:]:
            acc.add_(t, alpha=c)
        new.append(acc)
    return new


@torch.no_grad()
def sample_latents(
    models: WanModels,
    prompt_embeds: torch.Tensor,
    negative_embeds: Optional[torch.Tensor],
    *,
    num_frames: int = DEFAULT_FRAMES,
    height: int = DEFAULT_SIZE,
    width: int = DEFAULT_SIZE,
    steps: int = DEFAULT_STEPS,
    cfg: float = DEFAULT_CFG,
    shift: float = DEFAULT_SHIFT,
    seed: Optional[int],
    generator: Optional[torch.Generator] = None,
    seed_mode: str = "portable",
    prompt_index: int = 0,
    batched_cfg: bool = True,
    sync_free: bool = True,
    callback: Optional[Callable[[int, int], None]] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
    check_syncs: bool = False,
) -> torch.Tensor:
    """Denoise from noise to a **raw** Wan latent ``[B, 16, 1+(F-1)//4, H/8, W/8]`` (float32).

    ``prompt_embeds``/``negative_embeds`` come from :func:`encode_prompt`; guidance runs when
    ``cfg > 1`` and a negative is given, as in ``WanPipeline``.  The initial noise is
    ``randn_tensor(shape, generator)`` with ``generator = torch.Generator('cpu').manual_seed(seed)``
    unless one is passed, so ``WanPipeline(generator=torch.Generator('cpu').manual_seed(seed))``
    starts from the same noise on any device.  ``seed_mode='official'`` draws it instead as the official
    script does (global RNGs seeded with ``seed``, default 12413, noise of prompt ``prompt_index`` of the
    run drawn on the execution device; see :mod:`.seeding`).  ``batched_cfg`` runs cond+uncond as one transformer
    call.  ``sync_free`` applies the scheduler through :func:`unipc_plan` (no device -> host syncs in
    the loop; the guidance and update are computed in float32); ``sync_free=False`` calls diffusers'
    scheduler itself.  Each step first asks ``should_cancel()`` (raising :class:`Cancelled`) and
    finally calls ``callback(step, steps)``.  ``check_syncs`` runs the loop under
    :func:`vist3a.sync.no_host_sync` (raises :class:`vist3a.errors.HostSyncError` / a CUDA error on a sync).
    """
    models.require("transformer", purpose="Sampling a Wan latent")
    check_finite_values([("cfg", cfg), ("shift", shift)], where="Wan sampling")
    check_video_shape(num_frames, height, width, steps)
    if seed_mode not in SEED_MODES:
        raise SamplingInputError(f"seed_mode={seed_mode!r} is not known: use one of {', '.join(SEED_MODES)}")
    if seed_mode == "portable" and generator is None and seed is None:
        raise SamplingInputError("sample_latents needs a seed (or a torch.Generator)")
    transformer = models.transformer
    device = execution_device(transformer)
    dtype = transformer.dtype
    batch = prompt_embeds.shape[0]
    cond = _batch(prompt_embeds, batch, "prompt_embeds").to(device, dtype)
    guided = negative_embeds is not None and cfg > 1.0
    if guided:
        uncond = _batch(negative_embeds, batch, "negative_embeds").to(device, dtype)
        if uncond.shape[1:] != cond.shape[1:]:
            raise SamplingInputError(
                f"negative_embeds {tuple(uncond.shape)} and prompt_embeds {tuple(cond.shape)} differ in length or "
                f"width; encode both with the same max_sequence_length"
            )
        both = torch.cat([cond, uncond]) if batched_cfg else None

    if sync_free:
        timesteps_cpu, updates = unipc_plan(int(steps), float(shift))
        timesteps = timesteps_cpu.to(device)
        scheduler = None
    else:
        scheduler = make_scheduler(shift)
        scheduler.set_timesteps(int(steps), device=device)
        scheduler.set_begin_index(0)
        timesteps = scheduler.timesteps
    shape = latent_shape(batch, num_frames, height, width, transformer.config.in_channels)
    latents = initial_noise(seed_mode, shape, device, seed, prompt_index, generator)
    state = [latents] + [None] * (len(updates[0]) - 1) if sync_free else None

    with no_host_sync(device) if check_syncs else contextlib.nullcontext():
        latents = _denoise_loop(transformer, timesteps, latents, state, updates if sync_free else None, scheduler,
                                dtype, batch, guided, batched_cfg, cfg, cond, uncond if guided else None,
                                both if guided else None, callback, should_cancel)
    if models.vae is not None:
        return denormalize_latents(latents, models.vae)
    return denormalize_latents(latents, WAN_VAE_CONFIG)


def _denoise_loop(transformer, timesteps, latents, state, updates, scheduler, dtype, batch, guided, batched_cfg, cfg,
                  cond, uncond, both, callback, should_cancel):
    sync_free = updates is not None
    total = len(timesteps)
    for i in range(total):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"Wan sampling cancelled at step {i} of {total}")
        t = timesteps[i]
        x = latents.to(dtype)
        if guided and batched_cfg:
            out = transformer(hidden_states=torch.cat([x, x]), timestep=t.expand(2 * batch),
                              encoder_hidden_states=both, return_dict=False)[0]
            noise_cond, noise_uncond = out.chunk(2)
        else:
            noise_cond = transformer(hidden_states=x, timestep=t.expand(batch), encoder_hidden_states=cond,
                                     return_dict=False)[0]
            if guided:
                noise_uncond = transformer(hidden_states=x, timestep=t.expand(batch), encoder_hidden_states=uncond,
                                           return_dict=False)[0]
        if sync_free:
            eps_terms = [(noise_cond, float(cfg)), (noise_uncond, 1.0 - float(cfg))] if guided else [(noise_cond, 1.0)]
            state = _apply_update(updates[i], state, eps_terms)
            latents = state[0]
        else:
            noise = noise_uncond + cfg * (noise_cond - noise_uncond) if guided else noise_cond
            latents = scheduler.step(noise, t, latents, return_dict=False)[0]
        if callback is not None:
            callback(i + 1, total)
    return latents


@torch.no_grad()
def decode_latents(models: WanModels, raw_latents: torch.Tensor, *, tiled: Optional[bool] = None,
                   should_cancel: Optional[Callable[[], bool]] = None,
                   progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """Raw Wan latents -> RGB frames ``[B, 3, F, H, W]`` in [-1, 1] (float32).

    The VAE runs in its own dtype (float32 by default; the fast path stores it in bf16, which is what
    the official inference computes under its bf16 autocast).  ``tiled=True`` decodes in spatial
    tiles (diffusers' ``enable_tiling``: far less memory, seams blended); ``None`` keeps the VAE's
    current setting. ``should_cancel()`` is asked before every decoder stage (raising Cancelled);
    ``progress(done, total)`` counts the latent frames (the VAE decodes one at a time).
    """
    models.require("vae", purpose="Decoding Wan latents to frames")
    vae = models.vae
    if raw_latents.ndim != 5 or raw_latents.shape[1] != vae.config.z_dim:
        raise SamplingInputError(
            f"expected Wan latents [B, {vae.config.z_dim}, T, H/8, W/8], got shape {tuple(raw_latents.shape)}"
        )
    previous = getattr(vae, "use_tiling", False)
    if tiled is not None and hasattr(vae, "enable_tiling"):
        vae.enable_tiling() if tiled else vae.disable_tiling()
    try:
        dtype = next(vae.parameters()).dtype
        with vae_checks(vae, raw_latents.shape[2], should_cancel, progress):
            frames = vae.decode(raw_latents.to(execution_device(vae), dtype), return_dict=False)[0]
    finally:
        if tiled is not None and hasattr(vae, "enable_tiling"):
            vae.enable_tiling() if previous else vae.disable_tiling()
    return frames.float().clamp(-1.0, 1.0)


def vae_checks(vae, latent_frames: int, should_cancel=None, progress=None):
    """:func:`vist3a.block_hooks.block_checks` for a Wan VAE (diffusers' or ComfyUI's: both decode one latent
    frame per call of their ``decoder``): Cancel between decoder stages, progress in decoded latent frames."""
    decoder = getattr(vae, "decoder", None)
    if decoder is None:
        return block_checks(vae, should_cancel, progress, what="VAE decoding")
    return block_checks(decoder, should_cancel, progress, counted=[decoder], expected=int(latent_frames),
                        what="VAE decoding")
