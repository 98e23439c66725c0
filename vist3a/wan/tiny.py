"""Tiny Wan 2.1 models (the real diffusers/transformers classes, random weights) and writers that
save them in exactly the released layouts.

Tests and the offline demo need every loader path exercised without the multi-GB weights, so the
tiny bundle is saved as a diffusers folder, as ComfyUI single files (original Wan key names, the
text encoder as fp8 "scaled"), and with a VIST3A LoRA in the official PEFT layout.

The tiny shapes deviate from diffusers' own test configs on purpose:

* the transformer is 2 heads x 128 wide with ``freq_dim=256`` and ``text_dim=4096``, because
  ComfyUI's native loader infers a Wan model's head count as ``width // 128`` and assumes those
  two sizes; with them it can infer the tiny diffusion model's architecture from the file;
* the VAE is narrow (base width 8) but keeps the released topology (``dim_mult [1,2,4,4]``, two
  res blocks), the only one diffusers' Wan VAE key converter maps (ComfyUI's native VAELoader
  additionally hard-codes width 96, so it cannot read the tiny VAE; our loader can);
* the UMT5 is 4096 wide (to feed ``text_dim=4096``) with two heads of 8 and two layers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors.torch import save_file

from .configs import UMT5_XXL_CONFIG, WAN_VAE_CONFIG
from .loading import WanModels
from .lora import VIST3A_LORA_TARGETS
from .state_dicts import cast_module
from .tokenizer import tokenizer_from_spm

__all__ = [
    "TINY_TRANSFORMER_CONFIG",
    "TINY_VAE_CONFIG",
    "TINY_UMT5_CONFIG",
    "TINY_SPM_PATH",
    "tiny_tokenizer",
    "build_tiny_wan",
    "save_tiny_wan_diffusers",
    "save_tiny_wan_comfy_single_files",
    "save_tiny_vist3a_lora",
    "transformer_to_original_keys",
    "vae_to_original_keys",
    "VIST3A_LORA_TARGETS",
]

TINY_TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": [1, 2, 2],
    "num_attention_heads": 2,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 64,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 1024,
}
TINY_VAE_CONFIG: dict[str, Any] = {**WAN_VAE_CONFIG, "base_dim": 8}
TINY_UMT5_CONFIG: dict[str, Any] = {
    **UMT5_XXL_CONFIG,
    "d_model": 4096, "d_kv": 8, "num_heads": 2, "d_ff": 32, "num_layers": 2, "num_decoder_layers": 2,
    "vocab_size": None,  # set to the tiny tokenizer's size
}

TINY_SPM_PATH = Path(__file__).parent / "tokenizer_data" / "tiny_umt5_spiece.model"




# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def tiny_tokenizer():
    """The tiny UMT5-style tokenizer (built locally from the shipped sentencepiece model)."""
    return tokenizer_from_spm(TINY_SPM_PATH, source=str(TINY_SPM_PATH))


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def build_tiny_wan(seed: int = 0, dtype: torch.dtype = torch.float32, device: Union[str, torch.device] = "cpu",
                   vae_dtype: torch.dtype = torch.float32) -> WanModels:
    """A complete tiny Wan bundle; the same ``seed`` gives the same weights, the global RNG is untouched."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel.from_config(TINY_TRANSFORMER_CONFIG)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKLWan.from_config(TINY_VAE_CONFIG)
        torch.manual_seed(seed + 2)
        text_encoder = UMT5EncoderModel(UMT5Config(**{**TINY_UMT5_CONFIG, "vocab_size": len(tokenizer)}))
    keep = text_encoder._keep_in_fp32_modules if dtype == torch.float16 else ()
    models = WanModels(
        transformer=cast_module(transformer, dtype, WanTransformer3DModel._keep_in_fp32_modules).eval(),
        vae=cast_module(vae, vae_dtype).eval(),
        text_encoder=cast_module(text_encoder, dtype, keep or ()).eval(),
        tokenizer=tokenizer,
        dtype=dtype,
        name="tiny",
        sources={"tiny": f"seed={seed}"},
    )
    return models.to(device)


# --------------------------------------------------------------------------------------------
# Key maps diffusers -> original Wan / ComfyUI names (the inverse of diffusers' converters)
# --------------------------------------------------------------------------------------------

_TRANSFORMER_TO_ORIGINAL = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    (".attn1.", ".self_attn."),
    (".attn2.", ".cross_attn."),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".ffn.net.0.proj.", ".ffn.0."),
    (".ffn.net.2.", ".ffn.2."),
    (".norm2.", ".norm3."),  # diffusers' norm2 is the cross-attention norm, Wan's norm3
)


def transformer_to_original_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``WanTransformer3DModel`` state dict to the original Wan names ComfyUI uses."""
    out = {}
    for key, value in state_dict.items():
        new = key
        if new == "scale_shift_table":
            new = "head.modulation"
        elif new.endswith(".scale_shift_table"):
            new = new[: -len("scale_shift_table")] + "modulation"
        elif new.startswith("proj_out."):
            new = "head.head." + new[len("proj_out."):]
        for old, repl in _TRANSFORMER_TO_ORIGINAL:
            new = new.replace(old, repl)
        out[new] = value
    return out


_RESNET_TO_ORIGINAL = {
    "norm1.gamma": "residual.0.gamma", "conv1.weight": "residual.2.weight", "conv1.bias": "residual.2.bias",
    "norm2.gamma": "residual.3.gamma", "conv2.weight": "residual.6.weight", "conv2.bias": "residual.6.bias",
    "conv_shortcut.weight": "shortcut.weight", "conv_shortcut.bias": "shortcut.bias",
}


def _resnet(rest: str) -> str:
    return _RESNET_TO_ORIGINAL.get(rest, rest)


def vae_to_original_keys(state_dict: dict[str, torch.Tensor], num_res_blocks: int = 2) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``AutoencoderKLWan`` state dict to the original Wan VAE names
    (``wan_2.1_vae.safetensors``): flat ``downsamples``/``upsamples`` lists, ``middle``, ``head``."""
    out = {}
    per_up_block = num_res_blocks + 2  # num_res_blocks + 1 resnets, then one upsampler
    for key, value in state_dict.items():
        parts = key.split(".")
        side = parts[0]
        if key.startswith(("quant_conv.", "post_quant_conv.")):
            new = ("conv1." if key.startswith("quant_conv.") else "conv2.") + parts[-1]
        elif parts[1] == "conv_in":
            new = f"{side}.conv1.{parts[-1]}"
        elif parts[1] == "norm_out":
            new = f"{side}.head.0.gamma"
        elif parts[1] == "conv_out":
            new = f"{side}.head.2.{parts[-1]}"
        elif parts[1] == "mid_block":
            kind, idx, rest = parts[2], int(parts[3]), ".".join(parts[4:])
            new = (f"{side}.middle.{2 * idx}.{_resnet(rest)}" if kind == "resnets" else f"{side}.middle.1.{rest}")
        elif parts[1] == "down_blocks":
            new = f"encoder.downsamples.{parts[2]}.{_resnet('.'.join(parts[3:]))}"
        elif parts[1] == "up_blocks":
            block, kind, idx, rest = int(parts[2]), parts[3], int(parts[4]), ".".join(parts[5:])
            if kind == "resnets":
                new = f"decoder.upsamples.{block * per_up_block + idx}.{_resnet(rest)}"
            else:
                new = f"decoder.upsamples.{block * per_up_block + num_res_blocks + 1}.{rest}"
        else:
            raise KeyError(f"unexpected Wan VAE key {key}")
        out[new] = value
    return out


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def _models(models: Optional[WanModels], seed: int) -> WanModels:
    return models if models is not None else build_tiny_wan(seed=seed)


def save_tiny_wan_diffusers(directory: Union[str, Path], models: Optional[WanModels] = None, seed: int = 0) -> Path:
    """Write a real diffusers ``WanPipeline`` folder (model_index.json, transformer/, vae/, ...)."""
    from diffusers import UniPCMultistepScheduler, WanPipeline

    models = _models(models, seed)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                        num_train_timesteps=1000)
    pipe = WanPipeline(tokenizer=models.tokenizer, text_encoder=models.text_encoder, vae=models.vae,
                       transformer=models.transformer, scheduler=scheduler)
    directory = Path(directory)
    pipe.save_pretrained(str(directory))
    return directory


def _fp8_scaled(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor scaled float8_e4m3fn, as ComfyUI's ``*_fp8_e4m3fn_scaled`` files store Linears."""
    w = weight.detach().to(torch.float32)
    scale = (w.abs().max() / 448.0).clamp(min=1e-12)
    return (w / scale).to(torch.float8_e4m3fn), scale.reshape(())


def save_tiny_wan_comfy_single_files(directory: Union[str, Path], models: Optional[WanModels] = None,
                                     seed: int = 0, dtype: torch.dtype = torch.float32,
                                     text_encoder_format: str = "fp8_scaled") -> dict[str, Path]:
    """Write ComfyUI-style single files: diffusion model and VAE with original Wan key names, and the
    UMT5 encoder (HF key names, the tiny tokenizer embedded as ``spiece_model``) as fp8 "scaled" or
    plain ``dtype``.

    Returns ``{"transformer": ..., "vae": ..., "text_encoder": ...}``.  ``text_encoder_format`` is
    ``"fp8_scaled"`` (quantised Linears + ``scale_weight`` + ``scaled_fp8`` marker) or ``"plain"``.
    """

    if text_encoder_format not in ("fp8_scaled", "plain"):
        raise ValueError(f"text_encoder_format must be 'fp8_scaled' or 'plain', got {text_encoder_format!r}")
    if text_encoder_format == "fp8_scaled" and not hasattr(torch, "float8_e4m3fn"):
        text_encoder_format = "plain"
    models = _models(models, seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    def cast(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", dtype).contiguous() for k, v in sd.items()}

    te_suffix = "fp8_e4m3fn_scaled" if text_encoder_format == "fp8_scaled" else "plain"
    paths = {
        "transformer": directory / "wan2.1_t2v_tiny.safetensors",
        "vae": directory / "wan_2.1_vae_tiny.safetensors",
        "text_encoder": directory / f"umt5_tiny_{te_suffix}.safetensors",
    }
    save_file(cast(transformer_to_original_keys(models.transformer.state_dict())), str(paths["transformer"]),
              metadata={"format": "pt"})
    save_file(cast(vae_to_original_keys(models.vae.state_dict(), models.vae.config.num_res_blocks)), str(paths["vae"]),
              metadata={"format": "pt"})

    te: dict[str, torch.Tensor] = {}
    for key, value in models.text_encoder.state_dict().items():
        if key == "encoder.embed_tokens.weight":
            continue  # tied to shared.weight; ComfyUI's files carry only shared.weight
        is_linear = key.endswith(".weight") and any(
            f".{n}.weight" in key for n in ("q", "k", "v", "o", "wi_0", "wi_1", "wo", "wi"))
        if text_encoder_format == "fp8_scaled" and is_linear:
            te[key], te[key[: -len(".weight")] + ".scale_weight"] = _fp8_scaled(value)
        else:
            te[key] = value.detach().to("cpu", dtype).contiguous()
    if text_encoder_format == "fp8_scaled":
        te["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    te["spiece_model"] = torch.frombuffer(bytearray(TINY_SPM_PATH.read_bytes()), dtype=torch.uint8).clone()
    save_file(te, str(paths["text_encoder"]), metadata={"format": "pt"})
    return paths


def save_tiny_vist3a_lora(directory: Union[str, Path], transformer, seed: int = 0, rank: int = 8,
                          alpha: int = 16, b_std: float = 0.05) -> Path:
    """Write a random LoRA in the official VIST3A layout (``PeftModel.save_pretrained`` of train_vdm.py).

    Unlike a freshly initialised PEFT adapter, ``lora_B`` is random too, so applying it changes
    the outputs and tests can see it.
    """

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for i, block in enumerate(transformer.blocks):
        for target in VIST3A_LORA_TARGETS:
            layer = block.get_submodule(target)
            a = torch.randn(rank, layer.in_features, generator=gen) / layer.in_features ** 0.5
            b = torch.randn(layer.out_features, rank, generator=gen) * b_std
            tensors[f"base_model.model.blocks.{i}.{target}.lora_A.weight"] = a.contiguous()
            tensors[f"base_model.model.blocks.{i}.{target}.lora_B.weight"] = b.contiguous()
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "alpha_pattern": {}, "auto_mapping": {
            "base_model_class": "WanTransformer3DModel",
            "parent_library": "diffusers.models.transformers.transformer_wan"},
        "base_model_name_or_path": None, "bias": "none", "corda_config": None, "eva_config": None,
        "exclude_modules": None, "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "layer_replication": None, "layers_pattern": None, "layers_to_transform": None, "loftq_config": {},
        "lora_alpha": alpha, "lora_bias": False, "lora_dropout": 0.0, "megatron_config": None,
        "megatron_core": "megatron.core", "modules_to_save": None, "peft_type": "LORA", "qalora_group_size": 16,
        "r": rank, "rank_pattern": {}, "revision": None, "target_modules": list(VIST3A_LORA_TARGETS),
        "target_parameters": None, "task_type": None, "trainable_token_indices": None, "use_dora": False,
        "use_qalora": False, "use_rslora": False,
    }
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return directory
