"""Loader nodes: Wan 2.1 (diffusers folder or ComfyUI single files), the VIST3A Wan LoRA (on our Wan or
on a native ComfyUI Wan MODEL), the stitched decoder (official .pth on AnySplat, or our export) and
plain AnySplat. Every file is looked up with folder_paths; nothing is downloaded."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from typing import Any

import torch

import comfy.model_management as mm
import folder_paths
from comfy_api.latest import io

from vist3a.offload import stream_transformer_blocks

from .errors import NodeError, friendly
from .model_files import (
    FROM_FOLDER,
    NONE,
    diffusers_folders,
    file_mtime,
    model_file,
    peft_loras,
    resolve_diffusers_folder,
    resolve_vist3a,
    vist3a_entries,
)
from .model_memory import DEVICES, DTYPES, ModelHandle, cached, load_to_device, make_patcher, pick_device, pick_dtype
from .sockets import LOADERS, AnySplatModel, StitchedDecoder, WanModel

log = logging.getLogger("vist3a")

OFFLOAD = ["comfy", "none", "blocks"]
OFFLOAD_TIP = (
    "Where the Wan weights live. comfy: ComfyUI's memory manager moves each part (text encoder, transformer, "
    "VAE) to the GPU when it runs and offloads it to RAM when another model needs the memory (recommended). "
    "none: everything stays on the GPU (fastest, most VRAM). blocks: the transformer stays in RAM and its "
    "blocks are streamed to the GPU one at a time (slowest, least VRAM; for 14B on small GPUs).")


# --------------------------------------------------------------------------------------- Wan
@dataclass(eq=False)
class WanHandle:
    """Our Wan bundle plus how it is placed, and the VIST3A LoRAs to apply when sampling."""

    models: Any  # vist3a.wan.WanModels
    device: torch.device
    offload: str
    patchers: dict = field(default_factory=dict)
    loras: tuple = ()  # ((WanLoRA, strength), ...): the handle keeps the loaded LoRAs alive
    label: str = ""

    def with_lora(self, lora, strength: float) -> "WanHandle":
        return replace(self, loras=self.loras + ((lora, float(strength)),))

    def ready(self, *components: str):
        """Make the named components (transformer / text_encoder / vae) runnable on the device."""
        widget = {"transformer": "model", "text_encoder": "text_encoder", "vae": "vae"}
        for name in components:
            if getattr(self.models, name) is None:
                raise NodeError(f"The Wan model from Load Wan 2.1 (VIST3A) has no {name.replace('_', ' ')}; "
                                  f"pick one in that loader's '{widget.get(name, name)}' input.")
        load_to_device(*(self.patchers.get(c) for c in components))
        return self.models

    def apply_loras(self) -> None:
        """Bring the shared transformer's adapters in line with this handle's LoRAs (each Sample re-checks,
        so two graphs with and without a LoRA both work)."""
        from vist3a.wan.lora_stack import sync_lora_stack

        sync_lora_stack(self.models.transformer, self.loras)


def _load_lora(path: str):
    """A VIST3A LoRA, shared through the model cache while anything (a WanHandle, a transformer) holds it."""
    from vist3a.wan import load_vist3a_lora

    return cached(("lora", path, file_mtime(path)), lambda: load_vist3a_lora(path))


class LoadWan(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        models = [NONE] + diffusers_folders() + folder_paths.get_filename_list("diffusion_models")
        tes = [FROM_FOLDER, NONE] + folder_paths.get_filename_list("text_encoders")
        vaes = [FROM_FOLDER, NONE] + folder_paths.get_filename_list("vae")
        return io.Schema(
            node_id="VIST3ALoadWan",
            display_name="Load Wan 2.1 (VIST3A)",
            category=LOADERS,
            description="Loads Wan 2.1 text-to-video (1.3B or 14B) for VIST3A: a diffusers folder from models/diffusers "
                        "or ComfyUI's single files from diffusion_models / text_encoders / vae.",
            inputs=[
                io.Combo.Input("model", options=models, default=_default(models, "wan2.1_t2v_1.3B"),
                               tooltip="Wan 2.1 T2V diffusion model: a diffusers folder (ends with '/', from models/diffusers) "
                                       "or a single file from models/diffusion_models such as wan2.1_t2v_1.3B_fp16.safetensors. "
                                       "(none) loads only the text encoder and/or VAE."),
                io.Combo.Input("text_encoder", options=tes, default=_default(tes, "umt5"),
                               tooltip="UMT5-XXL text encoder from models/text_encoders (e.g. umt5_xxl_fp8_e4m3fn_scaled.safetensors; "
                                       "its embedded tokenizer is used), or the one inside the diffusers folder."),
                io.Combo.Input("vae", options=vaes, default=_default(vaes, "wan_2.1_vae"),
                               tooltip="Wan 2.1 VAE from models/vae (wan_2.1_vae.safetensors), or the one inside the diffusers folder."),
                io.Combo.Input("dtype", options=DTYPES, default="auto",
                               tooltip="Weight/compute precision of the transformer and text encoder (fp8 files are "
                                       "dequantised to it). auto: bf16 on GPUs that support it, fp32 on CPU. The VAE always runs in fp32."),
                io.Combo.Input("device", options=DEVICES, default="auto",
                               tooltip="auto: ComfyUI's device (the GPU unless ComfyUI runs with --cpu). cpu: force the CPU."),
                io.Combo.Input("offload", options=OFFLOAD, default="comfy", tooltip=OFFLOAD_TIP),
            ],
            outputs=[WanModel.Output(display_name="wan", tooltip="Wan 2.1 for VIST3A Text Encode / Sample / Decode Splats.")],
        )

    @classmethod
    @friendly("Load Wan 2.1")
    def execute(cls, model, text_encoder, vae, dtype, device, offload) -> io.NodeOutput:
        from vist3a.wan import load_wan

        dev = pick_device(device)
        dt = pick_dtype(dtype, dev)
        folder = resolve_diffusers_folder(model) if model.endswith("/") else None
        model_path = None if (model == NONE or folder) else model_file("diffusion_models", model, "Wan diffusion model")
        te_path = None if text_encoder in (NONE, FROM_FOLDER) else model_file("text_encoders", text_encoder, "text encoder")
        vae_path = None if vae in (NONE, FROM_FOLDER) else model_file("vae", vae, "VAE")
        if folder is None and FROM_FOLDER in (text_encoder, vae):
            which = "text_encoder" if text_encoder == FROM_FOLDER else "vae"
            raise NodeError(f"'{which}' is set to '{FROM_FOLDER}' but the model is not a diffusers folder; "
                              f"pick a file from models/{'text_encoders' if which == 'text_encoder' else 'vae'} instead.")
        if model == NONE and te_path is None and vae_path is None:
            raise NodeError("Nothing to load: pick a Wan model, a text encoder or a VAE.")
        paths = [p for p in (folder, model_path, te_path, vae_path) if p]
        key = ("wan", folder, model_path, te_path, vae_path, text_encoder == FROM_FOLDER, vae == FROM_FOLDER,
               tuple(file_mtime(p) for p in paths), str(dt), str(dev), offload)

        skip = [name for name, choice in (("vae", vae), ("text_encoder", text_encoder)) if choice == NONE]

        def build():
            models = load_wan(folder or model_path, vae=vae_path, text_encoder=te_path, dtype=dt, vae_dtype=torch.float32,
                              text_encoder_dtype=dt, device="cpu", skip=skip if folder else ())
            log.info("Load Wan 2.1: %s", models.summary())
            handle = WanHandle(models, dev, offload, label=os.path.basename((folder or model_path or te_path or vae_path).rstrip("/")))
            parts = {"transformer": models.transformer, "text_encoder": models.text_encoder, "vae": models.vae}
            if dev.type == "cpu" or offload == "none":
                models.to(dev)
            else:
                for name, module in parts.items():
                    if module is None:
                        continue
                    if name == "transformer" and offload == "blocks":
                        stream_transformer_blocks(module, dev)
                    else:
                        handle.patchers[name] = make_patcher(module, dev)
            return handle

        handle = cached(key, build)
        return io.NodeOutput(handle)


def _default(options: list[str], needle: str) -> str:
    for o in options:
        if needle.lower() in o.lower():
            return o
    return options[0]


class LoadVIST3ALoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        loras = peft_loras() or [NONE]
        return io.Schema(
            node_id="VIST3ALoadLoRA",
            display_name="Load VIST3A LoRA (Wan)",
            category=LOADERS,
            description="Adds the reward-aligned VIST3A Wan LoRA (vist3a_1.3b_lora_ema / vist3a_14b_lora_ema, PEFT folder "
                        "in models/loras) to a VIST3A Wan model. It is applied when sampling; the base weights are unchanged.",
            inputs=[
                WanModel.Input("wan", tooltip="The Wan model from Load Wan 2.1 (VIST3A)."),
                io.Combo.Input("lora_name", options=loras, default=_default(loras, "vist3a_1.3b"),
                               tooltip="adapter_model.safetensors inside the vist3a_*_lora_ema folder in models/loras "
                                       "(adapter_config.json must sit beside it). Use the 1.3B LoRA with Wan 1.3B and the 14B one with 14B."),
                io.Float.Input("strength", default=1.0, min=-4.0, max=4.0, step=0.05,
                               tooltip="LoRA strength: 1.0 is the released setting, 0 disables it."),
            ],
            outputs=[WanModel.Output(display_name="wan", tooltip="The same Wan model with the LoRA added.")],
        )

    @classmethod
    @friendly("Load VIST3A LoRA")
    def execute(cls, wan, lora_name, strength) -> io.NodeOutput:
        from vist3a.wan.lora import check_lora_fits

        if not isinstance(wan, WanHandle):
            raise NodeError("The 'wan' input must come from Load Wan 2.1 (VIST3A); for a native ComfyUI MODEL use "
                              "'Apply VIST3A LoRA to Wan MODEL'.")
        if lora_name == NONE:
            raise NodeError("No LoRA found in models/loras; put the vist3a_1.3b_lora_ema folder there and refresh (press R).")
        path = model_file("loras", lora_name, "LoRA")
        lora = _load_lora(path)
        if wan.models.transformer is not None:
            check_lora_fits(lora, wan.models.transformer)
        return io.NodeOutput(wan.with_lora(lora, strength))


class ApplyLoRAToModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        loras = peft_loras() or [NONE]
        return io.Schema(
            node_id="VIST3AApplyLoRAToModel",
            display_name="Apply VIST3A LoRA to Wan MODEL",
            category=LOADERS,
            description="Patches a native ComfyUI Wan 2.1 MODEL (Load Diffusion Model) with the VIST3A LoRA, the way "
                        "LoraLoaderModelOnly does, so ComfyUI's KSampler (with its memory management and offloading) "
                        "can generate latents for Decode Splats. Reads the PEFT folder directly; no conversion needed.",
            inputs=[
                io.Model.Input("model", tooltip="A Wan 2.1 T2V MODEL from ComfyUI's Load Diffusion Model (UNETLoader)."),
                io.Combo.Input("lora_name", options=loras, default=_default(loras, "vist3a_1.3b"),
                               tooltip="The VIST3A LoRA: adapter_model.safetensors of the vist3a_*_lora_ema PEFT folder in models/loras "
                                       "(a ComfyUI-format LoRA file works too)."),
                io.Float.Input("strength", default=1.0, min=-4.0, max=4.0, step=0.05,
                               tooltip="LoRA strength: 1.0 is the released setting."),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="The patched MODEL (the original stays unpatched).")],
        )

    @classmethod
    @friendly("Apply VIST3A LoRA")
    def execute(cls, model, lora_name, strength) -> io.NodeOutput:
        import comfy.lora
        import comfy.utils

        from vist3a.wan import lora_to_comfy
        from vist3a.wan.configs import wan_size_name

        if lora_name == NONE:
            raise NodeError("No LoRA found in models/loras; put the vist3a_1.3b_lora_ema folder there and refresh (press R).")
        path = model_file("loras", lora_name, "LoRA")
        dm = getattr(getattr(model, "model", None), "diffusion_model", None)
        if dm is None or not hasattr(dm, "blocks") or not hasattr(dm.blocks[0], "self_attn"):
            raise NodeError("The 'model' input is not a Wan 2.1 MODEL; load wan2.1_t2v_*.safetensors with Load Diffusion Model.")
        if os.path.isfile(os.path.join(os.path.dirname(path), "adapter_config.json")):
            lora = _load_lora(path)
            width, blocks = dm.blocks[0].self_attn.q.weight.shape[0], len(dm.blocks)
            if lora.inner_dim != width or lora.num_blocks > blocks:
                raise NodeError(
                    f"LoRA {lora_name} was made for {lora.size_name} ({lora.num_blocks} blocks, width {lora.inner_dim}) but "
                    f"the MODEL is {wan_size_name(blocks, width)} ({blocks} blocks, width {width}); use vist3a_1.3b_lora_ema "
                    "with Wan 1.3B and vist3a_14b_lora_ema with Wan 14B.")
            sd = lora_to_comfy(lora)
            expected = len(lora.modules)
        else:
            expected = None
            sd = comfy.utils.load_torch_file(path, safe_load=True)
        key_map = comfy.lora.model_lora_keys_unet(model.model, {})
        patches = comfy.lora.load_lora(sd, key_map, log_missing=False)
        if not patches:
            raise NodeError(f"None of the tensors in {lora_name} match this MODEL's layers; it is not a Wan 2.1 LoRA.")
        if expected is not None and len(patches) != expected:
            raise NodeError(f"Only {len(patches)} of the {expected} layers of {lora_name} match this MODEL; it was made for another Wan model.")
        patched = model.clone()
        applied = patched.add_patches(patches, float(strength))
        if len(applied) != len(patches):
            log.warning("VIST3A LoRA: %d of %d layers patched", len(applied), len(patches))
        return io.NodeOutput(patched)


# ------------------------------------------------------------------------------------- decoders
PRECISIONS = ["auto", "fp32", "bf16"]
PRECISION_TIP = ("auto: bf16 transformer + fp32 heads on a GPU (like the official inference), fp32 on CPU. "
                 "fp32: everything in fp32. bf16: the official mixed precision.")


def _precision(choice: str, dev: torch.device) -> str:
    if choice == "auto":
        return "bf16" if dev.type == "cuda" and mm.should_use_bf16(dev) else "fp32"
    return choice


def _place(model: torch.nn.Module, dev: torch.device, source: str) -> ModelHandle:
    if dev.type == "cpu":
        return ModelHandle(model.to(dev), dev, None, source)
    return ModelHandle(model, dev, make_patcher(model, dev), source)


class LoadStitchedDecoder(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        entries = vist3a_entries()
        decoders = entries or [NONE]
        anysplats = [NONE] + entries
        return io.Schema(
            node_id="VIST3ALoadStitchedDecoder",
            display_name="Load Stitched Decoder (VIST3A)",
            category=LOADERS,
            description="Loads the VIST3A stitched 3D decoder (AnySplat cut at DINO block 2 with the latent stitching layer) "
                        "from models/vist3a: the official anysplat_stitched.pth on top of the AnySplat weights, or a folder exported by vist3a_train.",
            inputs=[
                io.Combo.Input("decoder", options=decoders, default=_default(decoders, "anysplat_stitched"),
                               tooltip="anysplat_stitched.pth / anysplat_stitched_21_frame_extended.pth (needs 'anysplat' below), "
                                       "or an export folder from vist3a_train (ends with '/', holds vist3a_manifest.json)."),
                io.Combo.Input("anysplat", options=anysplats, default=_default(anysplats, "anysplat/"),
                               tooltip="The AnySplat base weights the official .pth is applied to: the lhjiang/anysplat folder "
                                       "(model.safetensors + config.json) in models/vist3a. Ignored for export folders."),
                io.Combo.Input("precision", options=PRECISIONS, default="auto", tooltip=PRECISION_TIP),
                io.Combo.Input("device", options=DEVICES, default="auto",
                               tooltip="auto: ComfyUI's device (managed by its memory manager). cpu: force the CPU."),
            ],
            outputs=[StitchedDecoder.Output(display_name="decoder", tooltip="For Decode Splats.")],
        )

    @classmethod
    @friendly("Load Stitched Decoder")
    def execute(cls, decoder, anysplat, precision, device) -> io.NodeOutput:
        from vist3a.decoders import load_stitched_decoder, set_precision

        if decoder == NONE:
            raise NodeError("models/vist3a holds no decoder; put anysplat_stitched.pth (and the anysplat folder) there and refresh (press R).")
        dpath = resolve_vist3a(decoder, "stitched decoder")
        apath = None if anysplat == NONE else resolve_vist3a(anysplat, "AnySplat weights")
        dev = pick_device(device)
        prec = _precision(precision, dev)
        key = ("decoder", dpath, apath, file_mtime(dpath), apath and file_mtime(apath), prec, str(dev))

        def build():
            model = load_stitched_decoder(dpath, apath, device="cpu")
            set_precision(model, prec)
            return _place(model, dev, dpath)

        return io.NodeOutput(cached(key, build))


class LoadAnySplat(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        entries = vist3a_entries() or [NONE]
        return io.Schema(
            node_id="VIST3ALoadAnySplat",
            display_name="Load AnySplat (VIST3A)",
            category=LOADERS,
            description="Loads plain AnySplat (feed-forward 3D Gaussians from images) for Images to Splats.",
            inputs=[
                io.Combo.Input("anysplat", options=entries, default=_default(entries, "anysplat/"),
                               tooltip="The lhjiang/anysplat folder (model.safetensors + config.json) in models/vist3a, its "
                                       "model.safetensors, or an AnySplat export folder from vist3a_train."),
                io.Combo.Input("precision", options=PRECISIONS, default="auto", tooltip=PRECISION_TIP),
                io.Combo.Input("device", options=DEVICES, default="auto",
                               tooltip="auto: ComfyUI's device (managed by its memory manager). cpu: force the CPU."),
            ],
            outputs=[AnySplatModel.Output(display_name="anysplat", tooltip="For Images to Splats.")],
        )

    @classmethod
    @friendly("Load AnySplat")
    def execute(cls, anysplat, precision, device) -> io.NodeOutput:
        from vist3a.decoders import load_anysplat, set_precision

        if anysplat == NONE:
            raise NodeError("models/vist3a holds no AnySplat weights; put the lhjiang/anysplat folder there and refresh (press R).")
        path = resolve_vist3a(anysplat, "AnySplat weights")
        dev = pick_device(device)
        prec = _precision(precision, dev)
        key = ("anysplat", path, file_mtime(path), prec, str(dev))

        def build():
            model = load_anysplat(path, device="cpu")
            set_precision(model, prec)
            return _place(model, dev, path)

        return io.NodeOutput(cached(key, build))


NODES = [LoadWan, LoadVIST3ALoRA, ApplyLoRAToModel, LoadStitchedDecoder, LoadAnySplat]
