"""Model construction from the config: the same builders as ``python -m vist3a generate --tiny`` when
``models.tiny`` is set, the released-format loaders of :mod:`vist3a` otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vist3a import weights as wt
from vist3a.models import AnySplat, StitchConfig, StitchedDecoder
from vist3a.models.layers import Block

from .config import Config, ConfigError, resolve_path

__all__ = ["load_teacher", "load_wan_models", "build_student", "load_decoder", "enable_block_checkpointing",
           "default_decoder_path"]


def _require(cfg: Config, key: str, what: str) -> Path:
    value = getattr(cfg.models, key)
    if value in (None, ""):
        raise ConfigError(f"config '{cfg.path}': models.{key} ({what}) is required unless models.tiny is true")
    return resolve_path(cfg, value, must_exist=True, what=f"models.{key}")


def load_teacher(cfg: Config, device: torch.device) -> AnySplat:
    """The frozen AnySplat (float32 weights; the transformer runs under bf16 autocast on CUDA)."""
    if cfg.models.tiny:
        from vist3a.tiny import build_tiny_anysplat

        model = build_tiny_anysplat(seed=cfg.models.tiny_seed)
    else:
        from vist3a.decoders import load_anysplat

        model = load_anysplat(_require(cfg, "anysplat", "the lhjiang/anysplat folder"))
    model.requires_grad_(False)
    return model.to(device).eval()


def check_sizes(teacher, video_size: int, context_size: int) -> None:
    patch = teacher.cfg.patch_size
    if context_size % patch or video_size % 16 or video_size // 16 != context_size // patch:
        raise ConfigError(f"video_size {video_size} and context_size {context_size} do not match: the latent token grid "
                          f"(video/16 = {video_size / 16:g}) must equal the AnySplat grid (context/{patch} = "
                          f"{context_size / patch:g}), e.g. 512 and 448")


def load_wan_models(cfg: Config, device: torch.device, *, dtype: torch.dtype, vae_dtype: torch.dtype = torch.float32,
                    components=("transformer", "vae", "text_encoder")):
    """WanModels with the requested components (others dropped to save memory)."""
    if cfg.models.tiny:
        from vist3a.wan.tiny import build_tiny_wan

        models = build_tiny_wan(seed=cfg.models.tiny_seed, dtype=dtype, vae_dtype=vae_dtype)
    else:
        from vist3a.wan import load_wan

        path = _require(cfg, "wan", "a Wan2.1-T2V diffusers folder or diffusion-model file")
        models = load_wan(path, vae=resolve_path(cfg, cfg.models.wan_vae), text_encoder=resolve_path(cfg, cfg.models.wan_text_encoder),
                          tokenizer=resolve_path(cfg, cfg.models.wan_tokenizer), dtype=dtype, vae_dtype=vae_dtype)
    for name in ("transformer", "vae", "text_encoder"):
        module = getattr(models, name)
        if name not in components:
            setattr(models, name, None)
        elif module is not None:
            module.requires_grad_(False)
            module.eval()
    return models.to(device)


def build_student(teacher: AnySplat, cut: int, conv_init: Optional[dict] = None) -> StitchedDecoder:
    """The stitched decoder initialised from the teacher's weights (blocks renumbered after the cut)
    and, when given, the ridge-solved conv ({"weight", "bias"})."""
    cfg = StitchConfig(cut_block=int(cut), anysplat=teacher.cfg)
    student = StitchedDecoder(cfg)
    state = wt.stitched_from_anysplat({k: v.detach().cpu() for k, v in teacher.state_dict().items()}, cfg.cut_block,
                                      source="teacher AnySplat")
    if conv_init is not None:
        state["stitching_layer.weight"] = conv_init["weight"].float()
        state["stitching_layer.bias"] = conv_init["bias"].float()
    else:
        sl = student.stitching_layer
        state["stitching_layer.weight"], state["stitching_layer.bias"] = sl.weight.detach(), sl.bias.detach()
    student.load_state_dict(state, strict=True)
    return student


def default_decoder_path(out_dir: Path) -> Path:
    return Path(out_dir) / "export" / "stitched_decoder"


def load_decoder(cfg: Config, out_dir: Path, device: torch.device) -> StitchedDecoder:
    """The frozen stitched decoder for align.py: models.decoder, else stitch.py's export in OUTPUT."""
    from vist3a.decoders import load_stitched_decoder

    path = resolve_path(cfg, cfg.models.decoder) or default_decoder_path(out_dir)
    if not Path(path).exists():
        raise ConfigError(f"stitched decoder '{path}' does not exist; run stitch.py with the same --output-dir first "
                          "or set models.decoder to an export folder or anysplat_stitched.pth")
    anysplat = None if cfg.models.tiny or cfg.models.anysplat in (None, "") else resolve_path(cfg, cfg.models.anysplat)
    if cfg.models.tiny and wt.sniff(path).kind == "stitched_pth":
        raise ConfigError(f"'{path}' is an official .pth that needs its AnySplat base; with models.tiny give the export folder")
    decoder = load_stitched_decoder(path, anysplat, device=device)
    decoder.requires_grad_(False)
    return decoder.eval()


_CHECKPOINTED: dict[type, type] = {}


def _checkpointed_class(cls: type) -> type:
    """A subclass whose forward is recomputed in backward (non-reentrant checkpoint) under autograd."""
    if cls not in _CHECKPOINTED:
        def forward(self, *args, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(super(sub, self).forward, *args, use_reentrant=False, **kwargs)
            return super(sub, self).forward(*args, **kwargs)

        sub = type(f"Checkpointed{cls.__name__}", (cls,), {"forward": forward})
        _CHECKPOINTED[cls] = sub
    return _CHECKPOINTED[cls]


def enable_block_checkpointing(model: nn.Module) -> int:
    """Gradient checkpointing for every DINO / aggregator / camera-trunk block and the three heads
    (what the official stitched model checkpoints); also for frozen models that pass gradients to
    their inputs (align.py's decoder). Returns how many modules were wrapped."""
    from vist3a.models.camera_head import CameraHead
    from vist3a.models.dpt import DPTHead, GaussianParamHead

    n = 0
    for m in model.modules():
        if type(m) in (Block, CameraHead, DPTHead, GaussianParamHead):
            m.__class__ = _checkpointed_class(type(m))
            n += 1
    return n
