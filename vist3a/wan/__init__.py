"""Wan 2.1 text-to-video for VIST3A: loading (diffusers folder or ComfyUI files), the VIST3A LoRA,
the official prompt/sampler settings, and tiny random-weight models for tests.

Submodules import diffusers/transformers/peft lazily where they can, so importing this package
stays cheap for code (nodes, CLI) that only needs the constants.
"""

from .loading import (
    WanModels,
    WanPathInfo,
    load_text_encoder_file,
    load_tokenizer,
    load_transformer_file,
    load_vae_file,
    load_wan,
    load_wan_diffusers,
    load_wan_single_files,
    sniff_wan_path,
)
from .lora import (
    WanLoRA,
    apply_vist3a_lora,
    load_vist3a_lora,
    lora_to_comfy,
    remove_vist3a_lora,
    save_comfy_lora,
    set_lora_strength,
)
from .prompts import CAMERA_TEMPLATE, NEGATIVE_PROMPT, build_prompt, empty_prompt_note
from .sampling import (
    Cancelled,
    SamplingInputError,
    decode_latents,
    denormalize_latents,
    encode_prompt,
    normalize_latents,
    sample_latents,
    vae_checks,
)

__all__ = [
    "WanModels", "WanPathInfo", "load_wan", "load_wan_diffusers", "load_wan_single_files", "load_transformer_file",
    "load_vae_file", "load_text_encoder_file", "load_tokenizer", "sniff_wan_path",
    "WanLoRA", "load_vist3a_lora", "apply_vist3a_lora", "set_lora_strength", "remove_vist3a_lora", "lora_to_comfy",
    "save_comfy_lora",
    "CAMERA_TEMPLATE", "NEGATIVE_PROMPT", "build_prompt", "empty_prompt_note",
    "Cancelled", "SamplingInputError", "encode_prompt", "sample_latents", "decode_latents", "normalize_latents",
    "denormalize_latents", "vae_checks",
]
