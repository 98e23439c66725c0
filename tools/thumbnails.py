"""Template-browser pictures for the shipped workflows: workflows/<name>.jpg beside each <name>.json.

ComfyUI lists a custom node pack's workflows/*.json as templates and asks for the card picture at
/api/workflow_templates/<pack>/<name>.jpg (frontends 1.32 to 1.58). No real weights can ship, so this
runs every workflow on a real ComfyUI with the tiny random models (heavy sizes shrunk as in the tests),
renders the Gaussians it saved with our renderer around the scene's up axis, and says "tiny random
models" in the picture. Rerun it after adding a workflow:

    python tools/thumbnails.py            # all workflows/*.json without a picture
    python tools/thumbnails.py --all      # redo every picture
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_workflows import SUMMARIES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
SIZE = 512
CAPTION = "rendered with tiny random models (real weights give a real scene)"


def _harness():
    """comfy_harness / comfyui_env live in tests/ (or tools/ after the move)."""
    for d in (REPO / "tools", REPO / "tests"):
        if (d / "comfy_harness.py").is_file() or (d / "comfyui_env.py").is_file():
            sys.path.insert(0, str(d))
    sys.path.insert(0, str(REPO))
    import comfy_harness
    import comfyui_env

    return comfy_harness, comfyui_env


def title_of(workflow: dict, stem: str) -> str:
    """The picture's header: the workflow's one-line summary (the template card's subtitle, from
    tools/comfy_workflows.py), else the first bold line of its note, else the file name."""
    if stem in SUMMARIES:
        return SUMMARIES[stem]
    for node in workflow.get("nodes", []):
        if node.get("type") in ("MarkdownNote", "Note") and node.get("widgets_values"):
            text = str(node["widgets_values"][0])
            if text.startswith("**") and "**" in text[2:]:
                return text[2:text.index("**", 2)].rstrip(".")
    return stem.replace("_", " ")


def render_scene(gaussians, size: int = SIZE):
    """One orbit view of the scene around its up axis (float RGB [H, W, 3] in 0..1)."""
    import torch

    from vist3a.render import framing_distance, orbit_cameras, render_gaussians
    from vist3a.scene_view import view_hint

    hint = view_hint(gaussians)
    fov = 50.0
    dist = framing_distance(hint["radius"], fov, size, size, margin=1.08)
    c2w, K = orbit_cameras(hint["center"], dist, 1, 20.0, fov, size, size, up=tuple(hint["up"]), start_azimuth_deg=30.0)
    with torch.no_grad():
        rgb, _, _ = render_gaussians(gaussians.to("cpu"), c2w, K, size, size, background=(0.13, 0.13, 0.14))
    return rgb[0].clamp(0, 1)


HEADER_SIZES = (26, 24, 22, 20, 18)  # font sizes tried for the header, largest first
HEADER_LINES = 3


def fit_header(text: str, width: int, measure) -> tuple[int, list[str]]:
    """(font size, lines): the largest size at which ``text`` wraps into HEADER_LINES lines of at most ``width``
    pixels (``measure(line, size)`` gives a line's width). The whole text, never cut: ValueError if it cannot."""
    words = text.split()
    for size in HEADER_SIZES:
        lines: list[str] = []
        for word in words:
            if lines and measure(f"{lines[-1]} {word}", size) <= width:
                lines[-1] = f"{lines[-1]} {word}"
            else:
                lines.append(word)
        if len(lines) <= HEADER_LINES and all(measure(line, size) <= width for line in lines):
            return size, lines
    raise ValueError(f"the header does not fit {HEADER_LINES} lines of {width} px even at {HEADER_SIZES[-1]} px: {text!r}; shorten it")


def compose(rgb, title: str, caption: str = CAPTION):
    """Picture with the whole header (``title``) on top and the caption below, both on dark bars (PIL image)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray((np.asarray(rgb) * 255).round().astype("uint8"), "RGB")
    draw = ImageDraw.Draw(img)
    w, h = img.size
    try:
        fonts = {size: ImageFont.load_default(size=size) for size in HEADER_SIZES}
        small = ImageFont.load_default(size=17)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        fonts = {size: ImageFont.load_default() for size in HEADER_SIZES}
        small = ImageFont.load_default()
    size, lines = fit_header(title, w - 28, lambda line, s: draw.textlength(line, font=fonts[s]))
    step = size + 6
    top = 12 + step * len(lines)
    draw.rectangle([0, 0, w, top], fill=(0, 0, 0))
    for i, line in enumerate(lines):
        draw.text((14, 8 + step * i), line, fill=(255, 255, 255), font=fonts[size])
    cap = textwrap.wrap(caption, 52)[:2]
    bottom = h - 10 - 22 * len(cap)
    draw.rectangle([0, bottom, w, h], fill=(0, 0, 0))
    for i, line in enumerate(cap):
        draw.text((14, bottom + 5 + 22 * i), line, fill=(255, 214, 90), font=small)
    return img


def _saved_gaussians(server, history):
    from vist3a.formats import load_ply

    for out in history["outputs"].values():  # our Save PLY ("vist3a_files") or ComfyUI's Save Splat (0.28)
        for items in out.values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and str(item.get("filename", "")).endswith(".ply"):
                    return load_ply(server.output_path(item))
    saved = sorted((server.base / "output").rglob("*.ply"), key=lambda p: p.stat().st_mtime)  # native Save Splat
    if saved:
        return load_ply(saved[-1])
    raise RuntimeError("the workflow saved no .ply (it needs a Save PLY or Save Splat node for its thumbnail)")


def make_thumbnails(names: list[Path], log=print) -> list[Path]:
    harness, env = _harness()
    from comfy_workflows import NATIVE_SPECS, ui_to_api

    written = []
    for version in ("0.3.75", "0.28.0"):  # the native-splat workflows need ComfyUI 0.28's nodes
        todo = [p for p in names if (p.name in NATIVE_SPECS) == (version == "0.28.0")]
        if todo:
            written += _run_on(version, todo, harness, env, ui_to_api, log)
    return written


def _run_on(version, names, harness, env, ui_to_api, log) -> list[Path]:
    import json

    from vist3a.atomic import atomic_save_bytes
    from vist3a.tiny_release import write_tiny_release

    written = []
    with tempfile.TemporaryDirectory(prefix="vist3a_thumbs_") as tmp:
        base = Path(tmp)
        write_tiny_release(base / "models")
        env.write_example_video(base / "input" / "vist3a_example_orbit.mp4")
        server = harness.ComfyServer(base, base / "models", version=version).start()
        try:
            info = server.object_info()
            for path in names:
                ui = json.loads(path.read_text())
                prompt = ui_to_api(ui, info)
                for node in prompt.values():
                    node["inputs"].update(harness.FAST.get(node["class_type"], {}))
                log(f"[thumbnails] running {path.name} with tiny random models ...")
                history, seconds = server.run(prompt, timeout=900)
                if history["status"].get("status_str") != "success":
                    raise RuntimeError(f"{path.name} failed: {history['status']}")
                img = compose(render_scene(_saved_gaussians(server, history)), title_of(ui, path.stem))
                import io

                buf = io.BytesIO()
                img.save(buf, "JPEG", quality=88)
                out = atomic_save_bytes(path.with_suffix(".jpg"), buf.getvalue())
                log(f"[thumbnails] wrote {out} ({seconds:.0f} s)")
                written.append(out)
        finally:
            server.stop()
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="redo every picture, not only the missing ones")
    parser.add_argument("names", nargs="*", help="workflow file names (default: all in workflows/)")
    args = parser.parse_args(argv)
    paths = [WORKFLOWS / n for n in args.names] if args.names else sorted(WORKFLOWS.glob("*.json"))
    if not args.all and not args.names:
        paths = [p for p in paths if not p.with_suffix(".jpg").is_file()]
    if not paths:
        print("[thumbnails] every workflow has a picture (use --all to redo them)")
        return 0
    make_thumbnails(paths)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
