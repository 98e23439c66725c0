"""The shipped ComfyUI workflows (UI format) and the UI -> API conversion the tests use.

`python tools/comfy_workflows.py --port N` regenerates workflows/*.json from the specs below against a
running ComfyUI (its /object_info gives the widget order), so the files stay exactly what the UI saves.
`ui_to_api(ui, object_info)` converts a UI-format graph to the API prompt ComfyUI's /prompt takes,
the way the frontend's graphToPrompt does (widgets in input order, the extra "control after generate"
value after seeds, the upload button value after upload combos); the browser test checks it against
the real frontend.
"""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "LOAD_3D"}  # LOAD_3D: the 3D viewport of ComfyUI's 3D nodes
UPLOAD_KEYS = ("image_upload", "video_upload", "audio_upload", "file_upload")

PROMPT = "a cozy living room with a sofa, a wooden table and a lamp"
RUN_SIZE_TITLE = "Run Size: official (GPU) or quick try (CPU)"
CPU_NOTE_SAMPLE = ("\n\n**On a CPU** (no GPU): set **Run Size** (top left) to *quick try (CPU)*: 10 steps, 5 frames at 256x256 "
                   "and 8 views at 256x256, minutes instead of hours. Sample and Decode Splats show their time estimate and "
                   "the time left on the node while they run; Cancel stops any stage within seconds.")
CPU_NOTE_KSAMPLER = ("\n\n**On a CPU** (no GPU): set **Run Size** (top left) to *quick try (CPU)*: KSampler's steps to 10 and "
                     "the empty latent to 5 frames at 256x256, minutes instead of hours.")
CPU_NOTE_VIDEO = ("\n\n**On a CPU** (no GPU): set **Run Size** (top left) to *quick try (CPU)*: Images to Splats uses 8 views "
                  "at 224x224 (fewer views also give fewer Gaussians: smaller PLY, faster viewer).")


class MissingNodeError(KeyError):
    pass


def _ordered_inputs(info: dict) -> list[tuple[str, object, dict, bool]]:
    out = []
    for group in ("required", "optional"):
        spec = info["input"].get(group, {})
        for name in info.get("input_order", {}).get(group, list(spec)):
            typ = spec[name][0]
            opts = spec[name][1] if len(spec[name]) > 1 and isinstance(spec[name][1], dict) else {}
            out.append((name, typ, opts, group == "optional"))
    return out


def _is_widget(typ, opts) -> bool:
    return (isinstance(typ, list) or typ in WIDGET_TYPES) and not opts.get("forceInput")


def _extra_values(name, typ, opts) -> int:
    extra = 0
    if typ == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed")):
        extra += 1
    if any(opts.get(k) for k in UPLOAD_KEYS):
        extra += 1
    return extra


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """UI-format workflow -> API prompt {id: {class_type, inputs}}; muted/bypassed nodes are dropped."""
    links = {link[0]: link for link in ui.get("links", [])}
    prompt = {}
    for node in ui["nodes"]:
        if node.get("mode", 0) in (2, 4) or node["type"] in ("Note", "MarkdownNote", "Reroute"):
            continue
        info = object_info.get(node["type"])
        if info is None:
            raise MissingNodeError(f"node type {node['type']} (id {node['id']}) is not installed")
        values = node.get("widgets_values") or []
        by_name = values if isinstance(values, dict) else None
        values = [] if by_name is not None else list(values)
        linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        inputs = {}
        for name, typ, opts, _optional in _ordered_inputs(info):
            if _is_widget(typ, opts):
                if by_name is not None:
                    value = by_name.get(name, opts.get("default"))
                else:
                    value = values.pop(0) if values else opts.get("default")
                    for _ in range(_extra_values(name, typ, opts)):
                        if values:
                            values.pop(0)
                inputs[name] = value
            if name in linked:
                link = linked[name]
                inputs[name] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs, "_meta": {"title": node.get("title") or node["type"]}}
    return prompt


# ------------------------------------------------------------------------------------ the specs
# node: (id, type, {widget: value}, {input: (from_id, from_slot)}, (x, y), title or None)
WAN13 = "wan2.1_t2v_1.3B_fp16.safetensors"
WAN14_FP8 = "wan2.1_t2v_14B_fp8_e4m3fn.safetensors"
UMT5 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
VAE = "wan_2.1_vae.safetensors"
LORA13 = "vist3a_1.3b_lora_ema/adapter_model.safetensors"
LORA14 = "vist3a_14b_lora_ema/adapter_model.safetensors"


def _neg(object_info):
    return object_info["VIST3ATextEncode"]["input"]["required"]["negative_prompt"][1]["default"]


ANY_COMFY = "\n\nRuns on ComfyUI 0.3.75 or newer (tested: 0.3.75 and 0.28.0)."


# Run Size's outputs (comfy_nodes/run_size.py), wired into the widgets they set.
RS = 20  # the Run Size node's id in every workflow (above every other id)
STEPS, FRAMES, SIZE, VIEWS, VIEW_SIZE, MAX_VIEWS, ANYSPLAT_SIZE = ((RS, i) for i in range(7))


def _run_size(pos=(40, 0)):
    return (RS, "VIST3ARunSize", dict(run="official (GPU)"), {}, pos, RUN_SIZE_TITLE)


def _text_to_3dgs(object_info, wan, lora, dtype, offload, prefix, note):
    return [
        _run_size(),
        (1, "VIST3ALoadWan", dict(model=wan, text_encoder=UMT5, vae=VAE, dtype=dtype, device="auto", offload=offload), {}, (40, 80), None),
        (2, "VIST3ALoadLoRA", dict(lora_name=lora, strength=1.0), {"wan": (1, 0)}, (40, 380), None),
        (3, "VIST3ATextEncode", dict(prompt=PROMPT, camera_template=True, negative_prompt=_neg(object_info)), {"wan": (2, 0)}, (420, 80), None),
        (4, "VIST3ASample", dict(seed=42, steps=50, cfg=7.5, shift=5.0, frames=13, width=512, height=512),
         {"wan": (2, 0), "positive": (3, 0), "negative": (3, 1), "steps": STEPS, "frames": FRAMES, "width": SIZE, "height": SIZE},
         (860, 80), None),
        (5, "VIST3ALoadStitchedDecoder", dict(decoder="anysplat_stitched.pth", anysplat="anysplat/", precision="auto", device="auto"), {}, (420, 560), None),
        (6, "VIST3ADecodeSplats", dict(voxelize="auto", min_opacity=0.0), {"latent": (4, 0), "vae": (2, 0), "decoder": (5, 0)}, (1240, 80), None),
        (7, "VIST3APreviewSplats", dict(max_splats=1_000_000), {"splat": (6, 0), "cameras": (6, 1)}, (1620, 80), None),
        (8, "VIST3ASavePLY", dict(filename_prefix=prefix, sh_degree="3", also_splat=False, also_spz=True), {"splat": (6, 0)}, (1240, 420), None),
        (9, "VIST3ARenderViews", dict(mode="orbit", views=24, width=512, height=512, fov=50.0, elevation=15.0, background="white"),
         {"splat": (6, 0), "views": VIEWS, "width": VIEW_SIZE, "height": VIEW_SIZE}, (1240, 640), None),
        (10, "SaveAnimatedWEBP", dict(filename_prefix=prefix + "_orbit", fps=12.0, lossless=False, quality=85, method="default"), {"images": (9, 0)}, (1620, 600), None),
        (11, "MarkdownNote", {"_text": note + CPU_NOTE_SAMPLE + ANY_COMFY}, {}, (40, 640), "About this workflow"),
    ]


def spec_text_1_3b(oi):
    return _text_to_3dgs(oi, WAN13, LORA13, "auto", "comfy", "VIST3A/text_to_3dgs_1.3B",
                         "**VIST3A text -> 3D Gaussians (Wan 2.1 T2V 1.3B).**\n\n"
                         "Weights: `diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors`, `text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors`, "
                         "`vae/wan_2.1_vae.safetensors`, `loras/vist3a_1.3b_lora_ema/`, `vist3a/anysplat/` (lhjiang/anysplat) and "
                         "`vist3a/anysplat_stitched.pth`.\n\nDrag in the viewer to orbit; the .ply lands in output/VIST3A/.")


def spec_text_14b(oi):
    return _text_to_3dgs(oi, WAN14_FP8, LORA14, "auto", "blocks", "VIST3A/text_to_3dgs_14B",
                         "**VIST3A text -> 3D Gaussians (Wan 2.1 T2V 14B, offloaded).**\n\n"
                         "The 14B transformer (fp8 file, computed in bf16) stays in RAM and its blocks are streamed to the GPU "
                         "(offload = blocks); the text encoder and VAE are moved in and out by ComfyUI's memory manager. "
                         "Needs ~30 GB of RAM; with 40+ GB of VRAM set offload to comfy (faster), with 80 GB to none.\n\n"
                         "Weights: `diffusion_models/wan2.1_t2v_14B_fp8_e4m3fn.safetensors` (or the bf16/fp16 file), "
                         "`loras/vist3a_14b_lora_ema/`, plus the text encoder, VAE and decoder files of the 1.3B workflow.")


def spec_native(oi):
    neg = _neg(oi)
    return [
        _run_size(),
        (1, "UNETLoader", dict(unet_name=WAN13, weight_dtype="default"), {}, (40, 80), None),
        (2, "VIST3AApplyLoRAToModel", dict(lora_name=LORA13, strength=1.0), {"model": (1, 0)}, (40, 260), None),
        (3, "ModelSamplingSD3", dict(shift=5.0), {"model": (2, 0)}, (40, 440), None),
        (4, "VIST3ALoadWan", dict(model="(none)", text_encoder=UMT5, vae="(none)", dtype="auto", device="auto", offload="comfy"), {}, (40, 600), "Load UMT5 text encoder (VIST3A)"),
        (5, "VIST3ATextEncode", dict(prompt=PROMPT, camera_template=True, negative_prompt=neg), {"wan": (4, 0)}, (420, 520), None),
        (6, "EmptyHunyuanLatentVideo", dict(width=512, height=512, length=13, batch_size=1),
         {"width": SIZE, "height": SIZE, "length": FRAMES}, (420, 300), "Empty Wan latent"),
        (7, "KSampler", dict(seed=42, steps=50, cfg=7.5, sampler_name="uni_pc", scheduler="simple", denoise=1.0),
         {"model": (3, 0), "positive": (5, 0), "negative": (5, 1), "latent_image": (6, 0), "steps": STEPS}, (860, 80), None),
        (8, "VAELoader", dict(vae_name=VAE), {}, (860, 460), None),
        (9, "VIST3ALoadStitchedDecoder", dict(decoder="anysplat_stitched.pth", anysplat="anysplat/", precision="auto", device="auto"), {}, (860, 600), None),
        (10, "VIST3ADecodeSplats", dict(voxelize="auto", min_opacity=0.0), {"latent": (7, 0), "vae": (8, 0), "decoder": (9, 0)}, (1240, 80), None),
        (11, "VIST3APreviewSplats", dict(max_splats=1_000_000), {"splat": (10, 0), "cameras": (10, 1)}, (1620, 80), None),
        (12, "VIST3ASavePLY", dict(filename_prefix="VIST3A/native_wan", sh_degree="3", also_splat=True, also_spz=False), {"splat": (10, 0)}, (1240, 420), None),
        (13, "PreviewImage", {}, {"images": (10, 2)}, (1240, 640), "Decoded frames"),
        (14, "MarkdownNote", {"_text": "**Native ComfyUI Wan + VIST3A LoRA + Decode Splats.**\n\nComfyUI's Load Diffusion Model, "
                                       "KSampler (uni_pc / simple, ModelSamplingSD3 shift 5 approximates the official UniPC flow-shift-5 sampler) "
                                       "and Load VAE drive generation with ComfyUI's own memory management and offloading; VIST3A only adds the "
                                       "LoRA, the prompt template and the 3D decoder. The latent of any Wan 2.1 sampler works." + CPU_NOTE_KSAMPLER + ANY_COMFY},
         {}, (40, 820), "About this workflow"),
    ]


def spec_video(oi):
    return [
        _run_size(),
        (1, "LoadVideo", dict(file="vist3a_example_orbit.mp4"), {}, (40, 80), None),
        (2, "GetVideoComponents", {}, {"video": (1, 0)}, (40, 420), None),
        (3, "VIST3ALoadAnySplat", dict(anysplat="anysplat/", precision="auto", device="auto"), {}, (40, 600), None),
        (4, "VIST3AImagesToSplats", dict(max_views=24, size=448, resize="crop square", voxelize="auto", min_opacity=0.0),
         {"anysplat": (3, 0), "images": (2, 0), "max_views": MAX_VIEWS, "size": ANYSPLAT_SIZE}, (420, 80), None),
        (5, "VIST3APreviewSplats", dict(max_splats=1_000_000), {"splat": (4, 0), "cameras": (4, 1)}, (820, 80), None),
        (6, "VIST3ASavePLY", dict(filename_prefix="VIST3A/video_to_3dgs", sh_degree="3", also_splat=False, also_spz=False), {"splat": (4, 0)}, (420, 460), None),
        (7, "VIST3ARenderViews", dict(mode="predicted cameras", views=24, width=448, height=448, fov=50.0, elevation=15.0, background="black"),
         {"splat": (4, 0), "cameras": (4, 1), "width": ANYSPLAT_SIZE, "height": ANYSPLAT_SIZE}, (820, 560), None),
        (8, "PreviewImage", {}, {"images": (7, 0)}, (1200, 560), "Re-rendered input views"),
        (9, "MarkdownNote", {"_text": "**Images / video -> 3D Gaussians (plain AnySplat).**\n\nLoad a video (or batch images) of one scene, "
                                      "taken while moving around it. Weights: `vist3a/anysplat/` (lhjiang/anysplat: model.safetensors + config.json)."
                                      + CPU_NOTE_VIDEO + ANY_COMFY},
         {}, (40, 800), "About this workflow"),
    ]


def spec_native_splat_nodes(oi):
    """Text -> 3DGS handed to ComfyUI's own splat nodes (ComfyUI 0.28+): Create 3D File, Preview Splat / Save
    Splat framed by our 3D Viewer Camera, and Extract Mesh from Splat -> Save 3D Model. Our SPLAT is already in
    ComfyUI's splat axes (3DGS/OpenCV, y down; its viewers and mesh extraction turn that upright)."""
    nodes = [n for n in _text_to_3dgs(oi, WAN13, LORA13, "auto", "comfy", "VIST3A/native_splat", "") if n[0] <= 6 or n[0] == RS]
    return nodes + [
        (7, "VIST3AViewerCamera", dict(fov=35.0), {"splat": (6, 0), "cameras": (6, 1)}, (1240, 300), None),
        (8, "SplatToFile3D", dict(format="ply"), {"splat": (6, 0)}, (1240, 500), None),
        (9, "PreviewGaussianSplat", dict(viewport_state="", width=1024, height=1024), {"model_3d": (8, 0), "camera_info": (7, 0)},
         (420, ROW2), None),
        (10, "SaveGaussianSplat", dict(filename_prefix="VIST3A/native_splat", viewport_state="", width=1024, height=1024),
         {"model_3d": (8, 0), "camera_info": (7, 0)}, (860, ROW2), None),
        (11, "SplatToMesh", dict(resolution=384, kernel=5, smooth=0, level=0.4, min_component=500, min_opacity=0.02, color_sharpen=2.0),
         {"splat": (6, 0)}, (1620, 80), None),
        (12, "SaveGLB", dict(filename_prefix="VIST3A/native_splat_mesh"), {"mesh": (11, 0)}, (1240, ROW2), None),
        (13, "MarkdownNote", {"_text": "**VIST3A text -> 3D Gaussians -> ComfyUI's own splat nodes (ComfyUI 0.28 or newer).**\n\n"
                                       "Decode Splats outputs ComfyUI's native SPLAT (SH degree 3, what its viewers read), so every "
                                       "ComfyUI splat node takes it: Create 3D File + Preview Splat / Save Splat show and save it "
                                       "(output/VIST3A/), 3D Viewer Camera frames the scene in both, Extract Mesh from Splat + Save 3D "
                                       "Model make a coloured mesh. On older ComfyUI use the other VIST3A workflows. Weights as in the "
                                       "1.3B workflow." + CPU_NOTE_SAMPLE.replace(" and 8 views at 256x256", "")},
         {}, (40, ROW2), "About this workflow"),
    ]


# Workflows for every tested ComfyUI (generated against 0.3.75) and those that need ComfyUI's native
# splat nodes (0.28+, generated against it); `main` writes the set the running server can load.
# The file names are the template browser's card titles: short enough not to be cut (36 characters at
# most) and with a " - ", since the frontends show the name again, dashes as spaces, as the card's subtitle,
# which our web extension replaces with the summary below (web/templates.json).
SPECS = {
    "VIST3A text to 3D splats - Wan 1.3B.json": spec_text_1_3b,
    "VIST3A text to 3D splats - Wan 14B.json": spec_text_14b,
    "VIST3A text to 3D splats - KSampler.json": spec_native,
    "VIST3A video to 3D splats - AnySplat.json": spec_video,
}
NATIVE_SPECS = {
    "VIST3A text to 3D splats - native.json": spec_native_splat_nodes,
}
# One sentence per workflow: the template card's subtitle and the header of its picture (tools/thumbnails.py).
SUMMARIES = {  # at most two lines of a card's subtitle (about 70 characters)
    "VIST3A text to 3D splats - Wan 1.3B": "Text to 3D Gaussians with Wan 2.1 1.3B: viewer, PLY and orbit video.",
    "VIST3A text to 3D splats - Wan 14B": "Text to 3D Gaussians with Wan 2.1 14B, blocks streamed to the GPU.",
    "VIST3A text to 3D splats - KSampler": "ComfyUI's own Wan loader, KSampler and VAE, then Decode Splats.",
    "VIST3A video to 3D splats - AnySplat": "A video or photos of one scene to 3D Gaussians with AnySplat.",
    "VIST3A text to 3D splats - native": "Text to 3D Gaussians in ComfyUI's own splat nodes (0.28+), and a mesh.",
}
TEMPLATE_SUMMARIES = REPO / "web" / "templates.json"


def template_summaries() -> dict:
    """web/templates.json: {template name: summary} for every shipped workflow."""
    return {Path(name).stem: SUMMARIES[Path(name).stem] for name in sorted({**SPECS, **NATIVE_SPECS})}


# ------------------------------------------------------------------------------------ the layout
# Node heights the frontend needs at width 340 (measured on 1.32.9 and 1.58.1 from node.computeSize(); Load Video
# grows to 414 once its preview of the (square) example video loads);
# a node is never drawn smaller than this, so stacking by these sizes keeps title bars and bodies apart.
MIN_HEIGHT = {
    "VIST3ALoadWan": 180, "VIST3ALoadLoRA": 84, "VIST3AApplyLoRAToModel": 84, "VIST3ATextEncode": 190, "VIST3ASample": 270,
    "VIST3ALoadStitchedDecoder": 132, "VIST3ALoadAnySplat": 108, "VIST3ADecodeSplats": 150, "VIST3AImagesToSplats": 220,
    "VIST3ARenderViews": 224, "VIST3ASavePLY": 180, "VIST3APreviewSplats": 520, "UNETLoader": 84, "ModelSamplingSD3": 60,
    "EmptyHunyuanLatentVideo": 132, "KSampler": 264, "VAELoader": 60, "PreviewImage": 200, "SaveAnimatedWEBP": 156,
    "LoadVideo": 420, "GetVideoComponents": 68, "MarkdownNote": 260, "VIST3ARunSize": 200,
    # ComfyUI 0.28's splat nodes (frontend 1.45.21); its 3D viewports need 200 px below the other widgets
    "TransformSplat": 320, "SplatToFile3D": 84, "SplatToMesh": 250, "SaveGLB": 320, "VIST3AViewerCamera": 100,
    "PreviewGaussianSplat": 400, "SaveGaussianSplat": 424,
}
WIDTH = {"VIST3APreviewSplats": 480, "PreviewGaussianSplat": 400, "SaveGaussianSplat": 400}
NODE_WIDTH, TITLE_H, GAP_X, GAP_Y = 340, 30, 50, 40
ROW2 = 2000  # spec y from here on: the node goes to a second band of columns below the first
# Where the saved view may put nodes on a 1600x1000 window with 1.32.9's side bar (48 px) on the left,
# the menu, tabs and floating Run toolbar on top (~140 px) and the canvas buttons at the bottom right.
VIEW_BOX = (64, 150, 1580, 950)
KEEP_OUT = (1330, 730, 1600, 1000)  # the minimap (1.32 and 1.45 open it by default) and the zoom buttons under it


def layout(spec: list) -> tuple[dict, dict, dict]:
    """Spec positions -> (pos, size per node id, saved view): nodes keep their band (spec y below or from ROW2 on),
    their column in it (spec x) and their order in that column (spec y), but are stacked by real heights, so
    nothing overlaps; the second band starts below the first; the view fits them all."""
    bands: dict[int, dict[int, list]] = {}
    for node in spec:
        bands.setdefault(int(node[4][1] >= ROW2), {}).setdefault(node[4][0], []).append(node)
    pos, size, top = {}, {}, TITLE_H
    for band in sorted(bands):
        cols, x, bottom = bands[band], 0, top
        for cx in sorted(cols):
            y, width = top, 0
            for node in sorted(cols[cx], key=lambda n: n[4][1]):
                w, h = WIDTH.get(node[1], NODE_WIDTH), MIN_HEIGHT.get(node[1], 200)
                pos[node[0]], size[node[0]] = [x, y], [w, h]
                bottom = max(bottom, y + h)
                y += h + TITLE_H + GAP_Y
                width = max(width, w)
            x += width + GAP_X
        top = bottom + TITLE_H + GAP_Y
    x0 = min(p[0] for p in pos.values())
    y0 = min(p[1] - TITLE_H for p in pos.values())
    x1 = max(pos[i][0] + size[i][0] for i in pos)
    y1 = max(pos[i][1] + size[i][1] for i in pos)
    bx0, by0, bx1, by1 = VIEW_BOX
    scale = min(1.0, (bx1 - bx0) / (x1 - x0), (by1 - by0) / (y1 - y0))
    scale = int(scale * 100) / 100

    def in_keep_out(scale: float) -> bool:  # a node (title bar included) under the minimap at this zoom
        kx0, ky0, kx1, ky1 = KEEP_OUT
        for i in pos:
            left, top = bx0 + (pos[i][0] - x0) * scale, by0 + (pos[i][1] - TITLE_H - y0) * scale
            right, bottom = left + size[i][0] * scale, top + (size[i][1] + TITLE_H) * scale
            if left < kx1 and kx0 < right and top < ky1 and ky0 < bottom:
                return True
        return False

    while in_keep_out(scale) and scale > 0.3:
        scale = round(scale - 0.01, 2)
    view = {"scale": scale, "offset": [bx0 / scale - x0, by0 / scale - y0]}
    return pos, size, view


def build_ui(spec: list, object_info: dict) -> dict:
    """Spec -> UI-format graph (frontend workflow version 0.4)."""
    nodes, links, link_id = [], [], 0
    out_links: dict[tuple[int, int], list[int]] = {}
    by_id = {n[0]: n for n in spec}
    for nid, typ, widgets, inputs, pos, title in spec:
        for name, (src, slot) in inputs.items():
            link_id += 1
            src_type = by_id[src][1]
            out_type = object_info[src_type]["output"][slot]
            links.append([link_id, src, slot, nid, None, out_type, name])
            out_links.setdefault((src, slot), []).append(link_id)
    order = {n[0]: i for i, n in enumerate(spec)}
    positions, sizes, view = layout(spec)
    for nid, typ, widgets, inputs, pos, title in spec:
        node = {"id": nid, "type": typ, "pos": positions[nid], "size": sizes[nid], "flags": {}, "order": order[nid], "mode": 0,
                "inputs": [], "outputs": [], "properties": {"Node name for S&R": typ}}
        if typ == "MarkdownNote":
            node.update(widgets_values=[widgets["_text"]], color="#432", bgcolor="#653")
            node["properties"] = {}
            if title:
                node["title"] = title
            nodes.append(node)
            continue
        info = object_info[typ]
        values = []
        slot = 0
        for name, t, opts, optional in _ordered_inputs(info):
            widget = _is_widget(t, opts)
            if widget:
                value = widgets[name] if name in widgets else opts.get("default")
                if isinstance(t, list) and value not in t:
                    raise ValueError(f"{typ}.{name}: {value!r} not in {t[:5]}...")
                values.append(value)
                if _extra_values(name, t, opts):
                    if t == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed")):
                        values.append("fixed")
                    if any(opts.get(k) for k in UPLOAD_KEYS):
                        values.append("image")
                if name not in inputs:
                    continue
            link = None
            if name in inputs:
                link = next(l[0] for l in links if l[3] == nid and l[6] == name)
                for l in links:
                    if l[0] == link:
                        l[4] = slot
            # a widget driven by a link (Run Size's outputs) is saved as an input that names its widget
            node["inputs"].append({"name": name, "type": t, "link": link, **({"widget": {"name": name}} if widget else {}),
                                   **({"shape": 7} if optional else {})})
            slot += 1
        for i, (t, name) in enumerate(zip(info["output"], info["output_name"])):
            node["outputs"].append({"name": name, "type": t, "links": out_links.get((nid, i), []), "slot_index": i})
        node["widgets_values"] = values
        if title:
            node["title"] = title
        nodes.append(node)
    links = [l[:6] for l in links]
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "vist3a/" + json.dumps([n[:2] for n in spec]))),
        "revision": 0,
        "last_node_id": max(n[0] for n in spec),
        "last_link_id": link_id,
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": view, "frontendVersion": "1.32.9"},
        "version": 0.4,
    }


def main(argv=None) -> int:
    import urllib.request

    parser = argparse.ArgumentParser(description="regenerate workflows/*.json from a running ComfyUI "
                                     "(0.3.75: the plain ones; 0.28+: the ones using native splat nodes)")
    parser.add_argument("--port", type=int, default=8188)
    args = parser.parse_args(argv)
    with urllib.request.urlopen(f"http://127.0.0.1:{args.port}/object_info") as r:
        object_info = json.load(r)
    object_info.setdefault("MarkdownNote", {"input": {"required": {}}, "output": [], "output_name": []})
    WORKFLOWS.mkdir(exist_ok=True)
    native = "SplatToFile3D" in object_info  # ComfyUI 0.28+
    for name, spec in (NATIVE_SPECS if native else SPECS).items():
        ui = build_ui(spec(object_info), object_info)
        (WORKFLOWS / name).write_text(json.dumps(ui, indent=2) + "\n")
        print("wrote", WORKFLOWS / name)
    TEMPLATE_SUMMARIES.write_text(json.dumps(template_summaries(), indent=2) + "\n")
    print("wrote", TEMPLATE_SUMMARIES)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
