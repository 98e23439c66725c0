"""Text -> Wan latent -> Gaussians (+ cameras, depth). Used by the CLI, the ComfyUI nodes and training eval.

The pieces are separate functions so callers can mix sources: the ComfyUI "Decode Splats" node hands
us a latent from any sampler and frames decoded by ComfyUI's own VAE; the CLI runs everything here.
Models are loaded once into a `VIST3APipeline` and reused across calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .gaussians import Gaussians
from .models import AnySplat, SplatOutput, StitchedDecoder
from .models.gaussian_adapter import RawGaussians

ProgressFn = Callable[[str, int, int], None]  # (stage, step, total)
CancelFn = Callable[[], bool]


@dataclass
class Scene:
    """One reconstructed scene: Gaussians plus the cameras/depth the decoder predicted for each frame."""

    gaussians: Gaussians
    c2w: torch.Tensor  # [S, 4, 4] camera-to-world, OpenCV axes
    intrinsics: torch.Tensor  # [S, 3, 3] normalised by image width/height
    depth: torch.Tensor  # [S, H, W]
    frames: torch.Tensor  # [S, H, W, 3] in [0, 1]: the RGB context the decoder saw
    info: dict = field(default_factory=dict)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def to_gaussians(raw: RawGaussians) -> Gaussians:
    return Gaussians.from_xyzw(raw.means, raw.scales, raw.rotations, raw.opacities, raw.harmonics, raw.covariances)


def scenes_from_output(out: SplatOutput, images01: torch.Tensor, *, min_opacity: float = 0.0) -> list[Scene]:
    """Split a batched decoder output into per-scene results; prune faint Gaussians if asked."""
    scenes = []
    for b, raw in enumerate(out.gaussians):
        g = to_gaussians(raw)
        n_before = g.num
        if min_opacity > 0:
            g = g.prune(min_opacity=min_opacity)
        scenes.append(
            Scene(
                gaussians=g,
                c2w=out.extrinsics[b],
                intrinsics=out.intrinsics[b],
                depth=out.depth[b, ..., 0],
                frames=images01[b].permute(0, 2, 3, 1).clamp(0, 1),
                info={"gaussians_before_pruning": n_before, "scene_scale": float(out.scene_scale)},
            )
        )
    return scenes


def context_from_video(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Decoded video [B, 3, F, H, W] in [-1, 1] -> the decoder context at `size`, resized exactly as the
    official inference does (trilinear, align_corners=False, frame count kept)."""
    if tuple(video.shape[-2:]) == tuple(size):
        return video
    return F.interpolate(video.float(), size=(video.shape[2], *size), mode="trilinear", align_corners=False)


@torch.no_grad()
def splats_from_latent(
    decoder: StitchedDecoder,
    latent: torch.Tensor,
    video: torch.Tensor,
    *,
    voxelize: bool | None = None,
    min_opacity: float = 0.0,
) -> list[Scene]:
    """Raw Wan latent [B, 16, T, h, w] + its decoded video [B, 3, F, H, W] in [-1, 1] -> scenes."""
    from .tiny import context_size_for_latent

    device = next(decoder.parameters()).device
    size = context_size_for_latent(latent.shape[-2:], decoder.cfg)
    context = context_from_video(video.to(device), size)
    out = decoder.forward_with_latent(latent.to(device).float(), context, voxelize_output=voxelize)
    return scenes_from_output(out, (context.permute(0, 2, 1, 3, 4) + 1) / 2, min_opacity=min_opacity)


@torch.no_grad()
def splats_from_images(anysplat: AnySplat, images01: torch.Tensor, *, voxelize: bool | None = None, min_opacity: float = 0.0) -> list[Scene]:
    """Images [S, H, W, 3] or [B, S, 3, H, W] in [0, 1] -> scenes (plain AnySplat). Sizes that are not
    multiples of 14 are resized down to the nearest multiple (aspect ratio kept within a patch)."""
    if images01.dim() == 4:
        images01 = images01.permute(0, 3, 1, 2).unsqueeze(0)
    if images01.dim() != 5 or images01.shape[2] != 3:
        raise ValueError(f"images must be [S, H, W, 3] or [B, S, 3, H, W], got {list(images01.shape)}")
    if images01.shape[1] < 2:
        raise ValueError("AnySplat needs at least 2 views (frames) of the scene; give a video or several images")
    patch = anysplat.cfg.patch_size
    H, W = images01.shape[-2:]
    Hn, Wn = max(patch, H // patch * patch), max(patch, W // patch * patch)
    device = next(anysplat.parameters()).device
    x = images01.to(device).float()
    if (Hn, Wn) != (H, W):
        B, S = x.shape[:2]
        x = F.interpolate(x.flatten(0, 1), size=(Hn, Wn), mode="bilinear", align_corners=False, antialias=True)
        x = x.reshape(B, S, 3, Hn, Wn)
    out = anysplat(x.clamp(0, 1), voxelize_output=voxelize)
    return scenes_from_output(out, x, min_opacity=min_opacity)


@dataclass
class GenerateSettings:
    frames: int = 13
    height: int = 512
    width: int = 512
    steps: int = 50
    cfg: float = 7.5
    shift: float = 5.0
    seed: int = 0
    camera_template: bool = True
    negative_prompt: Optional[str] = None  # None -> the official negative prompt
    voxelize: Optional[bool] = None  # None -> the decoder config (the release voxelises)
    min_opacity: float = 0.0


class VIST3APipeline:
    """Wan 2.1 (+ VIST3A LoRA) and the stitched decoder, loaded once; `generate` runs text -> Scene."""

    def __init__(self, wan, decoder: StitchedDecoder, anysplat: AnySplat | None = None, *, device="cpu", described: dict | None = None):
        self.wan = wan
        self.decoder = decoder
        self.anysplat = anysplat
        self.device = torch.device(device)
        self.described = described or {}

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
    ) -> "VIST3APipeline":
        """Load what is given by path; with `tiny=True` build tiny random models for whatever is not."""
        from . import decoders
        from . import tiny as tiny_models
        from .wan import apply_vist3a_lora, load_wan
        from .wan.tiny import build_tiny_wan

        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        on_gpu = device.type == "cuda"
        described = {}
        if wan is not None:
            wan_models = load_wan(wan, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                  dtype=torch.bfloat16 if on_gpu else torch.float32, device=device)
            described["wan"] = str(wan)
        elif tiny:
            wan_models = build_tiny_wan(seed=seed, device=device)
            described["wan"] = "tiny random Wan"
        else:
            raise ValueError("no Wan model given: pass --wan PATH (diffusers folder or ComfyUI file) or --tiny")
        if lora is not None:
            apply_vist3a_lora(wan_models.transformer, lora, strength=lora_strength)
            described["lora"] = f"{lora} (strength {lora_strength:g})"
        if decoder is not None:
            dec = decoders.load_stitched_decoder(decoder, anysplat, device=device)
            described["decoder"] = str(decoder)
        elif tiny:
            dec = tiny_models.build_tiny_decoder(seed=seed).to(device)
            described["decoder"] = "tiny random stitched decoder"
        else:
            raise ValueError("no stitched decoder given: pass --decoder PATH (anysplat_stitched.pth or an export) or --tiny")
        if on_gpu:
            decoders.set_precision(dec, "bf16")
        if anysplat is not None:
            described["anysplat"] = str(anysplat)
        return cls(wan_models, dec, device=device, described=described)

    # ---------------------------------------------------------------------------------- stages
    def encode_prompt(self, prompt: str, negative_prompt: str | None = None, camera_template: bool = True):
        from .wan import NEGATIVE_PROMPT, build_prompt, encode_prompt

        pos = encode_prompt(self.wan, build_prompt(prompt, camera_template=camera_template))
        neg = encode_prompt(self.wan, NEGATIVE_PROMPT if negative_prompt is None else negative_prompt)
        return pos, neg

    def sample(self, pos, neg, s: GenerateSettings, progress: ProgressFn | None = None, should_cancel: CancelFn | None = None) -> torch.Tensor:
        from .wan import sample_latents

        return sample_latents(
            self.wan, pos, neg, num_frames=s.frames, height=s.height, width=s.width, steps=s.steps, cfg=s.cfg,
            shift=s.shift, seed=s.seed,
            callback=(lambda i, n: progress("denoise", i, n)) if progress else None,
            should_cancel=should_cancel,
        )

    def decode_video(self, latent: torch.Tensor) -> torch.Tensor:
        from .wan import decode_latents

        return decode_latents(self.wan, latent)

    def generate(self, prompt: str, settings: GenerateSettings | None = None, progress: ProgressFn | None = None,
                 should_cancel: CancelFn | None = None) -> tuple[Scene, torch.Tensor]:
        """Returns the scene and the raw latent."""
        s = settings or GenerateSettings()
        report = progress or (lambda *a: None)
        report("text", 0, 1)
        pos, neg = self.encode_prompt(prompt, s.negative_prompt, s.camera_template)
        report("text", 1, 1)
        latent = self.sample(pos, neg, s, progress, should_cancel)
        report("vae", 0, 1)
        video = self.decode_video(latent)
        report("vae", 1, 1)
        if should_cancel and should_cancel():
            from .wan import Cancelled

            raise Cancelled("generation cancelled before decoding splats")
        report("splats", 0, 1)
        scene = splats_from_latent(self.decoder, latent, video, voxelize=s.voxelize, min_opacity=s.min_opacity)[0]
        report("splats", 1, 1)
        return scene, latent
