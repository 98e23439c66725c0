"""Generation nodes: Text Encode -> Sample -> Decode Splats, and Images to Splats (plain AnySplat).

The latent between Sample and Decode Splats is ComfyUI's native LATENT with RAW Wan-VAE latents, so
ComfyUI's own KSampler can replace our Sample and ComfyUI's VAE can replace ours."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from comfy_api.latest import io

from vist3a.view_prep import RESIZE_MODES, prepare_views
from vist3a.wan.seeding import SEED_MODES

from .errors import NodeError, friendly
from .loaders import WanHandle
from .model_memory import ModelHandle
from .progress import NodeText, Progress, StageTimer, check_cancel, running_node_id, should_cancel
from .sockets import CATEGORY, AnySplatModel, Cameras, Splat, StitchedDecoder, WanModel, scenes_to_outputs, sh_input

MAX_SEED = 0xFFFFFFFFFFFFFFFF


def _embeds(conditioning, name: str) -> torch.Tensor:
    try:
        tensor = conditioning[0][0]
    except (TypeError, IndexError, KeyError):
        tensor = None
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
        raise NodeError(f"The '{name}' input is not a text conditioning; connect VIST3A Text Encode (or CLIP Text Encode with a Wan UMT5 CLIP).")
    if tensor.shape[-1] != 4096:
        raise NodeError(f"The '{name}' conditioning is {tensor.shape[-1]} wide but Wan 2.1 needs UMT5-XXL embeddings (4096); "
                          "encode the prompt with the Wan text encoder.")
    return tensor


def _pad_to(t: torch.Tensor, length: int) -> torch.Tensor:
    return t if t.shape[1] >= length else F.pad(t, (0, 0, 0, length - t.shape[1]))


class TextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        from vist3a.wan import NEGATIVE_PROMPT

        return io.Schema(
            node_id="VIST3ATextEncode",
            display_name="Text Encode (VIST3A)",
            category=CATEGORY,
            description="Encodes the scene prompt (wrapped in the official orbit-camera template) and the negative prompt "
                        "with the Wan UMT5 text encoder. The output is ComfyUI CONDITIONING, usable by VIST3A Sample and by KSampler.",
            inputs=[
                WanModel.Input("wan", tooltip="Wan from Load Wan 2.1 (VIST3A); only its text encoder is used."),
                io.String.Input("prompt", multiline=True, default="a cozy living room with a sofa and a lamp",
                                tooltip="What the scene contains. With camera_template on, it is embedded in the orbit-camera "
                                        "sentence VIST3A was trained with."),
                io.Boolean.Input("camera_template", default=True,
                                 tooltip="Wrap the prompt in the official template 'The camera rotates around the scene, "
                                         "maintaining constant distance: `<prompt>`. ...' (recommended)."),
                io.String.Input("negative_prompt", multiline=True, default=NEGATIVE_PROMPT,
                                tooltip="What to avoid; the default is the official VIST3A negative prompt."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="Prompt conditioning (UMT5 embeddings, 512 tokens)."),
                io.Conditioning.Output(display_name="negative", tooltip="Negative conditioning for classifier-free guidance."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @friendly("Text Encode")
    def execute(cls, wan, prompt, camera_template, negative_prompt) -> io.NodeOutput:
        from vist3a.wan import build_prompt, empty_prompt_note, encode_prompt

        if not isinstance(wan, WanHandle):
            raise NodeError("The 'wan' input must come from Load Wan 2.1 (VIST3A).")
        text = NodeText(running_node_id(cls))
        note = empty_prompt_note(prompt, camera_template)
        if note:  # allowed, but almost always a slip: say it where the user looks, and in the console
            print(f"[VIST3A] Text Encode: {note}", flush=True)
            text.header = note
            text.say(force=True)
        models = wan.ready("text_encoder", "tokenizer")
        check_cancel()
        bar = Progress(200)
        pos = encode_prompt(models, build_prompt(prompt, camera_template=camera_template), should_cancel=should_cancel,
                            progress=StageTimer(bar, text, "Prompt", 0, 100, "layer"))
        neg = encode_prompt(models, negative_prompt, should_cancel=should_cancel,
                            progress=StageTimer(bar, text, "Negative prompt", 100, 200, "layer"))
        return io.NodeOutput([[pos.float().cpu(), {"pooled_output": None}]], [[neg.float().cpu(), {"pooled_output": None}]])


class Sample(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VIST3ASample",
            display_name="Sample (VIST3A)",
            category=CATEGORY,
            description="Generates the Wan latent of a camera orbiting the scene with the official VIST3A sampler (UniPC, "
                        "flow shift 5). Outputs a native LATENT holding raw Wan-VAE latents.",
            inputs=[
                WanModel.Input("wan", tooltip="Wan (with the VIST3A LoRA) from the VIST3A loaders."),
                io.Conditioning.Input("positive", tooltip="From Text Encode (VIST3A)."),
                io.Conditioning.Input("negative", tooltip="From Text Encode (VIST3A)."),
                io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                             tooltip="Noise seed; the same seed and settings give the same scene (noise is drawn on the CPU)."),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip="Denoising steps (official: 50)."),
                io.Float.Input("cfg", default=7.5, min=0.0, max=30.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale (official: 7.5); 1 or less disables the negative prompt."),
                io.Float.Input("shift", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Flow-matching timestep shift of the UniPC scheduler (official: 5)."),
                io.Int.Input("frames", default=13, min=1, max=1001, step=4,
                             tooltip="Video frames, 4k+1 (official: 13; the extended decoder takes 21)."),
                io.Int.Input("width", default=512, min=16, max=4096, step=16, tooltip="Video width in pixels, a multiple of 16 (official: 512)."),
                io.Int.Input("height", default=512, min=16, max=4096, step=16, tooltip="Video height in pixels, a multiple of 16 (official: 512)."),
                io.Combo.Input("seed_mode", options=list(SEED_MODES), default="portable", optional=True,
                               tooltip="portable: noise from a CPU generator seeded with 'seed' (same scene on any machine). "
                                       "official: noise exactly as the official script draws it (global RNG seeded with "
                                       "'seed', set it to 12413, drawn on the GPU); reproduces official samples on the same "
                                       "GPU model and torch version."),
                io.Int.Input("prompt_index", default=0, min=0, max=100000, optional=True,
                             tooltip="official seed mode only: position of this prompt in the official run's prompt list "
                                     "(0 = first); the official script draws one noise per prompt from one stream."),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="Raw Wan latent [1, 16, 1+(frames-1)/4, H/8, W/8].")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @friendly("Sample")
    def execute(cls, wan, positive, negative, seed, steps, cfg, shift, frames, width, height, seed_mode="portable",
                prompt_index=0) -> io.NodeOutput:
        from vist3a.wan import sample_latents

        if not isinstance(wan, WanHandle):
            raise NodeError("The 'wan' input must come from Load Wan 2.1 (VIST3A); for a native MODEL use KSampler.")
        pos, neg = _embeds(positive, "positive"), _embeds(negative, "negative")
        length = max(pos.shape[1], neg.shape[1])
        pos, neg = _pad_to(pos, length), _pad_to(neg, length)
        models = wan.ready("transformer")
        wan.apply_loras()
        text = NodeText(running_node_id(cls))
        text.header = _sample_estimate(models, steps, cfg, frames, height, width)
        bar = Progress(steps)
        progress = StageTimer(bar, text, "Sampling", 0, steps)
        text.say(f"Sampling: step 0 of {steps}", force=True)
        check_cancel()
        latent = sample_latents(models, pos, neg, num_frames=frames, height=height, width=width, steps=steps, cfg=cfg,
                                shift=shift, seed=seed, seed_mode=seed_mode, prompt_index=prompt_index,
                                callback=progress, should_cancel=should_cancel)
        return io.NodeOutput({"samples": latent.float().cpu()})


QUICK_HINT = " (or set Run Size (VIST3A) to 'quick try (CPU)')"


def _on_cpu(module) -> bool:
    first = next(module.parameters(), None) if module is not None else None
    return first is not None and first.device.type == "cpu"


def _shown(line: str) -> str:
    """An estimate line: printed to the console, and returned for the node's text without the console prefix and
    with the pointer to Run Size when it advises lowering something."""
    print(line, flush=True)
    shown = line.removeprefix("[VIST3A] ")
    return shown[:-1] + QUICK_HINT + "." if "for a quick try" in shown else shown


def _sample_estimate(models, steps, cfg, frames, height, width) -> str:
    """How long sampling will take when it runs on the CPU and takes over a minute (printed, and returned for
    the node's text), else ''."""
    from vist3a.cpu_estimate import LONG_RUN_S, describe, estimate_wan_sampling

    if models.transformer is None or torch.device(models.device).type != "cpu":
        return ""
    est = estimate_wan_sampling(models.transformer, steps, cfg, frames, height, width)
    return _shown(describe(est)) if est.seconds > LONG_RUN_S else ""


def _decode_estimate(model, z: torch.Tensor) -> str:
    """The same for the stitched decode of latent ``z``."""
    from vist3a.cpu_estimate import LONG_RUN_S, describe_decode, estimate_stitched_decode
    from vist3a.models import StitchedDecoder

    if not isinstance(model, StitchedDecoder) or not _on_cpu(model):
        return ""
    est = estimate_stitched_decode(model, tuple(z.shape))
    frames, size = (z.shape[2] - 1) * 4 + 1, max(z.shape[3], z.shape[4]) * 8
    return _shown(describe_decode(est, frames, size)) if est.seconds > LONG_RUN_S else ""


def _anysplat_estimate(model, views: int, height: int, width: int) -> str:
    """The same for Images to Splats on ``views`` images of ``height`` x ``width``."""
    from vist3a.cpu_estimate import LONG_RUN_S, describe_anysplat, estimate_anysplat

    if not _on_cpu(model):
        return ""
    est = estimate_anysplat(model, views, height, width)
    return _shown(describe_anysplat(est, views, max(height, width))) if est.seconds > LONG_RUN_S else ""


VOXELIZE = ["auto", "on", "off"]


def _voxelize(choice: str):
    return None if choice == "auto" else choice == "on"


class DecodeSplats(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VIST3ADecodeSplats",
            display_name="Decode Splats (VIST3A)",
            category=CATEGORY,
            description="Turns a Wan video latent into 3D Gaussians and camera poses with the stitched decoder. Works with "
                        "latents from VIST3A Sample or ComfyUI's KSampler; the frames are decoded with the given VAE "
                        "(ComfyUI's native VAE or the one inside a VIST3A Wan) and merged in by the Gaussian head.",
            inputs=[
                io.Latent.Input("latent", tooltip="Raw Wan 2.1 latent [B, 16, T, H/8, W/8] from Sample (VIST3A) or KSampler."),
                io.MultiType.Input("vae", types=[io.Vae, WanModel],
                                   tooltip="Wan 2.1 VAE: ComfyUI's Load VAE (wan_2.1_vae.safetensors) or a VIST3A Wan that has a VAE."),
                StitchedDecoder.Input("decoder", tooltip="From Load Stitched Decoder (VIST3A)."),
                io.Combo.Input("voxelize", options=VOXELIZE, default="auto",
                               tooltip="Merge Gaussians per voxel like the release (auto: as the decoder config says, on for the release)."),
                io.Float.Input("min_opacity", default=0.0, min=0.0, max=1.0, step=0.005, round=0.001,
                               tooltip="Drop Gaussians fainter than this (0 keeps all); a small value like 0.005 shrinks files."),
                sh_input(),
            ],
            outputs=[
                Splat.Output(display_name="splat", tooltip="The 3D Gaussians as a SPLAT batch (one scene per latent), for VIST3A and ComfyUI splat nodes."),
                Cameras.Output(display_name="cameras", tooltip="Predicted camera poses and intrinsics of every frame."),
                io.Image.Output(display_name="frames", tooltip="The decoded RGB frames the decoder saw."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @friendly("Decode Splats")
    def execute(cls, latent, vae, decoder, voxelize, min_opacity, sh_degree="3") -> io.NodeOutput:
        from vist3a.functional import splats_from_latent
        from vist3a.wan import decode_latents, vae_checks

        z = latent.get("samples") if isinstance(latent, dict) else None
        if not isinstance(z, torch.Tensor) or z.ndim != 5 or z.shape[1] != 16:
            shape = list(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise NodeError(f"Decode Splats needs a Wan 2.1 video latent [B, 16, T, H/8, W/8] but got {shape}; "
                              "sample with a Wan 2.1 model (Sample (VIST3A) or KSampler with an empty Wan/Hunyuan video latent).")
        if not isinstance(decoder, ModelHandle):
            raise NodeError("The 'decoder' input must come from Load Stitched Decoder (VIST3A).")
        bar = Progress(100)
        text = NodeText(running_node_id(cls))
        frames = StageTimer(bar, text, "VAE decode", 0, 30, "latent frame")
        check_cancel()
        if isinstance(vae, WanHandle):
            video = decode_latents(vae.ready("vae"), z, should_cancel=should_cancel, progress=frames)  # [B, 3, F, H, W] in [-1, 1]
        elif hasattr(vae, "decode") and hasattr(vae, "first_stage_model"):
            if getattr(vae, "latent_channels", 16) != 16:
                raise NodeError(f"The VAE has {vae.latent_channels} latent channels; Decode Splats needs the Wan 2.1 VAE "
                                  "(wan_2.1_vae.safetensors, 16 channels), not the Wan 2.2 one.")
            with vae_checks(vae.first_stage_model, z.shape[2] * z.shape[0], should_cancel, frames):
                images = vae.decode(z)  # [B, F, H, W, 3] in [0, 1]
            if images.ndim == 4:
                images = images.unsqueeze(0)
            video = images.movedim(-1, 1).float() * 2.0 - 1.0
        else:
            raise NodeError("The 'vae' input must be ComfyUI's Wan 2.1 VAE (Load VAE) or a VIST3A Wan with a VAE.")
        bar.set(30)
        check_cancel()
        model = decoder.ready()
        text.header = _decode_estimate(model, z)
        scenes = splats_from_latent(model, z, video, voxelize=_voxelize(voxelize), min_opacity=min_opacity,
                                    should_cancel=should_cancel, progress=StageTimer(bar, text, "Decoding splats", 30, 100, "block"))
        bar.set(100)
        return io.NodeOutput(*scenes_to_outputs(scenes, sh_degree))




class ImagesToSplats(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VIST3AImagesToSplats",
            display_name="Images to Splats (AnySplat)",
            category=CATEGORY,
            description="Reconstructs 3D Gaussians and cameras from several views of one scene (an IMAGE batch, e.g. video "
                        "frames from Load Video -> Get Video Components) with plain AnySplat.",
            inputs=[
                AnySplatModel.Input("anysplat", tooltip="From Load AnySplat (VIST3A)."),
                io.Image.Input("images", tooltip="Two or more views of the same scene, in order (video frames work well)."),
                io.Int.Input("max_views", default=24, min=2, max=256,
                             tooltip="Use at most this many views, evenly spaced through the batch (more views: more memory)."),
                io.Int.Input("size", default=448, min=14, max=2048, step=14,
                             tooltip="Working resolution in pixels, a multiple of 14 (AnySplat was trained at 448)."),
                io.Combo.Input("resize", options=list(RESIZE_MODES), default="crop square",
                               tooltip="crop square: centre-crop to size x size like AnySplat's demo. keep aspect: the longer side becomes 'size'."),
                io.Combo.Input("voxelize", options=VOXELIZE, default="auto", tooltip="Merge Gaussians per voxel (auto: as the model config says)."),
                io.Float.Input("min_opacity", default=0.0, min=0.0, max=1.0, step=0.005, round=0.001,
                               tooltip="Drop Gaussians fainter than this (0 keeps all)."),
                sh_input(),
            ],
            outputs=[
                Splat.Output(display_name="splat", tooltip="The reconstructed 3D Gaussians (SPLAT), for VIST3A and ComfyUI splat nodes."),
                Cameras.Output(display_name="cameras", tooltip="Predicted pose and intrinsics of each used view."),
                io.Image.Output(display_name="frames", tooltip="The views as the model saw them (cropped/resized)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @friendly("Images to Splats")
    def execute(cls, anysplat, images, max_views, size, resize, voxelize, min_opacity, sh_degree="3") -> io.NodeOutput:
        from vist3a.functional import splats_from_images

        if not isinstance(anysplat, ModelHandle):
            raise NodeError("The 'anysplat' input must come from Load AnySplat (VIST3A).")
        x = prepare_views(images, max_views, size, resize)
        bar = Progress(100)
        text = NodeText(running_node_id(cls))
        check_cancel()
        model = anysplat.ready()
        text.header = _anysplat_estimate(model, x.shape[0], x.shape[-2], x.shape[-1])
        scenes = splats_from_images(model, x.unsqueeze(0), voxelize=_voxelize(voxelize), min_opacity=min_opacity,
                                    should_cancel=should_cancel, progress=StageTimer(bar, text, "Reconstructing", 0, 100, "block"))
        bar.set(100)
        return io.NodeOutput(*scenes_to_outputs(scenes, sh_degree))


NODES = [TextEncode, Sample, DecodeSplats, ImagesToSplats]
