"""Differentiable image-text rewards for align.py (pluggable).

A reward maps images ``[B, 3, H, W]`` in [-1, 1] and one prompt per image to ``(loss, scores)``;
lower loss is better and gradients flow back into the images. Built-in types (config
``align.reward.models: [{type: ..., weight: ..., ...}]``):

* ``pickscore`` -- PickScore_v1 (a CLIP ViT-H through transformers): images resized so the shorter
  side is 224 (bicubic, antialiased), centre-cropped, CLIP-normalised; score = logit_scale * cos(image,
  text); loss ``|target - score / div|`` with target 1, div 100 (the official loss).
* ``open_clip`` -- an open_clip model (default ``hf-hub:apple/DFN5B-CLIP-ViT-H-14-378``): images resized
  to 378x378, CLIP-normalised; loss ``1 - cos``. Offline: ``architecture: ViT-H-14-378-quickgelu`` and
  ``pretrained: <folder>/open_clip_pytorch_model.bin`` (the file of that hub repository).
* ``clip`` -- any transformers CLIP checkpoint, cosine loss (``model: <id or folder>``).
* ``tiny_clip`` -- a tiny randomly initialised transformers ``CLIPModel`` built locally from
  ``CLIPConfig`` and the tiny UMT5 tokenizer (nothing downloaded; tests and the CPU config);
  ``mode: pickscore | cosine`` selects which loss it mimics.

Extra types: :func:`register_reward` or ``type: "package.module:factory"`` (called with the spec
dict, device and dtype, returning a callable like :class:`ClipReward`).

The official reward applies each model with weight ``qual_coeff`` (0.25) and sums the terms.
"""

from __future__ import annotations

import importlib
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = ["ClipReward", "RewardSet", "build_rewards", "register_reward", "REWARD_TYPES"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    return (images / 2 + 0.5).clamp(0, 1)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def preprocess_shorter_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """PickScore/CLIP processor: shorter side -> size (bicubic, antialiased), centre crop, normalise."""
    x = _to_unit(images)
    H, W = x.shape[-2:]
    if H < W:
        h, w = size, W * size // H
    else:
        w, h = size, H * size // W
    x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    y0, x0 = h // 2 - size // 2, w // 2 - size // 2
    return _normalise(x[:, :, y0:y0 + size, x0:x0 + size])


def preprocess_square(images: torch.Tensor, size: int) -> torch.Tensor:
    x = F.interpolate(_to_unit(images), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return _normalise(x)


def _features(out) -> torch.Tensor:
    """transformers 4.x returns a tensor, 5.x a ModelOutput whose pooler_output is the projection."""
    if isinstance(out, torch.Tensor):
        return out
    return out.pooler_output


class ClipReward:
    """One image-text reward. ``image_features``/``text_features`` return unnormalised embeddings."""

    def __init__(self, name: str, weight: float, *, image_features: Callable, text_features: Callable,
                 preprocess: Callable, mode: str = "cosine", logit_scale: Optional[Callable] = None,
                 target: float = 1.0, div: float = 100.0, dtype: torch.dtype = torch.float32):
        if mode not in ("pickscore", "cosine"):
            raise ValueError(f"reward mode must be 'pickscore' or 'cosine', got {mode!r}")
        self.name, self.weight, self.mode = name, float(weight), mode
        self.image_features, self.text_features, self.preprocess = image_features, text_features, preprocess
        self.logit_scale, self.target, self.div, self.dtype = logit_scale, target, div, dtype
        self._text_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _text(self, prompts: Sequence[str]) -> torch.Tensor:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            feats = F.normalize(_features(self.text_features(missing)).float(), dim=-1)
            if len(self._text_cache) > 4096:
                self._text_cache.clear()
            self._text_cache.update(zip(missing, feats))
        return torch.stack([self._text_cache[p] for p in prompts])

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, dict]:
        if len(prompts) != images.shape[0]:
            raise ValueError(f"reward '{self.name}': {images.shape[0]} images but {len(prompts)} prompts")
        pixels = self.preprocess(images.float()).to(self.dtype)
        img = F.normalize(_features(self.image_features(pixels)).float(), dim=-1)
        txt = self._text(prompts).to(img.device)
        cos = (img * txt).sum(-1)
        if self.mode == "pickscore":
            score = self.logit_scale().float() * cos / self.div
            loss = (self.target - score).abs().mean()
        else:
            score = cos
            loss = (1.0 - cos).mean()
        return self.weight * loss, {self.name: score.mean().detach()}


class RewardSet:
    def __init__(self, rewards: list):
        self.rewards = rewards

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, dict]:
        total = images.new_zeros(())
        scores = {}
        for r in self.rewards:
            loss, s = r(images, prompts)
            total = total + loss
            scores.update(s)
        return total, scores


# ------------------------------------------------------------------------------------- factories


def _freeze(model, device, dtype, checkpointing: bool = False):
    """Frozen reward model. With ``checkpointing`` (transformers models) the encoder layers are recomputed
    in backward: transformers only checkpoints in train mode, so the model is put in train mode (CLIP
    has no dropout or batch norm, so outputs are unchanged)."""
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    if checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
    return model


def _hf_clip(model, tokenizer, spec: dict, device, dtype, mode: str, size: int, name: str) -> ClipReward:
    def text_features(prompts):
        tok = tokenizer(list(prompts), padding="max_length" if spec.get("pad_to_max") else True, truncation=True,
                        max_length=int(spec.get("max_length", 77)), return_tensors="pt")
        tok = {k: v.to(device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
        return model.get_text_features(**tok)

    prep = preprocess_shorter_crop if spec.get("resize", "shorter_crop") == "shorter_crop" else preprocess_square
    return ClipReward(name, spec.get("weight", 0.25), image_features=lambda px: model.get_image_features(pixel_values=px),
                      text_features=text_features, preprocess=lambda im: prep(im, size), mode=mode,
                      logit_scale=lambda: model.logit_scale.exp(), target=float(spec.get("target", 1.0)),
                      div=float(spec.get("div", 100.0)), dtype=dtype)


def build_pickscore(spec: dict, device, dtype) -> ClipReward:
    from transformers import AutoModel, AutoProcessor

    model = _freeze(AutoModel.from_pretrained(spec.get("model", "yuvalkirstain/PickScore_v1")), device, dtype,
                    checkpointing=spec.get("checkpointing", True))
    processor = AutoProcessor.from_pretrained(spec.get("processor", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"))
    return _hf_clip(model, processor.tokenizer, spec, device, dtype, "pickscore", int(spec.get("image_size", 224)),
                    spec.get("name", "pickscore"))


def build_clip(spec: dict, device, dtype) -> ClipReward:
    from transformers import AutoModel, AutoTokenizer

    if "model" not in spec:
        raise ValueError("reward type 'clip' needs model: <transformers CLIP id or folder>")
    model = _freeze(AutoModel.from_pretrained(spec["model"]), device, dtype, checkpointing=spec.get("checkpointing", True))
    tokenizer = AutoTokenizer.from_pretrained(spec.get("processor", spec["model"]))
    size = int(spec.get("image_size", model.config.vision_config.image_size))
    return _hf_clip(model, tokenizer, spec, device, dtype, spec.get("mode", "cosine"), size, spec.get("name", "clip"))


def build_open_clip(spec: dict, device, dtype) -> ClipReward:
    try:
        import open_clip
    except ImportError:
        raise ImportError("reward type 'open_clip' needs the open_clip_torch package (pip install -e .[train])") from None
    if spec.get("pretrained"):  # offline: architecture name + a local open_clip_pytorch_model.bin
        model_id = spec["architecture"]
        model, _, _ = open_clip.create_model_and_transforms(model_id, pretrained=str(spec["pretrained"]))
    else:
        model_id = spec.get("model", "hf-hub:apple/DFN5B-CLIP-ViT-H-14-378")
        model, _, _ = open_clip.create_model_and_transforms(model_id, cache_dir=spec.get("cache_dir"))
    model = _freeze(model, device, dtype)
    if spec.get("checkpointing", True):
        model.set_grad_checkpointing(True)
    tokenizer = open_clip.get_tokenizer(model_id)
    size = int(spec.get("image_size", 378))
    return ClipReward(spec.get("name", "open_clip"), spec.get("weight", 0.25),
                      image_features=lambda px: model.encode_image(px),
                      text_features=lambda prompts: model.encode_text(tokenizer(list(prompts)).to(device)),
                      preprocess=lambda im: preprocess_square(im, size), mode=spec.get("mode", "cosine"),
                      logit_scale=lambda: model.logit_scale.exp(), dtype=dtype)


def tiny_clip_model(seed: int = 0, image_size: int = 32, vocab_size: int = 256):
    """A tiny transformers CLIPModel with random weights (the real class, toy sizes)."""
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, pad_token_id=0, eos_token_id=1, bos_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPModel(cfg)


def build_tiny_clip(spec: dict, device, dtype) -> ClipReward:
    from vist3a.wan.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    size = int(spec.get("image_size", 32))
    model = _freeze(tiny_clip_model(int(spec.get("seed", 0)), size, len(tokenizer)), device, dtype,
                    checkpointing=spec.get("checkpointing", False))
    mode = spec.get("mode", "pickscore")
    return _hf_clip(model, tokenizer, spec, device, dtype, mode, size, spec.get("name", f"tiny_clip_{mode}"))


REWARD_TYPES: dict[str, Callable] = {
    "pickscore": build_pickscore,
    "clip": build_clip,
    "open_clip": build_open_clip,
    "tiny_clip": build_tiny_clip,
}


def register_reward(name: str, factory: Callable) -> None:
    REWARD_TYPES[name] = factory


def build_rewards(specs: Sequence[dict], device, dtype=torch.float32) -> RewardSet:
    rewards = []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        typ = spec.get("type")
        if typ in REWARD_TYPES:
            factory = REWARD_TYPES[typ]
        elif isinstance(typ, str) and ":" in typ:
            module, attr = typ.split(":", 1)
            factory = getattr(importlib.import_module(module), attr)
        else:
            raise ValueError(f"align.reward.models[{i}].type is {typ!r}; use one of {', '.join(REWARD_TYPES)} "
                             "or 'package.module:factory'")
        rewards.append(factory(spec, device, dtype))
    if not rewards:
        raise ValueError("align.reward.enabled is true but align.reward.models is empty")
    return RewardSet(rewards)
