"""LoRA for the two trained models, in the layouts the released checkpoints use.

Stitched decoder (``anysplat_stitched.pth``): every ``nn.Linear`` and ``nn.Conv2d`` of the stitched
model gets factors registered *on the layer itself* as ``<layer>.lora_A`` / ``<layer>.lora_B`` (the
official key names), and its class is swapped for a subclass whose forward adds the low-rank update:

* Linear: ``y = x W^T + b + (x A^T B^T) * alpha / r`` with A ``[r, in]``, B ``[out, r]``;
* Conv2d (k x k): ``conv(x, W + (B @ A).view(W.shape) * alpha / r, b)`` with A ``[r*k, in*k]``,
  B ``[out*k, r*k]``.

A is kaiming-uniform, B zero (the model starts exactly at its base). Keeping the factors on the
layer (not in a side container) matters for ZeRO-3, which gathers a module's own parameters around
its forward. ``ConvTranspose2d`` and the ``Conv3d`` stitching layer are not wrapped (as officially).
The layer's bias trains too ("lora_only" bias), and so do the stitching conv and the DINO
cls/register/mask tokens.

Wan transformer: PEFT's ``LoraConfig(r=8, lora_alpha=16)`` on attn1/attn2 ``to_q, to_k, to_v, to_out.0``
through ``get_peft_model`` (what train_vdm.py does), so names and the exported adapter are PEFT's own.
"""

from __future__ import annotations

import math
import re
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LoRALinear",
    "LoRAConv2d",
    "inject_lora",
    "lora_modules",
    "mark_stitch_trainable",
    "STITCH_TOKEN_PARAMS",
    "add_wan_lora",
    "wan_peft_state_dict",
    "wan_adapter_config",
]

STITCH_TOKEN_PARAMS = (
    "encoder.aggregator.patch_embed.cls_token",
    "encoder.aggregator.patch_embed.register_tokens",
    "encoder.aggregator.patch_embed.mask_token",
)


class LoRALinear(nn.Linear):
    lora_A: nn.Parameter
    lora_B: nn.Parameter
    lora_scaling: float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        a, b = self.lora_A, self.lora_B
        if torch.is_autocast_enabled(x.device.type):
            return out + F.linear(F.linear(x, a), b) * self.lora_scaling
        return out + F.linear(F.linear(x.to(a.dtype), a), b).to(out.dtype) * self.lora_scaling


class LoRAConv2d(nn.Conv2d):
    lora_A: nn.Parameter
    lora_B: nn.Parameter
    lora_scaling: float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = (self.lora_B @ self.lora_A).view(self.weight.shape) * self.lora_scaling
        return self._conv_forward(x, self.weight + delta.to(self.weight.dtype), self.bias)


def inject_lora(model: nn.Module, rank: int, alpha: float, *, exclude: Iterable[str] = ("stitching_layer",),
                seed: int | None = 0) -> list[str]:
    """Wrap every Linear/Conv2d of ``model`` (names starting with an ``exclude`` prefix skipped).

    Returns the wrapped module names in ``named_modules`` order. Factors are float32 on the layer's
    device (also for bf16 layers, like the official code); ``seed`` makes the A init reproducible.
    """
    exclude = tuple(exclude)
    gen = None
    names = []
    for name, module in list(model.named_modules()):
        if any(name == e or name.startswith(e + ".") for e in exclude):
            continue
        if type(module) is nn.Linear:
            cls, k = LoRALinear, 1
            out_f, in_f = module.out_features, module.in_features
            a_shape, b_shape = (rank, in_f), (out_f, rank)
        elif type(module) is nn.Conv2d:
            if module.groups != 1 or module.kernel_size[0] != module.kernel_size[1]:
                raise ValueError(f"cannot wrap conv '{name}' (groups={module.groups}, kernel={module.kernel_size})")
            cls, k = LoRAConv2d, module.kernel_size[0]
            a_shape, b_shape = (rank * k, module.in_channels * k), (module.out_channels * k, rank * k)
        else:
            continue
        device = module.weight.device
        A = torch.empty(a_shape, dtype=torch.float32, device=device)
        if device.type != "meta":
            if gen is None and seed is not None:
                gen = torch.Generator(device="cpu").manual_seed(seed)
            bound = 1.0 / math.sqrt(a_shape[1])  # kaiming_uniform_(a=sqrt(5)) of a [r, in] matrix
            A.copy_(torch.empty(a_shape).uniform_(-bound, bound, generator=gen))
        module.lora_A = nn.Parameter(A)
        module.lora_B = nn.Parameter(torch.zeros(b_shape, dtype=torch.float32, device=device))
        module.lora_scaling = float(alpha) / float(rank)
        module.__class__ = cls
        names.append(name)
    return names


def lora_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (LoRALinear, LoRAConv2d))]


def mark_stitch_trainable(model: nn.Module) -> list[str]:
    """Freeze everything, then unfreeze LoRA factors, the biases of wrapped layers, the stitching conv
    and the DINO tokens. Returns the trainable parameter names."""
    model.requires_grad_(False)
    for _, m in lora_modules(model):
        m.lora_A.requires_grad_(True)
        m.lora_B.requires_grad_(True)
        if m.bias is not None:
            m.bias.requires_grad_(True)
    params = dict(model.named_parameters())
    for name in STITCH_TOKEN_PARAMS + ("stitching_layer.weight", "stitching_layer.bias"):
        if name in params:
            params[name].requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every LoRA merged into its weight (no lora_* keys), fp32."""
    out = {}
    for name, value in model.state_dict().items():
        if name.endswith((".lora_A", ".lora_B")):
            continue
        out[name] = value.detach().float().clone()
    for name, m in lora_modules(model):
        delta = (m.lora_B.detach().float() @ m.lora_A.detach().float()).view(m.weight.shape) * m.lora_scaling
        out[f"{name}.weight"] = out[f"{name}.weight"] + delta
    return out


# ------------------------------------------------------------------------------------------ Wan


def add_wan_lora(transformer: nn.Module, rank: int = 8, alpha: float = 16, targets: Iterable[str] | None = None):
    """``get_peft_model`` with the official VIST3A config; returns the PeftModel (only LoRA trains)."""
    from peft import LoraConfig, get_peft_model

    from vist3a.wan.lora import VIST3A_LORA_TARGETS

    config = LoraConfig(r=int(rank), lora_alpha=alpha, init_lora_weights=True,
                        target_modules=list(targets or VIST3A_LORA_TARGETS))
    return get_peft_model(transformer, config)


_PEFT_DEFAULT = re.compile(r"\.lora_([AB])\.default\.weight$")


def wan_peft_state_dict(named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """In-memory PEFT names (``base_model.model.blocks.0.attn1.to_q.lora_A.default.weight``) -> the
    saved adapter names (``...lora_A.weight``), float32, contiguous."""
    out = {}
    for name, value in named.items():
        if ".lora_" not in name:
            continue
        key = _PEFT_DEFAULT.sub(r".lora_\1.weight", name)
        if not key.startswith("base_model.model."):
            key = "base_model.model." + key
        out[key] = value.detach().float().cpu().contiguous()
    return out


def wan_adapter_config(peft_model) -> dict:
    """adapter_config.json as ``PeftModel.save_pretrained`` writes it (inference_mode on, targets a list)."""
    cfg = peft_model.peft_config["default"].to_dict()
    for k, v in list(cfg.items()):
        if isinstance(v, set):
            cfg[k] = sorted(v)
    cfg["inference_mode"] = True
    base = peft_model.get_base_model()
    cfg["auto_mapping"] = {"base_model_class": type(base).__name__, "parent_library": type(base).__module__}
    cfg.setdefault("base_model_name_or_path", None)
    cfg.setdefault("revision", None)
    return cfg
