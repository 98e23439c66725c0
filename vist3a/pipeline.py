"""Text -> Wan latent -> Gaussians (+ cameras, depth): `VIST3APipeline`, used by the CLI, `make demo` and bench.

Models are loaded once into a `VIST3APipeline` and reused across calls. The per-piece functions that
callers mix with other sources (the ComfyUI nodes, training eval) are in `vist3a.functional`; where
the weights live during each stage is planned by `vist3a.placement` on top of `vist3a.offload`.

Speed and memory (`VIST3APipeline.optimize`, applied by `load`): bf16 weights where the official
inference computes in bf16 anyway (transformer, text encoder, VAE, the decoder's transformer) with
fp32 kept where parity needs it (the transformer's norms/modulation, the decoder's heads); the
VIST3A LoRA merged into the weights; cuDNN attention; batched CFG and a denoising loop without
host syncs; optional `torch.compile`; and weight offloading so the 14B model fits a 24 GB GPU:

    offload="none"          everything stays on the GPU
    offload="text_encoder"  UMT5 (11 GB) streams block by block from pinned CPU memory when encoding
    offload="model"         ... and the transformer, VAE and decoder are on the GPU only for their stage
    offload="sequential"    ... and the transformer itself streams the blocks that do not fit (block swap)
    offload="auto"          CPU: none; GPU: the lightest mode that fits `memory_cap_gib` (or the GPU)
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import decoders
from . import tiny as tiny_models
from .errors import Cancelled
from .finite import check_finite, check_finite_fields
from .functional import CancelFn, ProgressFn, Scene, splats_from_latent
from .models import AnySplat, StitchedDecoder
from .offload import GIB, resolve_offload
from .placement import STAGE_COMPONENT, Placement, component_bytes
from .sync import synchronize
from .wan import (
    NEGATIVE_PROMPT,
    apply_vist3a_lora,
    build_prompt,
    decode_latents,
    encode_prompt,
    load_wan,
    sample_latents,
)
from .wan.lora import applied_loras, set_lora_strength
from .wan.state_dicts import cast_module
from .wan.tiny import build_tiny_wan


@dataclass
class GenerateSettings:
    frames: int = 13
    height: int = 512
    width: int = 512
    steps: int = 50
    cfg: float = 7.5
    shift: float = 5.0
    seed: int = 0
    seed_mode: str = "portable"  # or "official": noise as inference_t23d.py draws it (vist3a.wan.seeding)
    prompt_index: int = 0  # official mode: position of the prompt in the official run's prompt list
    camera_template: bool = True
    negative_prompt: Optional[str] = None  # None -> the official negative prompt
    voxelize: Optional[bool] = None  # None -> the decoder config (the release voxelises)
    min_opacity: float = 0.0
    # None -> the pipeline's setting (`load(fast=...)`). True: one text-encoder call for both prompts,
    # cond + uncond as one batched transformer call, the sync-free UniPC loop. False: the reference
    # (two calls per step and diffusers' scheduler, as WanPipeline runs them).
    fast: Optional[bool] = None

    def __post_init__(self) -> None:
        check_finite_fields(self, where="GenerateSettings")


PRECISIONS = ("auto", "bf16", "fp32")
DEFAULT_RESERVE_GIB = 6.0  # activations + workspace of the official 13 x 512^2 run, kept free when planning offload
TILED_VAE_BELOW_GIB = 16.0  # with less memory than this the VAE decodes in tiles


@dataclass
class PerfPlan:
    """What `VIST3APipeline.optimize` resolved; the benchmarks record it next to their figures."""

    fast: bool
    precision: str  # "bf16" | "fp32"
    offload: str  # "none" | "text_encoder" | "model" | "sequential"
    compile: bool | str
    attention: Optional[str]  # diffusers attention backend of the Wan transformer (None: diffusers' default SDPA)
    vae_tiling: bool
    lora_merged: bool
    streamed_blocks: int = 0  # transformer blocks streamed per forward ("sequential")
    memory_cap_gib: Optional[float] = None
    sizes_gib: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        # bf16 on a GPU. On a CPU fp32: most CPUs emulate bf16 slowly; pass "bf16" on AMX/AVX512-BF16 ones.
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def _cudnn_attention_works(device: torch.device) -> bool:
    try:
        q = torch.randn(1, 2, 128, 128, device=device, dtype=torch.bfloat16)
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            F.scaled_dot_product_attention(q, q, q)
        torch.cuda.synchronize(device)
        return True
    except Exception:  # noqa: BLE001 - any failure means: do not use it
        return False


class VIST3APipeline:
    """Wan 2.1 (+ VIST3A LoRA) and the stitched decoder, loaded once; `generate` runs text -> Scene.

    After `generate`, `last_timings` holds seconds per stage ("text", "denoise", "vae", "splats");
    set `sync_timings = True` to make them device times on a GPU (a sync at each stage boundary only).
    """

    def __init__(self, wan, decoder: StitchedDecoder, anysplat: AnySplat | None = None, *, device="cpu", described: dict | None = None):
        self.wan = wan
        self.decoder = decoder
        self.anysplat = anysplat
        self.device = torch.device(device)
        self.described = described or {}
        self.plan: PerfPlan | None = None
        self.last_timings: dict[str, float] = {}
        self.sync_timings = False
        self.placement = Placement()  # offloaders and block streamers of the current plan
        self._compiled: list = []  # (module, original forward)

    # ---------------------------------------------------------------------------------- building
    @classmethod
    def load(
        cls,
        *,
        wan: str | Path | None = None,
        vae: str | Path | None = None,
        text_encoder: str | Path | None = None,
        tokenizer: str | Path | None = None,
        lora: str | Path | None = None,
        lora_strength: float = 1.0,
        decoder: str | Path | None = None,
        anysplat: str | Path | None = None,
        tiny: bool = False,
        device: str | torch.device | None = None,
        seed: int = 0,
        fast: bool = True,
        precision: str = "auto",
        compile: bool | str = False,
        offload: str = "auto",
        memory_cap_gib: float | None = None,
        attention: str = "auto",
    ) -> "VIST3APipeline":
        """Load what is given by path; with `tiny=True` build tiny random models for whatever is not.

        `fast`, `precision`, `compile`, `offload`, `memory_cap_gib`, `attention`: see `optimize`. With
        offloading possible the weights are read into CPU memory first and placed by `optimize`.
        """
        check_finite(lora_strength, "lora_strength")
        if memory_cap_gib is not None:
            check_finite(memory_cap_gib, "memory_cap_gib")
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        on_gpu = device.type == "cuda"
        prec = resolve_precision(precision, device)
        wdtype = torch.bfloat16 if prec == "bf16" else torch.float32
        vae_dtype = torch.bfloat16 if (fast and prec == "bf16") else torch.float32
        stage = device if (not on_gpu or offload == "none") else torch.device("cpu")
        described = {}
        if wan is not None:
            wan_models = load_wan(wan, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                  dtype=wdtype, vae_dtype=vae_dtype, device=stage)
            described["wan"] = str(wan)
        elif tiny:
            wan_models = build_tiny_wan(seed=seed, device=stage)
            described["wan"] = "tiny random Wan"
        else:
            raise ValueError("no Wan model given: pass --wan PATH (diffusers folder or ComfyUI file) or --tiny")
        if lora is not None:
            apply_vist3a_lora(wan_models.transformer, lora, strength=lora_strength)
            described["lora"] = f"{lora} (strength {lora_strength:g})"
        if decoder is not None:
            dec = decoders.load_stitched_decoder(decoder, anysplat, device=stage)
            described["decoder"] = str(decoder)
        elif tiny:
            dec = tiny_models.build_tiny_decoder(seed=seed).to(stage)
            described["decoder"] = "tiny random stitched decoder"
        else:
            raise ValueError("no stitched decoder given: pass --decoder PATH (anysplat_stitched.pth or an export) or --tiny")
        if anysplat is not None:
            described["anysplat"] = str(anysplat)
        pipe = cls(wan_models, dec, device=device, described=described)
        pipe.optimize(fast=fast, precision=prec, compile=compile, offload=offload, memory_cap_gib=memory_cap_gib,
                      attention=attention)
        return pipe

    # ---------------------------------------------------------------------------------- speed / memory
    def optimize(
        self,
        *,
        fast: bool = True,
        precision: str = "auto",
        compile: bool | str = False,
        offload: str = "auto",
        memory_cap_gib: float | None = None,
        attention: str = "auto",
        vae_tiling: bool | None = None,
        reserve_gib: float = DEFAULT_RESERVE_GIB,
    ) -> PerfPlan:
        """Set precision, LoRA merging, attention, placement and compilation; returns (and keeps) the plan.

        - `precision`: "bf16" stores the transformer (its norms, time embedder and modulation tables stay
          fp32, as diffusers keeps them), the text encoder and, with `fast`, the VAE in bf16, and runs the
          decoder like the official inference (bf16 transformer, fp32 heads); "fp32" everything in fp32;
          "auto": bf16 on a GPU, fp32 on a CPU.
        - `fast`: also merge applied LoRAs into the weights and make `generate` use the fast loop
          (`GenerateSettings.fast`); False is the reference behaviour.
        - `attention`: a diffusers attention backend for the Wan transformer; "auto" picks cuDNN
          ("_native_cudnn") on a GPU where it works, else PyTorch's SDPA; "native" forces SDPA.
        - `offload`: see the module doc; `memory_cap_gib` is the budget planned for (default: the GPU);
          `reserve_gib` of it is kept for activations. `vae_tiling`: None = tiled when the budget is small.
        - `compile`: `torch.compile` each transformer block (compiled on the first call; the first
          generation is slow); a string is taken as the compile mode (e.g. "max-autotune-no-cudagraphs").
        Calling it again first undoes the previous placement and compilation.
        """
        self._undo_placement()
        device = self.device
        on_gpu = device.type == "cuda"
        prec = resolve_precision(precision, device)
        wan = self.wan
        tr, te, vae = wan.transformer, wan.text_encoder, wan.vae

        # 1. precision
        wdtype = torch.bfloat16 if prec == "bf16" else torch.float32
        if tr is not None:
            cast_module(tr, wdtype, getattr(type(tr), "_keep_in_fp32_modules", None) or ())
        if te is not None:
            cast_module(te, wdtype)
        if vae is not None and (fast or prec == "fp32"):
            cast_module(vae, torch.bfloat16 if (fast and prec == "bf16") else torch.float32)
        wan.dtype = wdtype
        if self.decoder is not None:
            decoders.set_precision(self.decoder, prec)

        # 2. LoRA merged into the weights (no per-step LoRA matmuls)
        merged = False
        if tr is not None and fast:
            for name, state in applied_loras(tr).items():
                if not state["merged"]:
                    set_lora_strength(tr, state["strength"], adapter_name=name, merge=True)
                merged = True

        # 3. attention backend
        backend = None
        if tr is not None and hasattr(tr, "set_attention_backend"):
            if attention == "auto":
                backend = "_native_cudnn" if (on_gpu and fast and _cudnn_attention_works(device)) else None
            else:
                backend = attention
            if backend is not None:
                tr.set_attention_backend(backend)
            elif hasattr(tr, "reset_attention_backend"):
                tr.reset_attention_backend()

        # 4. placement
        sizes = component_bytes(wan, self.decoder)
        budget = memory_cap_gib * GIB if memory_cap_gib else None
        mode = resolve_offload(offload, device, sizes=sizes, budget_bytes=budget, reserve_bytes=reserve_gib * GIB)
        streamed = self.placement.apply(mode, wan, self.decoder, device, budget, reserve_gib * GIB)

        # 5. compilation (each block's forward, not the module: offload hooks stay outside the graph)
        if compile and tr is not None:
            compile_mode = compile if isinstance(compile, str) else None
            for block in tr.blocks:
                self._compiled.append((block, block.forward))
                block.forward = torch.compile(block.forward, dynamic=False, mode=compile_mode)

        if vae_tiling is None:  # GPU memory budgets only; a CPU decodes whole frames
            total = (budget or torch.cuda.get_device_properties(device).total_memory) if on_gpu else None
            vae_tiling = bool(total is not None and total < TILED_VAE_BELOW_GIB * GIB)
        self.plan = PerfPlan(fast=fast, precision=prec, offload=mode, compile=compile, attention=backend,
                             vae_tiling=vae_tiling, lora_merged=merged, streamed_blocks=streamed,
                             memory_cap_gib=memory_cap_gib,
                             sizes_gib={k: round(v / GIB, 3) for k, v in sizes.items()})
        return self.plan

    def _undo_placement(self) -> None:
        for block, forward in self._compiled:
            block.forward = forward
        self._compiled.clear()
        self.placement.remove()

    def _fast(self, s: "GenerateSettings | None" = None) -> bool:
        if s is not None and s.fast is not None:
            return s.fast
        return self.plan.fast if self.plan is not None else False

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Context for one stage ("text", "denoise", "vae", "splats"): onload what it needs (per the
        placement plan), time it into `last_timings`, offload after."""
        component = STAGE_COMPONENT[name]
        off = self.placement.stage_offloaders.get(component)
        if self.sync_timings:
            synchronize(self.device)
        t0 = time.perf_counter()
        if off is not None:
            off.onload()
        try:
            yield
        finally:
            streamer = self.placement.streamers.get(component)
            if streamer is not None:
                streamer.release()
            if off is not None:
                off.offload()
            if self.sync_timings:
                synchronize(self.device)
            self.last_timings[name] = self.last_timings.get(name, 0.0) + time.perf_counter() - t0

    # ---------------------------------------------------------------------------------- stages
    def encode_prompt(self, prompt: str, negative_prompt: str | None = None, camera_template: bool = True,
                      fast: bool | None = None, should_cancel: CancelFn | None = None):
        texts = [build_prompt(prompt, camera_template=camera_template),
                 NEGATIVE_PROMPT if negative_prompt is None else negative_prompt]
        with self.stage("text"):
            if self._fast() if fast is None else fast:
                both = encode_prompt(self.wan, texts, should_cancel=should_cancel)  # one call for both (same padding, same result)
                return both[:1], both[1:]
            return (encode_prompt(self.wan, texts[0], should_cancel=should_cancel),
                    encode_prompt(self.wan, texts[1], should_cancel=should_cancel))

    def sample(self, pos, neg, s: GenerateSettings, progress: ProgressFn | None = None, should_cancel: CancelFn | None = None) -> torch.Tensor:
        fast = self._fast(s)
        with self.stage("denoise"):
            return sample_latents(
                self.wan, pos, neg, num_frames=s.frames, height=s.height, width=s.width, steps=s.steps, cfg=s.cfg,
                shift=s.shift, seed=s.seed, seed_mode=s.seed_mode, prompt_index=s.prompt_index, batched_cfg=fast, sync_free=fast,
                callback=(lambda i, n: progress("denoise", i, n)) if progress else None,
                should_cancel=should_cancel,
            )

    def decode_video(self, latent: torch.Tensor, should_cancel: CancelFn | None = None) -> torch.Tensor:
        with self.stage("vae"):
            return decode_latents(self.wan, latent, tiled=self.plan.vae_tiling if self.plan is not None else None,
                                  should_cancel=should_cancel)

    def decode_splats(self, latent: torch.Tensor, video: torch.Tensor, s: GenerateSettings,
                      should_cancel: CancelFn | None = None) -> list[Scene]:
        with self.stage("splats"):
            return splats_from_latent(self.decoder, latent, video, voxelize=s.voxelize, min_opacity=s.min_opacity,
                                      should_cancel=should_cancel)

    def generate(self, prompt: str, settings: GenerateSettings | None = None, progress: ProgressFn | None = None,
                 should_cancel: CancelFn | None = None) -> tuple[Scene, torch.Tensor]:
        """Returns the scene and the raw latent."""
        s = settings or GenerateSettings()
        self.last_timings = {}
        report = progress or (lambda *a: None)
        report("text", 0, 1)
        pos, neg = self.encode_prompt(prompt, s.negative_prompt, s.camera_template, fast=self._fast(s),
                                      should_cancel=should_cancel)
        report("text", 1, 1)
        latent = self.sample(pos, neg, s, progress, should_cancel)
        report("vae", 0, 1)
        video = self.decode_video(latent, should_cancel)
        report("vae", 1, 1)
        if should_cancel and should_cancel():
            raise Cancelled("generation cancelled before decoding splats")
        report("splats", 0, 1)
        scene = self.decode_splats(latent, video, s, should_cancel)[0]
        report("splats", 1, 1)
        return scene, latent
