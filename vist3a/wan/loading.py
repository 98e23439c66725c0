"""Load Wan 2.1 T2V (transformer, VAE, UMT5 text encoder, tokenizer) from the released layouts.

Two layouts exist in the wild and both must work offline:

* the diffusers folder ``Wan-AI/Wan2.1-T2V-{1.3B,14B}-Diffusers`` (``model_index.json`` plus
  ``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``), loaded with the
  classes' own ``from_pretrained(local_files_only=True)``;
* ComfyUI's single files (``wan2.1_t2v_1.3B_fp16.safetensors``, ``wan_2.1_vae.safetensors``,
  ``umt5_xxl_fp8_e4m3fn_scaled.safetensors``) which carry the original Wan key names and no
  config.  The architecture is read off the tensor shapes, the keys are mapped with diffusers'
  own converters (``convert_wan_transformer_to_diffusers`` / ``convert_wan_vae_to_diffusers``),
  and ComfyUI's fp8 "scaled" weights are dequantised (``weight.float() * scale_weight``).

``diffusers``' ``from_single_file`` is not used: it wants the config from the hub or from a
folder, while a ComfyUI install has neither; building the model from an inferred config and
assigning the converted tensors is the same operation without the network.

diffusers / transformers / accelerate / sentencepiece are imported inside the loaders on purpose:
they take seconds to import, and detection, ``info`` and the nodes' file lists must not pay for them.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import torch
from safetensors import safe_open

from ..errors import CheckpointError
from ..weights.detect import classify_wan
from ..weights.readers import read_pth_state_dict, read_safetensors_header

__all__ = [
    "WanModels",
    "WanPathInfo",
    "WAN_T2V_1_3B_TRANSFORMER_CONFIG",
    "WAN_T2V_14B_TRANSFORMER_CONFIG",
    "WAN_VAE_CONFIG",
    "UMT5_XXL_CONFIG",
    "sniff_wan_path",
    "load_wan",
    "load_wan_diffusers",
    "load_wan_single_files",
    "load_transformer_file",
    "load_vae_file",
    "load_text_encoder_file",
    "load_tokenizer",
    "tokenizer_from_spm",
    "read_state_dict",
    "dequantize_comfy_fp8",
    "cast_module",
    "transformer_config_from_state_dict",
    "wan_size_name",
]

PathLike = Union[str, "Path"]

# --------------------------------------------------------------------------------------------
# Released configurations (the config.json files of the Wan-AI diffusers repos, as dicts, so a
# ComfyUI install needs no hub access to build the models).
# --------------------------------------------------------------------------------------------

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

_FP8_DTYPES = tuple(
    getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
    if hasattr(torch, name)
)
# Side tensors of ComfyUI's quantised files: consumed by the dequantiser, never model weights.
_QUANT_SIDE_SUFFIXES = (".scale_weight", ".scale_input", ".weight_scale", ".input_scale", ".comfy_quant")
_SPIECE_KEY = "spiece_model"

_HINT_TRANSFORMER = (
    "give the Wan 2.1 T2V diffusion model (e.g. wan2.1_t2v_1.3B_fp16.safetensors from ComfyUI's "
    "models/diffusion_models) or a Wan2.1-T2V-*-Diffusers folder"
)
_HINT_VAE = "give the Wan 2.1 VAE (wan_2.1_vae.safetensors from ComfyUI's models/vae)"
_HINT_TE = (
    "give the UMT5-XXL text encoder (umt5_xxl_fp8_e4m3fn_scaled.safetensors or umt5_xxl_fp16.safetensors "
    "from ComfyUI's models/text_encoders)"
)


# --------------------------------------------------------------------------------------------
# The bundle
# --------------------------------------------------------------------------------------------


@dataclass
class WanModels:
    """Everything text -> Wan latent -> RGB frames needs, plus where and in what precision it runs.

    Any component may be ``None`` (a sampler-only or decoder-only bundle); the functions that need
    a missing one say so.  ``dtype`` is the transformer's compute dtype; the VAE keeps its own
    (``vae.dtype``, float32 by default, because the Wan VAE is sensitive to half precision).
    """

    transformer: Any = None
    vae: Any = None
    text_encoder: Any = None
    tokenizer: Any = None
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    name: str = "Wan2.1-T2V"
    sources: dict[str, str] = field(default_factory=dict)

    def to(self, device: Union[str, torch.device]) -> "WanModels":
        """Move every loaded component to ``device`` (in place) and return self."""
        device = torch.device(device)
        for module in (self.transformer, self.vae, self.text_encoder):
            if module is not None:
                module.to(device)
        self.device = device
        return self

    def require(self, *names: str, purpose: str) -> None:
        """Raise a clear error when a component needed for ``purpose`` was not loaded."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise CheckpointError(
                f"{purpose} needs the Wan {' and '.join(missing)}, which this bundle ({self.name}) does not "
                f"have; load it with vist3a.wan.load_wan(...) or the Wan loader node"
            )


@dataclass(frozen=True)
class WanPathInfo:
    """What a user-supplied path is, as far as the Wan loaders are concerned."""

    path: Path
    kind: str  # diffusers_folder | lora_folder | tokenizer | unknown | a WanFile kind (transformer, vae, ...)
    key_format: Optional[str] = None  # "original" (Wan/ComfyUI names) | "diffusers"
    detail: str = ""


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def _require_exists(path: PathLike, what: str, hint: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{what} not found: {path} does not exist; {hint}", path=path)
    return path


def _file_tensors(path: Path) -> Mapping[str, Any]:
    """Tensor names -> shape/dtype without reading the data (safetensors header / mmap'ed .pth)."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return read_safetensors_header(path).tensors
    if suffix in (".pth", ".pt", ".ckpt", ".bin"):
        return read_pth_state_dict(path, mmap=True)
    if suffix == ".gguf":
        raise CheckpointError(
            f"{path} is a GGUF-quantised file, which the VIST3A loaders do not read; use the fp16/bf16 or "
            f"fp8 safetensors release of the same model",
            path=path,
        )
    raise CheckpointError(
        f"{path} has an unsupported extension {suffix or '(none)'}; expected a .safetensors file", path=path
    )


def read_state_dict(path: PathLike, keys: Optional[Iterable[str]] = None) -> dict[str, torch.Tensor]:
    """Read all tensors (or only ``keys``) of a .safetensors / weights-only .pth file onto the CPU."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        sd = read_pth_state_dict(path, mmap=True)
        return sd if keys is None else {k: sd[k] for k in keys}
    with safe_open(str(path), framework="pt") as f:
        names = list(f.keys()) if keys is None else list(keys)
        return {k: f.get_tensor(k) for k in names}


def _strip_prefix(keys: Iterable[str], marker: str) -> Optional[str]:
    """The prefix in front of ``marker`` in one of ``keys`` (e.g. 'model.diffusion_model.')."""
    for k in keys:
        if k.endswith(marker):
            return k[: -len(marker)]
    return None


def sniff_wan_path(path: PathLike) -> WanPathInfo:
    """Say what ``path`` is: a diffusers Wan folder, a LoRA folder, a tokenizer, or which single file.

    Only headers are read, so this is cheap enough to run on every node refresh.  A missing path
    raises :class:`CheckpointError`; anything unrecognised comes back as ``kind="unknown"``.
    """
    path = _require_exists(path, "Wan model path", _HINT_TRANSFORMER)
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return WanPathInfo(path, "diffusers_folder", "diffusers", "diffusers pipeline folder")
        if (path / "adapter_config.json").is_file():
            return WanPathInfo(path, "lora_folder", None, "PEFT LoRA folder")
        if any((path / n).is_file() for n in ("tokenizer.json", "spiece.model", "tokenizer_config.json")):
            return WanPathInfo(path, "tokenizer", None, "tokenizer folder")
        if (path / "config.json").is_file():
            return WanPathInfo(path, "unknown", "diffusers", "a single model folder (config.json), not a pipeline")
        return WanPathInfo(path, "unknown", None, "a folder without model_index.json or config.json")
    if path.suffix.lower() == ".model":
        return WanPathInfo(path, "tokenizer", None, "sentencepiece model")
    found = classify_wan(_file_tensors(path))
    if found is None:
        return WanPathInfo(path, "unknown", None, "not a Wan 2.1 component")
    return WanPathInfo(path, found.kind, found.key_format, found.detail)


def _wrong_kind_message(info: WanPathInfo, wanted: str, hint: str) -> str:
    found = {
        "transformer": "a Wan diffusion model",
        "transformer_i2v": "a Wan image-to-video diffusion model (VIST3A needs the text-to-video T2V model)",
        "transformer_vace": "a Wan VACE diffusion model (VIST3A needs the plain T2V model)",
        "vae": "a Wan VAE",
        "vae_wan22": "the Wan 2.2 VAE (VIST3A needs the Wan 2.1 VAE, wan_2.1_vae.safetensors)",
        "text_encoder": "a T5/UMT5 text encoder",
        "text_encoder_wan": "a UMT5 text encoder with the original Wan key names (use ComfyUI's umt5_xxl_*.safetensors)",
        "diffusers_folder": "a diffusers pipeline folder",
        "lora_folder": "a LoRA folder",
        "tokenizer": "a tokenizer",
    }.get(info.kind, f"not a Wan 2.1 component ({info.detail})")
    return f"{info.path} is {found}, not {wanted}; {hint}"


def _expect_kind(path: PathLike, kind: str, wanted: str, hint: str) -> WanPathInfo:
    info = sniff_wan_path(path)
    if info.kind != kind:
        raise CheckpointError(_wrong_kind_message(info, wanted, hint), path=info.path)
    return info


# --------------------------------------------------------------------------------------------
# ComfyUI fp8 dequantisation
# --------------------------------------------------------------------------------------------


def dequantize_comfy_fp8(state_dict: Mapping[str, torch.Tensor], source: PathLike = "state dict",
                         dtype: torch.dtype = torch.float32, keep_fp32: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Turn ComfyUI's fp8 weights back into ``dtype`` tensors and drop the quantisation side tensors.

    ComfyUI's "scaled" files store ``X.weight`` as float8 together with a per-tensor float32
    ``X.scale_weight`` (newer files: ``X.weight_scale`` + ``X.comfy_quant``); the real weight is
    ``weight.float() * scale``, rounded once into ``dtype`` (float32 for names in ``keep_fp32``),
    so a 14B fp8 file never exists in float32 all at once.  Plain fp8 files have no scale
    (scale 1).  Non-fp8 tensors pass through unchanged; ``scaled_fp8`` / ``spiece_model`` markers
    are removed.
    """
    keep_fp32 = tuple(keep_fp32 or ())
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in ("scaled_fp8", _SPIECE_KEY) or key.endswith(_QUANT_SIDE_SUFFIXES):
            continue
        if value.dtype in _FP8_DTYPES:
            base = key[: -len(".weight")] if key.endswith(".weight") else key
            quant = state_dict.get(f"{base}.comfy_quant")
            if quant is not None:
                fmt = json.loads(bytes(quant.to(torch.uint8).tolist()).decode("utf-8")).get("format", "")
                if not fmt.startswith("float8"):
                    raise CheckpointError(
                        f"{source}: tensor {key} uses ComfyUI quantisation format {fmt!r}, which VIST3A cannot "
                        f"dequantise; use the fp16/bf16 or fp8 release of the model",
                        path=str(source), key=key,
                    )
            scale = state_dict.get(f"{base}.scale_weight", state_dict.get(f"{base}.weight_scale"))
            weight = value.to(torch.float32)
            if scale is not None:
                if scale.numel() != 1:
                    raise CheckpointError(
                        f"{source}: tensor {key} has a {tuple(scale.shape)} scale, but only per-tensor fp8 "
                        f"scales are supported; use the fp16/bf16 release of the model",
                        path=str(source), key=key,
                    )
                weight = weight * scale.to(torch.float32).reshape(())
            value = weight.to(_target_dtype(key, dtype, keep_fp32))
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------
# Building a model from a state dict
# --------------------------------------------------------------------------------------------


def _target_dtype(name: str, dtype: torch.dtype, keep_fp32: Iterable[str]) -> torch.dtype:
    parts = name.split(".")
    return torch.float32 if any(m in parts for m in keep_fp32) else dtype


def cast_module(module: torch.nn.Module, dtype: torch.dtype, keep_fp32: Iterable[str] = ()) -> torch.nn.Module:
    """Cast floating parameters/buffers to ``dtype`` except the modules ``from_pretrained`` keeps in
    float32 (diffusers' ``_keep_in_fp32_modules``), so every loading path ends in the same precision."""
    keep_fp32 = tuple(keep_fp32 or ())
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if torch.is_floating_point(tensor):
            tensor.data = tensor.data.to(_target_dtype(name, dtype, keep_fp32))
    return module


def _assign(model: torch.nn.Module, sd: dict[str, torch.Tensor], dtype: torch.dtype, keep_fp32: Iterable[str],
            source: Path, what: str, optional: Iterable[str] = ()) -> torch.nn.Module:
    """Put ``sd`` into a meta-initialised ``model`` (cast like ``from_pretrained`` does) or explain."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    optional = set(optional)
    missing = sorted(set(expected) - set(sd) - optional)
    unexpected = sorted(set(sd) - set(expected))
    wrong = sorted(k for k in set(sd) & set(expected) if tuple(sd[k].shape) != expected[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with the wrong shape (e.g. {k}: {tuple(sd[k].shape)} vs {expected[k]})")
        raise CheckpointError(
            f"{source} does not match the {what} its shapes describe: {', '.join(parts)}; the file is "
            f"incomplete or a different model, re-download it",
            path=source,
        )
    keep_fp32 = tuple(keep_fp32 or ())
    cast = {}
    for key in list(sd):  # pop as we go: peak memory stays near one copy of the weights
        value = sd.pop(key)
        cast[key] = value.to(_target_dtype(key, dtype, keep_fp32)) if torch.is_floating_point(value) else value
    model.load_state_dict(cast, strict=False, assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    on_meta = [n for n, p in model.named_parameters() if p.is_meta] + [n for n, b in model.named_buffers() if b.is_meta]
    if on_meta:
        raise CheckpointError(
            f"{source} left {len(on_meta)} {what} tensors uninitialised (e.g. {on_meta[0]}); the file is incomplete",
            path=source,
        )
    return model.eval()


def _count_blocks(keys: Iterable[str], prefix: str) -> int:
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
        num_layers=_count_blocks(shape, "blocks."),
        cross_attn_norm="blocks.0.norm2.weight" in shape,
        qk_norm="rms_norm_across_heads" if "blocks.0.attn1.norm_q.weight" in shape else None,
    )
    if inner % 128 or not inner:
        raise CheckpointError(
            f"{source}: a transformer width of {inner} is not a multiple of Wan's head size 128, so this is not a "
            f"Wan 2.1 model; {_HINT_TRANSFORMER}",
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


def load_transformer_file(path: PathLike, dtype: torch.dtype = torch.bfloat16,
                          device: Union[str, torch.device] = "cpu"):
    """Load a Wan 2.1 T2V diffusion model from one ComfyUI/original-format (or diffusers-format) file."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    info = _expect_kind(path, "transformer", "a Wan diffusion model", _HINT_TRANSFORMER)
    keep = WanTransformer3DModel._keep_in_fp32_modules
    sd = dequantize_comfy_fp8(read_state_dict(info.path), info.path, dtype, keep)
    if info.key_format == "original":
        sd = convert_wan_transformer_to_diffusers(sd)
    cfg, name = transformer_config_from_state_dict(sd, info.path)
    with init_empty_weights():
        model = WanTransformer3DModel.from_config(cfg)
    _assign(model, sd, dtype, keep, info.path, f"{name} transformer")
    model._vist3a_size_name = name
    return model.to(device)


def _vae_config_from_state_dict(sd: Mapping[str, torch.Tensor], source: Path) -> dict[str, Any]:
    """Wan 2.1 VAE config from diffusers-named shapes (only the width and z_dim vary)."""
    base_dim = sd["encoder.conv_in.weight"].shape[0]
    z_dim = sd["post_quant_conv.weight"].shape[0]
    if z_dim != 16:
        raise CheckpointError(
            f"{source} is a VAE with {z_dim} latent channels, but Wan 2.1 and VIST3A use 16; {_HINT_VAE}", path=source
        )
    return {**WAN_VAE_CONFIG, "base_dim": int(base_dim), "z_dim": int(z_dim)}


def load_vae_file(path: PathLike, dtype: torch.dtype = torch.float32, device: Union[str, torch.device] = "cpu"):
    """Load the Wan 2.1 VAE from one ComfyUI/original-format (or diffusers-format) file."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    info = _expect_kind(path, "vae", "the Wan 2.1 VAE", _HINT_VAE)
    sd = dequantize_comfy_fp8(read_state_dict(info.path), info.path, dtype)
    if info.key_format == "original":
        sd = convert_wan_vae_to_diffusers(sd)
    cfg = _vae_config_from_state_dict(sd, info.path)
    with init_empty_weights():
        model = AutoencoderKLWan.from_config(cfg)
    _assign(model, sd, dtype, AutoencoderKLWan._keep_in_fp32_modules or (), info.path, "Wan 2.1 VAE")
    return model.to(device)


def _umt5_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    vocab, d_model = sd["shared.weight"].shape
    buckets, heads = sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape
    inner = sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in sd
    d_ff = sd["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"].shape[0]
    layers = _count_blocks(sd, "encoder.block.")
    return {
        **UMT5_XXL_CONFIG,
        "vocab_size": int(vocab), "d_model": int(d_model), "d_kv": int(inner // heads), "d_ff": int(d_ff),
        "num_layers": layers, "num_decoder_layers": layers, "num_heads": int(heads),
        "relative_attention_num_buckets": int(buckets),
        "feed_forward_proj": "gated-gelu" if gated else "relu", "is_gated_act": gated,
    }


def load_text_encoder_file(path: PathLike, dtype: torch.dtype = torch.bfloat16,
                           device: Union[str, torch.device] = "cpu"):
    """Load the UMT5 encoder from a ComfyUI text-encoder file (fp16/bf16/fp32 or fp8 "scaled").

    Returns ``(text_encoder, spm_bytes_or_None)``; the second item is the sentencepiece model that
    ComfyUI embeds in these files as the ``spiece_model`` tensor, used to build the tokenizer.
    """
    from accelerate import init_empty_weights
    from transformers import UMT5Config, UMT5EncoderModel

    info = _expect_kind(path, "text_encoder", "the UMT5 text encoder", _HINT_TE)
    raw = read_state_dict(info.path)
    spm = raw.get(_SPIECE_KEY)
    spm_bytes = bytes(spm.to(torch.uint8).numpy().tobytes()) if spm is not None else None
    keep = UMT5EncoderModel._keep_in_fp32_modules if dtype == torch.float16 else ()
    sd = dequantize_comfy_fp8(raw, info.path, dtype, keep or ())
    del raw
    prefix = _strip_prefix(sd, "encoder.final_layer_norm.weight") or ""
    sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight" not in sd or \
            "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in sd:
        raise CheckpointError(
            f"{info.path} is a T5 encoder without per-layer relative attention (plain T5, not UMT5); "
            f"Wan 2.1 needs UMT5-XXL, {_HINT_TE}",
            path=info.path,
        )
    if "shared.weight" not in sd and "encoder.embed_tokens.weight" in sd:
        sd["shared.weight"] = sd["encoder.embed_tokens.weight"]
    cfg = UMT5Config(**_umt5_config_from_state_dict(sd))
    with init_empty_weights():
        model = UMT5EncoderModel(cfg)
    sd.pop("encoder.embed_tokens.weight", None)
    _assign(model, sd, dtype, keep or (), info.path, "UMT5 text encoder", optional=["encoder.embed_tokens.weight"])
    return model.to(device), spm_bytes


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def _proto_fields(buf: bytes):
    """(field number, value) pairs of one protobuf message; enough to read sentencepiece's ModelProto.

    Written out because the only alternative, the ``protobuf`` package, would be a dependency for
    reading two fields.
    """
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def tokenizer_from_spm(spm: Union[bytes, PathLike], source: str = "sentencepiece model"):
    """A transformers ``T5Tokenizer`` equivalent to a (U)MT5 sentencepiece model.

    Vocabulary, scores and piece types come from the model itself, and its precompiled
    normaliser (NFKC tables) is kept, so ids match sentencepiece's own ``encode`` + ``</s>``,
    which is what ComfyUI feeds its UMT5 and what the diffusers tokenizer produces.
    """
    import sentencepiece
    from tokenizers import AddedToken
    from transformers import T5Tokenizer

    data = Path(spm).read_bytes() if not isinstance(spm, (bytes, bytearray)) else bytes(spm)
    try:
        processor = sentencepiece.SentencePieceProcessor(model_proto=data)
    except Exception as exc:
        raise CheckpointError(f"{source} is not a valid sentencepiece model ({exc})") from exc
    if (processor.pad_id(), processor.eos_id(), processor.unk_id()) != (0, 1, 2):
        raise CheckpointError(
            f"{source} is not a T5/UMT5 sentencepiece model (pad/eos/unk ids are "
            f"{processor.pad_id()}/{processor.eos_id()}/{processor.unk_id()}, expected 0/1/2)"
        )
    charsmap = None
    pieces: list[tuple[str, float]] = []
    special: list[AddedToken] = []
    for number, value in _proto_fields(data):
        if number == 1:  # SentencePiece {1: piece, 2: score, 3: type}
            piece, score, kind = "", 0.0, 1
            for n, v in _proto_fields(value):
                if n == 1:
                    piece = v.decode("utf-8")
                elif n == 2:
                    score = struct.unpack("<f", v)[0]
                elif n == 3:
                    kind = v
            if kind in (3, 4) and len(pieces) > 2:  # control / user-defined beyond pad, eos, unk
                special.append(AddedToken(piece, normalized=False, special=kind == 3))
            pieces.append((piece, score))
        elif number == 3:  # NormalizerSpec {2: precompiled_charsmap}
            charsmap = next((v for n, v in _proto_fields(value) if n == 2), None) or None
    if len(pieces) != processor.get_piece_size():
        raise CheckpointError(
            f"{source}: could not read its vocabulary ({len(pieces)} of {processor.get_piece_size()} pieces)")
    return T5Tokenizer(
        vocab=pieces,
        _spm_precompiled_charsmap=charsmap,
        extra_ids=0,
        additional_special_tokens=special or None,
        model_max_length=512,
    )


def load_tokenizer(path: PathLike):
    """A UMT5 tokenizer from a tokenizer folder, a diffusers Wan folder, a ``.model`` file, or a text
    encoder file that embeds ``spiece_model``."""
    from transformers import AutoTokenizer

    path = _require_exists(path, "tokenizer", "give the tokenizer/ folder of a Wan2.1-T2V-*-Diffusers download")
    if path.is_dir():
        folder = path / "tokenizer" if (path / "model_index.json").is_file() else path
        if not any((folder / n).is_file() for n in ("tokenizer.json", "spiece.model", "tokenizer_config.json")):
            raise CheckpointError(
                f"{folder} has no tokenizer files (tokenizer.json / spiece.model); give the tokenizer/ folder "
                f"of a Wan2.1-T2V-*-Diffusers download",
                path=folder,
            )
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if path.suffix.lower() == ".model":
        return tokenizer_from_spm(path, source=str(path))
    if path.suffix.lower() == ".safetensors":
        sd = read_state_dict(path, keys=[k for k in _file_tensors(path) if k == _SPIECE_KEY])
        if _SPIECE_KEY in sd:
            return tokenizer_from_spm(bytes(sd[_SPIECE_KEY].to(torch.uint8).numpy().tobytes()), source=str(path))
    raise CheckpointError(
        f"{path} holds no tokenizer (no tokenizer folder, .model file or embedded spiece_model); give the "
        f"tokenizer/ folder of a Wan2.1-T2V-*-Diffusers download",
        path=path,
    )


# --------------------------------------------------------------------------------------------
# Whole bundles
# --------------------------------------------------------------------------------------------


def _check_component_folder(root: Path, name: str, cls_hint: str) -> None:
    folder = root / name
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{folder} has no config.json, so {root} is not a complete diffusers Wan folder (expected {cls_hint} "
            f"there as in Wan-AI/Wan2.1-T2V-1.3B-Diffusers); re-download the folder or use the ComfyUI single files",
            path=folder,
        )


def load_wan_diffusers(folder: PathLike, dtype: torch.dtype = torch.bfloat16, vae_dtype: torch.dtype = torch.float32,
                       text_encoder_dtype: Optional[torch.dtype] = None, device: Union[str, torch.device] = "cpu",
                       components: Iterable[str] = ("transformer", "vae", "text_encoder", "tokenizer")) -> WanModels:
    """Load a ``Wan-AI/Wan2.1-T2V-*-Diffusers`` folder (offline; the scheduler config is not used,
    sampling builds the official UniPC scheduler itself)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    root = _require_exists(folder, "Wan diffusers folder", _HINT_TRANSFORMER)
    if not root.is_dir() or not (root / "model_index.json").is_file():
        raise CheckpointError(
            f"{root} has no model_index.json, so it is not a diffusers pipeline folder; expected the layout of "
            f"Wan-AI/Wan2.1-T2V-1.3B-Diffusers (model_index.json, transformer/, vae/, text_encoder/, tokenizer/)",
            path=root,
        )
    index = json.loads((root / "model_index.json").read_text())
    two_stage = index.get("transformer_2") not in (None, [None, None])
    if index.get("_class_name") not in ("WanPipeline", None) or two_stage:
        kind = f"{index.get('_class_name')} folder" + (" with two transformers (Wan 2.2)" if two_stage else "")
        raise CheckpointError(
            f"{root} is a {kind}; VIST3A needs a Wan 2.1 text-to-video folder "
            f"(Wan-AI/Wan2.1-T2V-1.3B-Diffusers or -14B-Diffusers)",
            path=root,
        )
    components = tuple(components)
    te_dtype = text_encoder_dtype or dtype
    models = WanModels(dtype=dtype, device=torch.device(device), sources={"folder": str(root)})
    if "transformer" in components:
        _check_component_folder(root, "transformer", "WanTransformer3DModel")
        models.transformer = WanTransformer3DModel.from_pretrained(
            str(root), subfolder="transformer", torch_dtype=dtype, local_files_only=True).eval()
        cfg = models.transformer.config
        models.name = wan_size_name(cfg.num_layers, cfg.num_attention_heads * cfg.attention_head_dim)
    if "vae" in components:
        _check_component_folder(root, "vae", "AutoencoderKLWan")
        models.vae = AutoencoderKLWan.from_pretrained(
            str(root), subfolder="vae", torch_dtype=vae_dtype, local_files_only=True).eval()
    if "text_encoder" in components:
        _check_component_folder(root, "text_encoder", "UMT5EncoderModel")
        models.text_encoder = UMT5EncoderModel.from_pretrained(
            str(root), subfolder="text_encoder", dtype=te_dtype, local_files_only=True).eval()
    if "tokenizer" in components:
        models.tokenizer = load_tokenizer(root)
    return models.to(device)


def load_wan_single_files(transformer: Optional[PathLike] = None, vae: Optional[PathLike] = None,
                          text_encoder: Optional[PathLike] = None, tokenizer: Optional[PathLike] = None,
                          dtype: torch.dtype = torch.bfloat16, vae_dtype: torch.dtype = torch.float32,
                          text_encoder_dtype: Optional[torch.dtype] = None,
                          device: Union[str, torch.device] = "cpu") -> WanModels:
    """Load ComfyUI's single files; any of them may be omitted.

    The tokenizer comes from ``tokenizer`` (a tokenizer folder, a diffusers Wan folder, or a
    ``spiece.model``) or else from the ``spiece_model`` embedded in the text-encoder file; with
    neither, a clear error says what to pass.
    """
    models = WanModels(dtype=dtype, device=torch.device("cpu"))
    if transformer is not None:
        models.transformer = load_transformer_file(transformer, dtype=dtype)
        models.name = models.transformer._vist3a_size_name
        models.sources["transformer"] = str(transformer)
    if vae is not None:
        models.vae = load_vae_file(vae, dtype=vae_dtype)
        models.sources["vae"] = str(vae)
    spm_bytes = None
    if text_encoder is not None:
        models.text_encoder, spm_bytes = load_text_encoder_file(text_encoder, dtype=text_encoder_dtype or dtype)
        models.sources["text_encoder"] = str(text_encoder)
        if tokenizer is None and spm_bytes is None:
            raise CheckpointError(
                f"{text_encoder} carries no tokenizer (no embedded spiece_model) and none was given; pass "
                f"tokenizer= the tokenizer/ folder of a Wan2.1-T2V-*-Diffusers download (or its spiece.model)",
                path=text_encoder,
            )
    if tokenizer is not None:
        models.tokenizer = load_tokenizer(tokenizer)
        models.sources["tokenizer"] = str(tokenizer)
    elif spm_bytes is not None:
        models.tokenizer = tokenizer_from_spm(spm_bytes, source=f"{text_encoder} (spiece_model)")
    if models.text_encoder is not None and len(models.tokenizer) > models.text_encoder.config.vocab_size:
        raise CheckpointError(
            f"the tokenizer has {len(models.tokenizer)} tokens but the text encoder {text_encoder} only "
            f"{models.text_encoder.config.vocab_size} embeddings; use the UMT5 tokenizer that belongs to it",
            path=text_encoder,
        )
    return models.to(device)


def load_wan(path: Optional[PathLike] = None, *, vae: Optional[PathLike] = None,
             text_encoder: Optional[PathLike] = None, tokenizer: Optional[PathLike] = None,
             dtype: torch.dtype = torch.bfloat16, vae_dtype: torch.dtype = torch.float32,
             text_encoder_dtype: Optional[torch.dtype] = None, device: Union[str, torch.device] = "cpu") -> WanModels:
    """Load Wan from whatever the user has: a diffusers folder, or ComfyUI single files.

    ``path`` is a diffusers folder (then ``vae``/``text_encoder``/``tokenizer`` override its
    components) or the diffusion-model file.
    """
    if path is not None and sniff_wan_path(path).kind == "diffusers_folder":
        wanted = ["transformer"] + [name for name, override in
                                    (("vae", vae), ("text_encoder", text_encoder), ("tokenizer", tokenizer))
                                    if override is None]
        models = load_wan_diffusers(path, dtype=dtype, vae_dtype=vae_dtype, text_encoder_dtype=text_encoder_dtype,
                                    device=device, components=wanted)
        if vae is not None:
            models.vae = load_vae_file(vae, dtype=vae_dtype, device=device)
            models.sources["vae"] = str(vae)
        if text_encoder is not None:
            models.text_encoder, _ = load_text_encoder_file(text_encoder, dtype=text_encoder_dtype or dtype,
                                                            device=device)
            models.sources["text_encoder"] = str(text_encoder)
        if tokenizer is not None:
            models.tokenizer = load_tokenizer(tokenizer)
            models.sources["tokenizer"] = str(tokenizer)
        return models
    if path is not None and Path(path).is_dir():
        info = sniff_wan_path(path)
        raise CheckpointError(
            f"{info.path} is {info.detail}, not a diffusers Wan folder (no model_index.json); give the "
            f"Wan-AI/Wan2.1-T2V-*-Diffusers folder itself or the ComfyUI diffusion-model file",
            path=info.path,
        )
    return load_wan_single_files(path, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, dtype=dtype,
                                 vae_dtype=vae_dtype, text_encoder_dtype=text_encoder_dtype, device=device)
