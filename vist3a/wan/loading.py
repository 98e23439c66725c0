"""Load Wan 2.1 T2V (transformer, VAE, UMT5 text encoder, tokenizer) from the released layouts.

Two layouts exist in the wild and both must work offline:

* the diffusers folder ``Wan-AI/Wan2.1-T2V-{1.3B,14B}-Diffusers`` (``model_index.json`` plus
  ``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``), loaded with the
  classes' own ``from_pretrained(local_files_only=True)``;
* ComfyUI's single files (``wan2.1_t2v_1.3B_fp16.safetensors``, ``wan_2.1_vae.safetensors``,
  ``umt5_xxl_fp8_e4m3fn_scaled.safetensors``) which carry the original Wan key names and no
  config. The architecture is read off the tensor shapes (:mod:`.configs`), the keys are mapped with
  diffusers' own converters (``convert_wan_transformer_to_diffusers`` / ``convert_wan_vae_to_diffusers``),
  and ComfyUI's fp8 "scaled" weights are dequantised (:mod:`.state_dicts`); the tokenizer comes from the
  folder, a ``.model`` file or the one embedded in the text-encoder file (:mod:`.tokenizer`).

``diffusers``' ``from_single_file`` is not used: it wants the config from the hub or from a
folder, while a ComfyUI install has neither; building the model from an inferred config and
assigning the converted tensors is the same operation without the network.

diffusers / transformers / accelerate are imported inside the loaders on purpose: they take seconds to
import, and detection, ``info`` and the nodes' file lists must not pay for them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import torch

from ..errors import CheckpointError
from ..weights.detect import classify_wan
from .configs import (
    HINT_TE,
    HINT_TRANSFORMER,
    HINT_VAE,
    transformer_config_from_state_dict,
    umt5_config_from_state_dict,
    vae_config_from_state_dict,
    wan_size_name,
)
from .state_dicts import (
    SPIECE_KEY,
    assign_state_dict,
    dequantize_comfy_fp8,
    file_tensors,
    read_state_dict,
    require_exists,
    strip_prefix,
)
from .tokenizer import load_tokenizer, tokenizer_from_spm

__all__ = [
    "WanModels",
    "WanPathInfo",
    "sniff_wan_path",
    "load_wan",
    "load_wan_diffusers",
    "load_wan_single_files",
    "load_transformer_file",
    "load_vae_file",
    "load_text_encoder_file",
]

PathLike = Union[str, "Path"]

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

    def summary(self) -> str:
        """One line saying where each loaded component came from (a folder, a file, an embedded tokenizer)."""
        folder = self.sources.get("folder")
        parts = []
        for name, label in (("transformer", "transformer"), ("text_encoder", "text encoder"), ("tokenizer", "tokenizer"),
                            ("vae", "VAE")):
            if getattr(self, name) is None:
                continue
            where = self.sources.get(name) or (f"{folder}" if folder else "memory")
            parts.append(f"{label} from {where}")
        return f"{self.name}: " + ("; ".join(parts) if parts else "nothing loaded")

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
# What a path is
# --------------------------------------------------------------------------------------------


def sniff_wan_path(path: PathLike) -> WanPathInfo:
    """Say what ``path`` is: a diffusers Wan folder, a LoRA folder, a tokenizer, or which single file.

    Only headers are read, so this is cheap enough to run on every node refresh.  A missing path
    raises :class:`CheckpointError`; anything unrecognised comes back as ``kind="unknown"``.
    """
    path = require_exists(path, "Wan model path", HINT_TRANSFORMER)
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
    found = classify_wan(file_tensors(path))
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
# One component from one file
# --------------------------------------------------------------------------------------------


def load_transformer_file(path: PathLike, dtype: torch.dtype = torch.bfloat16,
                          device: Union[str, torch.device] = "cpu"):
    """Load a Wan 2.1 T2V diffusion model from one ComfyUI/original-format (or diffusers-format) file."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    info = _expect_kind(path, "transformer", "a Wan diffusion model", HINT_TRANSFORMER)
    keep = WanTransformer3DModel._keep_in_fp32_modules
    sd = dequantize_comfy_fp8(read_state_dict(info.path), info.path, dtype, keep)
    if info.key_format == "original":
        sd = convert_wan_transformer_to_diffusers(sd)
    cfg, name = transformer_config_from_state_dict(sd, info.path)
    with init_empty_weights():
        model = WanTransformer3DModel.from_config(cfg)
    assign_state_dict(model, sd, dtype, keep, info.path, f"{name} transformer")
    model._vist3a_size_name = name
    return model.to(device)


def load_vae_file(path: PathLike, dtype: torch.dtype = torch.float32, device: Union[str, torch.device] = "cpu"):
    """Load the Wan 2.1 VAE from one ComfyUI/original-format (or diffusers-format) file."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    info = _expect_kind(path, "vae", "the Wan 2.1 VAE", HINT_VAE)
    sd = dequantize_comfy_fp8(read_state_dict(info.path), info.path, dtype)
    if info.key_format == "original":
        sd = convert_wan_vae_to_diffusers(sd)
    cfg = vae_config_from_state_dict(sd, info.path)
    with init_empty_weights():
        model = AutoencoderKLWan.from_config(cfg)
    assign_state_dict(model, sd, dtype, AutoencoderKLWan._keep_in_fp32_modules or (), info.path, "Wan 2.1 VAE")
    return model.to(device)


def load_text_encoder_file(path: PathLike, dtype: torch.dtype = torch.bfloat16,
                           device: Union[str, torch.device] = "cpu"):
    """Load the UMT5 encoder from a ComfyUI text-encoder file (fp16/bf16/fp32 or fp8 "scaled").

    Returns ``(text_encoder, spm_bytes_or_None)``; the second item is the sentencepiece model that
    ComfyUI embeds in these files as the ``spiece_model`` tensor, used to build the tokenizer.
    """
    from accelerate import init_empty_weights
    from transformers import UMT5Config, UMT5EncoderModel

    info = _expect_kind(path, "text_encoder", "the UMT5 text encoder", HINT_TE)
    raw = read_state_dict(info.path)
    spm = raw.get(SPIECE_KEY)
    spm_bytes = bytes(spm.to(torch.uint8).numpy().tobytes()) if spm is not None else None
    keep = UMT5EncoderModel._keep_in_fp32_modules if dtype == torch.float16 else ()
    sd = dequantize_comfy_fp8(raw, info.path, dtype, keep or ())
    del raw
    prefix = strip_prefix(sd, "encoder.final_layer_norm.weight") or ""
    sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight" not in sd or \
            "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in sd:
        raise CheckpointError(
            f"{info.path} is a T5 encoder without per-layer relative attention (plain T5, not UMT5); "
            f"Wan 2.1 needs UMT5-XXL, {HINT_TE}",
            path=info.path,
        )
    if "shared.weight" not in sd and "encoder.embed_tokens.weight" in sd:
        sd["shared.weight"] = sd["encoder.embed_tokens.weight"]
    cfg = UMT5Config(**umt5_config_from_state_dict(sd))
    with init_empty_weights():
        model = UMT5EncoderModel(cfg)
    sd.pop("encoder.embed_tokens.weight", None)
    assign_state_dict(model, sd, dtype, keep or (), info.path, "UMT5 text encoder", optional=["encoder.embed_tokens.weight"])
    return model.to(device), spm_bytes


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

    root = require_exists(folder, "Wan diffusers folder", HINT_TRANSFORMER)
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
    _attach_files(models, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, vae_dtype=vae_dtype,
                  text_encoder_dtype=text_encoder_dtype or dtype)
    return models.to(device)


def _attach_files(models: WanModels, *, vae, text_encoder, tokenizer, vae_dtype: torch.dtype,
                  text_encoder_dtype: torch.dtype, tokenizer_folder: Optional[PathLike] = None) -> None:
    """Load the components given as files into ``models``. The tokenizer: ``tokenizer``, else the one embedded in the
    text-encoder file (it belongs to that encoder), else ``tokenizer_folder``'s; with none of them, an error."""
    if vae is not None:
        models.vae = load_vae_file(vae, dtype=vae_dtype)
        models.sources["vae"] = str(vae)
    spm_bytes = None
    if text_encoder is not None:
        models.text_encoder, spm_bytes = load_text_encoder_file(text_encoder, dtype=text_encoder_dtype)
        models.sources["text_encoder"] = str(text_encoder)
    if tokenizer is not None:
        models.tokenizer, models.sources["tokenizer"] = load_tokenizer(tokenizer), str(tokenizer)
    elif spm_bytes is not None:
        where = f"{text_encoder} (spiece_model)"
        models.tokenizer, models.sources["tokenizer"] = tokenizer_from_spm(spm_bytes, source=where), where
    elif text_encoder is not None and tokenizer_folder is not None:
        models.tokenizer = load_tokenizer(tokenizer_folder)
        models.sources["tokenizer"] = str(Path(tokenizer_folder) / "tokenizer")
    elif text_encoder is not None:
        raise CheckpointError(
            f"{text_encoder} carries no tokenizer (no embedded spiece_model) and none was given; pass "
            f"tokenizer= the tokenizer/ folder of a Wan2.1-T2V-*-Diffusers download (or its spiece.model)",
            path=text_encoder,
        )
    _check_vocabulary(models, text_encoder)


def load_wan(path: Optional[PathLike] = None, *, vae: Optional[PathLike] = None,
             text_encoder: Optional[PathLike] = None, tokenizer: Optional[PathLike] = None,
             dtype: torch.dtype = torch.bfloat16, vae_dtype: torch.dtype = torch.float32,
             text_encoder_dtype: Optional[torch.dtype] = None, device: Union[str, torch.device] = "cpu",
             skip: Iterable[str] = ()) -> WanModels:
    """Load Wan from whatever the user has: a diffusers folder, or ComfyUI single files. The one loader of the
    CLI, the pipeline, training and the Load Wan node.

    ``path`` is a diffusers folder (then ``vae``/``text_encoder``/``tokenizer`` override its components and
    ``skip`` names folder components to leave out: "vae", "text_encoder") or the diffusion-model file (or None
    for a bundle of only a VAE and/or text encoder). The tokenizer is ``tokenizer`` when given, else the one
    embedded in a ``text_encoder`` file (it belongs to that encoder), else the diffusers folder's.
    """
    skip = set(skip)
    unknown = skip - {"vae", "text_encoder"}
    if unknown:
        raise ValueError(f"skip may name 'vae' and 'text_encoder', not {sorted(unknown)}")
    if path is not None and sniff_wan_path(path).kind == "diffusers_folder":
        return _load_folder_with_overrides(path, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, dtype=dtype,
                                           vae_dtype=vae_dtype, text_encoder_dtype=text_encoder_dtype, device=device,
                                           skip=skip)
    if path is not None and Path(path).is_dir():
        info = sniff_wan_path(path)
        raise CheckpointError(
            f"{info.path} is {info.detail}, not a diffusers Wan folder (no model_index.json); give the "
            f"Wan-AI/Wan2.1-T2V-*-Diffusers folder itself or the ComfyUI diffusion-model file",
            path=info.path,
        )
    return load_wan_single_files(path, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, dtype=dtype,
                                 vae_dtype=vae_dtype, text_encoder_dtype=text_encoder_dtype, device=device)


def _load_folder_with_overrides(folder: PathLike, *, vae, text_encoder, tokenizer, dtype, vae_dtype,
                                text_encoder_dtype, device, skip: set) -> WanModels:
    """A diffusers folder whose components may be replaced by files (or left out); see :func:`load_wan`."""
    use_vae = vae is None and "vae" not in skip
    use_te = text_encoder is None and "text_encoder" not in skip
    wanted = ["transformer"] + (["vae"] if use_vae else []) + (["text_encoder"] if use_te else [])
    if tokenizer is None and use_te:
        wanted.append("tokenizer")
    models = load_wan_diffusers(folder, dtype=dtype, vae_dtype=vae_dtype, text_encoder_dtype=text_encoder_dtype,
                                device="cpu", components=wanted)
    if use_te and tokenizer is None:
        models.sources["tokenizer"] = str(Path(folder) / "tokenizer")
    _attach_files(models, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, vae_dtype=vae_dtype,
                  text_encoder_dtype=text_encoder_dtype or dtype, tokenizer_folder=folder)
    return models.to(device)


def _check_vocabulary(models: WanModels, source: PathLike) -> None:
    """A tokenizer with more ids than the encoder has embeddings would index out of range mid-run: refuse it now."""
    if models.text_encoder is not None and models.tokenizer is not None and \
            len(models.tokenizer) > models.text_encoder.config.vocab_size:
        raise CheckpointError(
            f"the tokenizer has {len(models.tokenizer)} tokens but the text encoder {source} only "
            f"{models.text_encoder.config.vocab_size} embeddings; use the UMT5 tokenizer that belongs to it",
            path=source,
        )
