"""Wan 2.1 architectures: the released configurations, and configs read off a state dict's shapes.

The released configs are the ``config.json`` files of the Wan-AI diffusers repositories, written out as
dicts so that a ComfyUI install, which has no hub access and only single files, can build the models.
ComfyUI's single files carry no config at all: :func:`transformer_config_from_state_dict` and friends read
the architecture off the tensor shapes (diffusers key names).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

from ..errors import CheckpointError

__all__ = [
    "WAN_T2V_1_3B_TRANSFORMER_CONFIG", "WAN_T2V_14B_TRANSFORMER_CONFIG", "WAN_VAE_CONFIG", "UMT5_XXL_CONFIG",
    "HINT_TRANSFORMER", "HINT_VAE", "HINT_TE", "count_blocks", "transformer_config_from_state_dict", "wan_size_name",
    "vae_config_from_state_dict", "umt5_config_from_state_dict",
]

PathLike = Union[str, Path]

_TRANSFORMER_COMMON: dict[str, Any] = {
    "patch_size": [1, 2, 2],
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
    "pos_embed_seq_len": None,
}
WAN_T2V_1_3B_TRANSFORMER_CONFIG: dict[str, Any] = {
    **_TRANSFORMER_COMMON, "num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30,
}
WAN_T2V_14B_TRANSFORMER_CONFIG: dict[str, Any] = {
    **_TRANSFORMER_COMMON, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40,
}
_KNOWN_TRANSFORMERS = {
    "Wan2.1-T2V-1.3B": WAN_T2V_1_3B_TRANSFORMER_CONFIG,
    "Wan2.1-T2V-14B": WAN_T2V_14B_TRANSFORMER_CONFIG,
}

# AutoencoderKLWan's defaults are the Wan 2.1 VAE; spelled out so a change of defaults upstream
# cannot silently change our latent normalisation.
WAN_VAE_CONFIG: dict[str, Any] = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "latents_mean": [
        -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
        0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
    ],
    "latents_std": [
        2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
        3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
    ],
}

# google/umt5-xxl (the text encoder of every Wan 2.1 model).
UMT5_XXL_CONFIG: dict[str, Any] = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_decoder_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-gelu",
    "dense_act_fn": "gelu_new",
    "is_gated_act": True,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
    "scalable_attention": True,
}

# What to give instead, in errors about a wrong or broken file.
HINT_TRANSFORMER = (
    "give the Wan 2.1 T2V diffusion model (e.g. wan2.1_t2v_1.3B_fp16.safetensors from ComfyUI's "
    "models/diffusion_models) or a Wan2.1-T2V-*-Diffusers folder"
)
HINT_VAE = "give the Wan 2.1 VAE (wan_2.1_vae.safetensors from ComfyUI's models/vae)"
HINT_TE = (
    "give the UMT5-XXL text encoder (umt5_xxl_fp8_e4m3fn_scaled.safetensors or umt5_xxl_fp16.safetensors "
    "from ComfyUI's models/text_encoders)"
)


def count_blocks(keys: Iterable[str], prefix: str) -> int:
    """How many numbered blocks ``prefix``0., ``prefix``1., ... the keys hold."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def transformer_config_from_state_dict(sd: Mapping[str, Any],
                                       source: PathLike = "state dict") -> tuple[dict[str, Any], str]:
    """Infer the ``WanTransformer3DModel`` config (and a size name) from diffusers-named shapes.

    The head dim cannot be read off the weights; like ComfyUI we use Wan's fixed 128.  Shapes that
    match a released model return that model's exact config.
    """
    shape = {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in sd.items()}
    inner, in_channels, *patch = shape["patch_embedding.weight"]
    out_features = shape["proj_out.weight"][0]
    patch_volume = patch[0] * patch[1] * patch[2]
    cfg = dict(_TRANSFORMER_COMMON)
    cfg.update(
        patch_size=list(patch),
        in_channels=in_channels,
        out_channels=out_features // patch_volume,
        num_attention_heads=inner // 128,
        attention_head_dim=128,
        text_dim=shape["condition_embedder.text_embedder.linear_1.weight"][1],
        freq_dim=shape["condition_embedder.time_embedder.linear_1.weight"][1],
        ffn_dim=shape["blocks.0.ffn.net.0.proj.weight"][0],
        num_layers=count_blocks(shape, "blocks."),
        cross_attn_norm="blocks.0.norm2.weight" in shape,
        qk_norm="rms_norm_across_heads" if "blocks.0.attn1.norm_q.weight" in shape else None,
    )
    if inner % 128 or not inner:
        raise CheckpointError(
            f"{source}: a transformer width of {inner} is not a multiple of Wan's head size 128, so this is not a "
            f"Wan 2.1 model; {HINT_TRANSFORMER}",
            path=str(source),
        )
    for name, known in _KNOWN_TRANSFORMERS.items():
        if all(cfg[k] == known[k] for k in known):
            return dict(known), name
    return cfg, f"Wan2.1-T2V-custom({cfg['num_layers']}x{inner})"


def wan_size_name(num_layers: int, inner_dim: int) -> str:
    """'Wan2.1-T2V-1.3B' / 'Wan2.1-T2V-14B' for the released sizes, a descriptive string otherwise."""
    for name, known in _KNOWN_TRANSFORMERS.items():
        if known["num_layers"] == num_layers and known["num_attention_heads"] * 128 == inner_dim:
            return name
    return f"a Wan transformer with {num_layers} blocks of width {inner_dim}"


def vae_config_from_state_dict(sd: Mapping[str, Any], source: Path) -> dict[str, Any]:
    """Wan 2.1 VAE config from diffusers-named shapes (only the width and z_dim vary)."""
    base_dim = sd["encoder.conv_in.weight"].shape[0]
    z_dim = sd["post_quant_conv.weight"].shape[0]
    if z_dim != 16:
        raise CheckpointError(
            f"{source} is a VAE with {z_dim} latent channels, but Wan 2.1 and VIST3A use 16; {HINT_VAE}", path=source
        )
    return {**WAN_VAE_CONFIG, "base_dim": int(base_dim), "z_dim": int(z_dim)}


def umt5_config_from_state_dict(sd: Mapping[str, Any]) -> dict[str, Any]:
    vocab, d_model = sd["shared.weight"].shape
    buckets, heads = sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape
    inner = sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in sd
    d_ff = sd["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"].shape[0]
    layers = count_blocks(sd, "encoder.block.")
    return {
        **UMT5_XXL_CONFIG,
        "vocab_size": int(vocab), "d_model": int(d_model), "d_kv": int(inner // heads), "d_ff": int(d_ff),
        "num_layers": layers, "num_decoder_layers": layers, "num_heads": int(heads),
        "relative_attention_num_buckets": int(buckets),
        "feed_forward_proj": "gated-gelu" if gated else "relu", "is_gated_act": gated,
    }
