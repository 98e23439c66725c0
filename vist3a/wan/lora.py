"""The reward-aligned VIST3A Wan LoRA (``vist3a_{1.3b,14b}_lora_ema/``, PEFT layout, r8 / alpha16).

The released folders are ``PeftModel.save_pretrained`` output for a diffusers
``WanTransformer3DModel`` (keys ``base_model.model.blocks.{i}.attn1.to_q.lora_A.weight``...).
We validate them against the transformer first (a 14B LoRA on the 1.3B model must fail with a
sentence, not a shape error deep inside PEFT) and then hand them to diffusers'
``load_lora_adapter``, which injects PEFT LoRA layers into the unchanged diffusers model.  The
``strength`` multiplies PEFT's ``alpha / r``, so the effective weight is
``W + strength * (alpha / r) * B @ A``; it can be changed or removed later without reloading
the base weights.  :func:`lora_to_comfy` rewrites the same tensors in ComfyUI's key format so
the nodes can patch a native ComfyUI Wan ``MODEL`` instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_path
from ..errors import CheckpointError
from ..finite import check_finite
from .configs import wan_size_name

__all__ = [
    "VIST3A_LORA_TARGETS",
    "WanLoRA",
    "load_vist3a_lora",
    "check_lora_fits",
    "apply_vist3a_lora",
    "set_lora_strength",
    "remove_vist3a_lora",
    "applied_loras",
    "lora_to_comfy",
    "save_comfy_lora",
]

ADAPTER_NAME = "vist3a"
# The official LoRA's target modules (train_vdm.py), in diffusers naming.
VIST3A_LORA_TARGETS = (
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
)
_KEY = re.compile(
    r"^(?:base_model\.model\.)?blocks\.(\d+)\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)"
    r"\.lora_(A|B)(?:\.default)?\.weight$"
)
_COMFY_ATTN = {"attn1": "self_attn", "attn2": "cross_attn"}
_COMFY_PROJ = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o"}
_STATE_ATTR = "_vist3a_loras"  # {adapter_name: {"lora": WanLoRA, "strength": float, "merged": bool}}


@dataclass
class WanLoRA:
    """A loaded VIST3A Wan LoRA: tensors under diffusers module names (``blocks.0.attn1.to_q.lora_A.weight``)."""
    path: Path
    state_dict: dict[str, torch.Tensor]
    rank: int
    alpha: float
    num_blocks: int
    inner_dim: int

    @property
    def scaling(self) -> float:
        """PEFT's ``alpha / r`` (2.0 for the released files)."""
        return self.alpha / self.rank

    @property
    def size_name(self) -> str:
        return wan_size_name(self.num_blocks, self.inner_dim)

    @property
    def modules(self) -> list[str]:
        """The diffusers module names this LoRA patches, in file order."""
        return sorted({k.rsplit(".lora_", 1)[0] for k in self.state_dict}, key=_module_order)


def _module_order(name: str) -> tuple:
    block, attn, proj = re.match(r"blocks\.(\d+)\.(attn\d)\.(.+)", name).groups()
    return int(block), attn, proj


def load_vist3a_lora(path: Union[str, Path]) -> WanLoRA:
    """Read and validate a VIST3A Wan LoRA folder (or its ``adapter_model.safetensors``)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"VIST3A LoRA not found: {path} does not exist; put the vist3a_1.3b_lora_ema (or _14b_) folder in "
            f"ComfyUI's models/loras and select it",
            path=path,
        )
    folder = path if path.is_dir() else path.parent
    weights = path if path.is_file() else folder / "adapter_model.safetensors"
    config_path = folder / "adapter_config.json"
    if not weights.is_file():
        pickled = folder / "adapter_model.bin"
        extra = (" (adapter_model.bin needs pickle, which VIST3A refuses; re-save it as safetensors)"
                 if pickled.is_file() else "")
        raise CheckpointError(
            f"{folder} has no adapter_model.safetensors{extra}; expected the PEFT folder vist3a_*_lora_ema/ "
            f"with adapter_config.json and adapter_model.safetensors",
            path=folder,
        )
    if weights.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{weights} is not a .safetensors file; expected adapter_model.safetensors", path=weights)
    if not config_path.is_file():
        raise CheckpointError(
            f"{folder} has no adapter_config.json next to {weights.name}, so the LoRA's rank and alpha are unknown; "
            f"copy the whole vist3a_*_lora_ema/ folder",
            path=folder,
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{config_path} is not valid JSON ({exc}); re-download the LoRA folder", path=config_path) from exc
    if config.get("peft_type", "LORA") != "LORA" or "r" not in config or "lora_alpha" not in config:
        raise CheckpointError(
            f"{config_path} is not a PEFT LoRA config (peft_type LORA with r and lora_alpha); expected the "
            f"VIST3A Wan LoRA folder",
            path=config_path,
        )
    for flag in ("use_dora", "use_rslora", "fan_in_fan_out"):
        if config.get(flag):
            raise CheckpointError(
                f"{config_path} sets {flag}=true, which the VIST3A Wan LoRA never uses", path=config_path)
    try:
        raw = load_file(str(weights))
    except Exception as exc:
        raise CheckpointError(
            f"{weights} is not a readable safetensors file ({exc}); re-download it", path=weights) from exc

    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    tensors: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        match = _KEY.match(key)
        if match is None:
            comfy = key.startswith(("diffusion_model.", "lora_unet_"))
            raise CheckpointError(
                f"{weights}: tensor {key!r} is not a VIST3A Wan LoRA key (expected "
                f"base_model.model.blocks.<i>.attn1.to_q.lora_A.weight and the like)"
                + ("; this looks like a ComfyUI-format LoRA, load it with ComfyUI's LoRA loader" if comfy else ""),
                path=weights, key=key,
            )
        block, attn, proj, ab = match.groups()
        tensors[f"blocks.{block}.{attn}.{proj}.lora_{ab}.weight"] = value
    if not tensors:
        raise CheckpointError(f"{weights} holds no LoRA tensors", path=weights)

    inner = set()
    for module in {k.rsplit(".lora_", 1)[0] for k in tensors}:
        a, b = tensors.get(f"{module}.lora_A.weight"), tensors.get(f"{module}.lora_B.weight")
        if a is None or b is None:
            raise CheckpointError(f"{weights}: {module} has lora_{'A' if a is None else 'B'} missing", path=weights)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != rank or b.shape[1] != rank:
            raise CheckpointError(
                f"{weights}: {module} has lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)}, not rank {rank} "
                f"as adapter_config.json says",
                path=weights,
            )
        inner.update((a.shape[1], b.shape[0]))
    if len(inner) != 1:
        raise CheckpointError(f"{weights}: the LoRA layers have mixed widths {sorted(inner)}", path=weights)
    blocks = 1 + max(int(k.split(".")[1]) for k in tensors)
    return WanLoRA(folder if path.is_dir() else path, tensors, rank, alpha, blocks, inner.pop())


def check_lora_fits(lora: WanLoRA, transformer) -> None:
    """Raise a clear error when ``lora`` was made for another Wan size than ``transformer``."""
    cfg = getattr(transformer, "config", None)
    if cfg is None or not hasattr(transformer, "blocks"):
        raise CheckpointError(
            f"the VIST3A LoRA applies to a diffusers WanTransformer3DModel, got {type(transformer).__name__}; for a "
            f"native ComfyUI Wan MODEL use lora_to_comfy()"
        )
    layers, inner = cfg.num_layers, cfg.num_attention_heads * cfg.attention_head_dim
    if lora.num_blocks > layers or lora.inner_dim != inner:
        raise CheckpointError(
            f"LoRA {lora.path} was made for {lora.size_name} ({lora.num_blocks} blocks, width {lora.inner_dim}) "
            f"but the loaded transformer is {wan_size_name(layers, inner)} ({layers} blocks, width {inner}); use "
            f"vist3a_1.3b_lora_ema with Wan 1.3B and vist3a_14b_lora_ema with Wan 14B",
            path=lora.path,
        )
    for module in lora.modules:
        layer = transformer.get_submodule(module)
        layer = getattr(layer, "base_layer", layer)
        a, b = lora.state_dict[f"{module}.lora_A.weight"], lora.state_dict[f"{module}.lora_B.weight"]
        if (layer.in_features, layer.out_features) != (a.shape[1], b.shape[0]):
            raise CheckpointError(
                f"LoRA {lora.path}: {module} is {a.shape[1]}->{b.shape[0]} but the transformer's layer is "
                f"{layer.in_features}->{layer.out_features}; the LoRA belongs to another model",
                path=lora.path,
            )


def applied_loras(transformer) -> dict[str, dict]:
    """``{adapter_name: {"lora", "strength", "merged"}}`` for the VIST3A LoRAs on ``transformer``."""
    return getattr(transformer, _STATE_ATTR, {})


def _tuner_layers(transformer, adapter_name: str):
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer) and adapter_name in getattr(module, "lora_A", {}):
            yield module


def _merge(transformer, adapter_name: str, merge: bool) -> None:
    for layer in _tuner_layers(transformer, adapter_name):
        if merge and adapter_name not in layer.merged_adapters:
            layer.merge(adapter_names=[adapter_name])
        elif not merge and layer.merged:
            layer.unmerge()


def apply_vist3a_lora(transformer, lora: Union[WanLoRA, str, Path], strength: float = 1.0, *,
                      adapter_name: str = ADAPTER_NAME, merge: bool = False) -> WanLoRA:
    """Patch ``transformer`` in place with ``lora`` at ``strength``; returns the loaded LoRA.

    ``merge=False`` keeps the LoRA as separate PEFT layers (exact and instantly adjustable);
    ``merge=True`` folds it into the weights (no per-step overhead; changing the strength then
    unmerges and re-merges, which in half precision is not bit-exact).  Applying again under the
    same ``adapter_name`` replaces the previous LoRA.
    """
    check_finite(strength, "LoRA strength")
    if not isinstance(lora, WanLoRA):
        lora = load_vist3a_lora(lora)
    check_lora_fits(lora, transformer)
    if adapter_name in applied_loras(transformer):
        remove_vist3a_lora(transformer, adapter_name)
    metadata = {
        "r": lora.rank, "lora_alpha": lora.alpha, "target_modules": lora.modules, "lora_dropout": 0.0,
        "bias": "none", "init_lora_weights": True,
    }
    transformer.load_lora_adapter(dict(lora.state_dict), prefix=None, adapter_name=adapter_name, metadata=metadata)
    state = applied_loras(transformer)
    state[adapter_name] = {"lora": lora, "strength": float(strength), "merged": False}
    setattr(transformer, _STATE_ATTR, state)
    set_lora_strength(transformer, strength, adapter_name=adapter_name, merge=merge)
    return lora


def set_lora_strength(transformer, strength: float, *, adapter_name: str = ADAPTER_NAME,
                      merge: bool | None = None) -> None:
    """Change the strength of an applied VIST3A LoRA (and optionally its merged state)."""
    check_finite(strength, "LoRA strength")
    state = applied_loras(transformer).get(adapter_name)
    if state is None:
        raise CheckpointError(f"no VIST3A LoRA named {adapter_name!r} is applied to this transformer")
    merge = state["merged"] if merge is None else merge
    if state["merged"]:
        _merge(transformer, adapter_name, False)
    transformer.set_adapters([name for name in applied_loras(transformer)],
                             weights=[strength if name == adapter_name else s["strength"]
                                      for name, s in applied_loras(transformer).items()])
    if merge:
        _merge(transformer, adapter_name, True)
    state.update(strength=float(strength), merged=bool(merge))


def remove_vist3a_lora(transformer, adapter_name: str = ADAPTER_NAME) -> None:
    """Take the LoRA off again; the transformer's modules and state dict are as before it was applied."""
    state = applied_loras(transformer)
    if adapter_name not in state:
        return
    if state[adapter_name]["merged"]:
        _merge(transformer, adapter_name, False)
    del state[adapter_name]
    others = [n for n in getattr(transformer, "peft_config", {}) if n != adapter_name]
    if others:
        transformer.delete_adapters(adapter_name)
    else:
        transformer.unload_lora()


def lora_to_comfy(lora: Union[WanLoRA, str, Path]) -> dict[str, torch.Tensor]:
    """The LoRA in ComfyUI's key format for a native Wan model.

    ``blocks.{i}.attn1.to_q.lora_A.weight`` -> ``diffusion_model.blocks.{i}.self_attn.q.lora_A.weight``
    (attn1->self_attn, attn2->cross_attn, to_q/k/v->q/k/v, to_out.0->o), plus one ``.alpha``
    scalar per module: ComfyUI scales by ``alpha / rank`` only when it is present.
    """
    if not isinstance(lora, WanLoRA):
        lora = load_vist3a_lora(lora)
    out: dict[str, torch.Tensor] = {}
    for module in lora.modules:
        block, attn, proj = re.match(r"blocks\.(\d+)\.(attn\d)\.(.+)", module).groups()
        name = f"diffusion_model.blocks.{block}.{_COMFY_ATTN[attn]}.{_COMFY_PROJ[proj]}"
        out[f"{name}.lora_A.weight"] = lora.state_dict[f"{module}.lora_A.weight"]
        out[f"{name}.lora_B.weight"] = lora.state_dict[f"{module}.lora_B.weight"]
        out[f"{name}.alpha"] = torch.tensor(lora.alpha, dtype=torch.float32)
    return out


def save_comfy_lora(lora: Union[WanLoRA, str, Path], path: Union[str, Path]) -> Path:
    """Write :func:`lora_to_comfy` as a safetensors file ComfyUI's LoraLoaderModelOnly reads."""


    path = Path(path)
    tensors = {k: v.contiguous() for k, v in lora_to_comfy(lora).items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    return path
