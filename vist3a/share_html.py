"""One file to share a scene: a self-contained HTML page with the splat viewer and the scene inside.

Why: people share a scene by sending one file. The page holds the bundled Spark viewer of the
ComfyUI pack (``web/vendor/spark_three.js`` and ``web/splat_viewer.js``, inlined) and the scene as
``.spz`` bytes (the compact format Spark reads, ~10x smaller than the PLY) in base64, so it opens
from disk with a double-click, offline, in any current browser: nothing is fetched, no server is
needed (a ``file://`` page may not import modules from other files, so everything is inline).

The scene is packed as the Preview Splats node packs it (:func:`vist3a.scene_view.preview_scene`):
the camera starts from its robust bounds and up direction (from the predicted cameras when given,
else from the splats' shape) on the side of the first predicted camera. The ``.spz`` bytes are
base64-encoded into the file block by block as they are written, never held as one base64 copy.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Optional

from .atomic import atomic_stream
from .errors import VIST3AError
from .formats.common import VIEWER_SH_DEGREE, PathLike
from .gaussians import Gaussians
from .scene_view import CameraSet, preview_scene

__all__ = ["HtmlError", "save_html", "viewer_sources", "WEB_DIR"]

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
"""The node pack's web/ folder (a checkout, a ComfyUI custom_nodes folder or an editable install has it)."""

_B64_BLOCK = 3 * (1 << 20)  # bytes encoded at a time (a multiple of 3: no padding inside the stream)
# the bundle's export list: its last one (a license comment and the footer that restores window.__THREE__ follow it)
_SPARK_EXPORT = re.compile(r"export\s*\{([^{}]*)\}\s*;?")
_VIEWER_IMPORT = re.compile(r'^import\s*\{([^}]*)\}\s*from\s*"\./vendor/spark_three\.js";\s*$', re.M)


class HtmlError(VIST3AError, ValueError):
    """The page cannot be made (viewer files missing or changed, nothing to show)."""


def _inline_safe(js: str) -> str:
    """Script text that cannot end its <script> element early or switch the HTML parser's script mode."""
    return js.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT").replace("<!--", "<\\!--")


def viewer_sources(web_dir: Path = WEB_DIR) -> tuple[str, str]:
    """(Spark bundle, our viewer) as scripts for one page: the bundle hands its exports to a global, the
    viewer takes them from there instead of importing a file."""
    spark_path, viewer_path = web_dir / "vendor" / "spark_three.js", web_dir / "splat_viewer.js"
    for p in (spark_path, viewer_path):
        if not p.is_file():
            raise HtmlError(f"scene.html embeds the viewer of the VIST3A checkout, but {p} is missing; use a full checkout "
                            "of the repository (git clone, pip install -e .)")
    spark = spark_path.read_text(encoding="utf-8")
    exports = list(_SPARK_EXPORT.finditer(spark))
    if not exports:
        raise HtmlError(f"{spark_path} does not end with an ES module export list; rebuild it with tools/vendor_spark/build.sh")
    last = exports[-1]
    names = []
    for item in last.group(1).split(","):
        local, _, public = (part.strip() for part in item.partition(" as "))
        names.append(f"{public or local}: {local}")
    spark = spark[:last.start()] + "globalThis.__vist3aSpark = {" + ", ".join(names) + "};\n" + spark[last.end():]
    viewer = viewer_path.read_text(encoding="utf-8")
    viewer, found = _VIEWER_IMPORT.subn(lambda m: f"const {{{m.group(1)}}} = globalThis.__vist3aSpark;", viewer)
    if found != 1:
        raise HtmlError(f"{viewer_path} no longer imports Spark from ./vendor/spark_three.js; update vist3a/formats/html.py")
    viewer = re.sub(r"^export\s+(class|const|function)\b", r"\1", viewer, flags=re.M)
    return _inline_safe(spark), _inline_safe(viewer)


_PAGE_HEAD = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="VIST3A">
<title>{title}</title>
<style>
html, body {{ margin: 0; height: 100%; background: #212124; overflow: hidden; }}
#vist3a-view {{ position: fixed; inset: 0; }}
.vist3a-overlay {{ position: absolute; color: #fff; font: 12px/1.35 sans-serif; background: rgba(0,0,0,0.62);
  padding: 2px 7px; border-radius: 4px; pointer-events: none; text-shadow: 0 1px 2px #000; max-width: calc(100% - 20px);
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
#vist3a-bar {{ position: absolute; right: 8px; top: 8px; display: flex; gap: 4px; }}
#vist3a-bar button {{ background: rgba(30,30,34,0.85); color: #eee; border: 1px solid #555; border-radius: 4px;
  padding: 3px 7px; font: 12px sans-serif; cursor: pointer; }}
</style>
</head>
<body>
<div id="vist3a-view"><div id="vist3a-bar"><button id="vist3a-up" title="Up axis: auto / ±y / ±z / ±x (U)">up</button>
<button id="vist3a-reset" title="Reset view (double-click, R)">reset</button>
<button id="vist3a-full" title="Full screen (F)">full screen</button></div>
<div class="vist3a-overlay" style="left: 8px; bottom: 8px; font-size: 11px">{title_text} · drag: orbit · right/shift-drag: pan · wheel: zoom · U: up axis</div></div>
<script type="application/json" id="vist3a-info">{info}</script>
<script type="application/octet-stream" id="vist3a-scene" data-format="spz" data-bytes="{nbytes}">"""

_PAGE_BOOT = """
const decode = (text) => {
  if (Uint8Array.fromBase64) return Uint8Array.fromBase64(text);
  const out = new Uint8Array(Number(document.getElementById("vist3a-scene").dataset.bytes));
  const step = 4 << 18;  // decode in slices: atob of the whole scene would need one huge string copy
  let at = 0;
  for (let i = 0; i < text.length; i += step) {
    const part = atob(text.slice(i, i + step));
    for (let j = 0; j < part.length; j++) out[at + j] = part.charCodeAt(j);
    at += part.length;
  }
  return out;
};
const info = JSON.parse(document.getElementById("vist3a-info").textContent);
const box = document.getElementById("vist3a-view");
const viewer = new SplatViewer(box, { background: [0.13, 0.13, 0.14] });
window.VIST3A_VIEWER = viewer;
document.getElementById("vist3a-up").onclick = () => viewer.cycleUp();
document.getElementById("vist3a-reset").onclick = () => viewer.reset();
document.getElementById("vist3a-full").onclick = () => viewer.fullscreen();
viewer.canvas?.focus();
const data = document.getElementById("vist3a-scene");
viewer.load(decode(data.textContent.trim()), info).catch((err) => {
  viewer.stats.error = String(err);
  console.error(err);
});
"""


def save_html(g: Gaussians, path: PathLike, sh_degree: Optional[int] = VIEWER_SH_DEGREE, *, title: Optional[str] = None,
              cameras: Optional[CameraSet] = None, web_dir: Path = WEB_DIR) -> Path:
    """Write a self-contained viewer page for ``g`` (SH up to degree 3, Spark's limit), atomically.

    ``cameras`` (the decoder's predicted cameras, optional) give the up direction and the side the viewer
    starts from; ``title`` defaults to the file name.
    """
    if g.num == 0:
        raise HtmlError(f"refusing to write {path}: there are no Gaussians to show (all pruned?)")
    spark, viewer = viewer_sources(web_dir)
    degree = min(VIEWER_SH_DEGREE if sh_degree is None else int(sh_degree), g.sh_degree, 3)
    packed = preview_scene(g.detach().truncate_sh(degree), g.num, cameras)
    info = packed.fields()
    name = title or Path(path).stem
    head = _PAGE_HEAD.format(title=html.escape(name), title_text=html.escape(name), nbytes=len(packed.spz),
                             info=json.dumps(info).replace("</", "<\\/"))
    view = memoryview(packed.spz)
    with atomic_stream(path) as f:
        f.write(head.encode("utf-8"))
        for start in range(0, len(view), _B64_BLOCK):
            f.write(base64.b64encode(view[start:start + _B64_BLOCK]))
        f.write(b"</script>\n<script type=\"module\">\n")
        f.write(spark.encode("utf-8"))
        f.write(b"\n</script>\n<script type=\"module\">\n")
        f.write(viewer.encode("utf-8"))
        f.write(_PAGE_BOOT.encode("utf-8"))
        f.write(b"</script>\n</body>\n</html>\n")
    return Path(path)
