"""Headless Debian chromium drives the real ComfyUI frontend: load a shipped workflow (no missing node
types), queue it from the UI, and check the VIST3A viewer draws the splat (pixels that are not
background), orbits, zooms, resets and goes full screen. Saves the README screenshots to docs/images/.

Installs what it needs in a scripted, cached way: `apt-get install -y chromium` when /usr/bin/chromium
is missing (root only), and `npm ci` in tests/browser (committed package-lock.json; playwright-core
drives the system chromium, no browser is downloaded).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from guards import HANG_S

from comfy_harness import FAST, REPO, ComfyServer
from comfy_workflows import WORKFLOWS, ui_to_api
from comfyui_env import NEW_FRONTEND

pytestmark = [pytest.mark.comfyui, pytest.mark.browser, pytest.mark.slow]

BROWSER_DIR = REPO / "tests" / "browser"
DOCS_IMAGES = REPO / "docs" / "images"
CHROMIUM = os.environ.get("VIST3A_CHROMIUM", "/usr/bin/chromium")


def _ensure_chromium() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True)
        if not Path(CHROMIUM).exists():
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, check=True, capture_output=True)
        return CHROMIUM
    pytest.skip("chromium is not installed and cannot be installed here (needs root + apt-get)")


def _ensure_playwright() -> None:
    marker = BROWSER_DIR / "node_modules" / "playwright-core" / "package.json"
    lock = BROWSER_DIR / "package-lock.json"
    stamp = BROWSER_DIR / "node_modules" / ".vist3a-lock"
    if marker.is_file() and stamp.is_file() and stamp.read_text() == lock.read_text():
        return
    if not shutil.which("npm"):
        pytest.skip("npm is not installed")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BROWSER_DIR, check=True, capture_output=True)
    stamp.write_text(lock.read_text())


def _write_showcase_ply(path: Path) -> Path:
    """A small synthetic scene (checkered floor, red sphere, blue box, yellow ring) for the README shot."""
    from vist3a.formats import save_ply
    from vist3a.gaussians import Gaussians, rgb_to_sh0

    g = torch.Generator().manual_seed(0)
    parts = []

    def add(means, rgb, scale):
        n = means.shape[0]
        parts.append((means, torch.full((n, 3), scale), rgb.expand(n, 3) if rgb.ndim == 1 else rgb))

    u, v = torch.meshgrid(torch.linspace(-1.5, 1.5, 90), torch.linspace(-1.5, 1.5, 90), indexing="ij")
    floor = torch.stack([u.flatten(), torch.full_like(u.flatten(), 0.6), v.flatten()], 1)
    checker = ((torch.floor(u * 2.5) + torch.floor(v * 2.5)) % 2).flatten()[:, None]
    add(floor, 0.25 + 0.55 * checker * torch.tensor([1.0, 1.0, 1.0]) + 0.1, 0.018)
    d = torch.randn(6000, 3, generator=g)
    add(0.45 * d / d.norm(dim=1, keepdim=True) + torch.tensor([-0.5, 0.1, 0.0]), torch.tensor([0.9, 0.15, 0.1]), 0.02)
    box = torch.rand(6000, 3, generator=g) - 0.5
    face = torch.randint(0, 3, (6000,), generator=g)
    box[torch.arange(6000), face] = torch.sign(box[torch.arange(6000), face]) * 0.5
    add(box * 0.6 + torch.tensor([0.6, 0.3, 0.2]), torch.tensor([0.15, 0.35, 0.9]), 0.018)
    t = torch.linspace(0, 2 * math.pi, 1500)
    add(torch.stack([0.05 + 1.1 * torch.cos(t), -0.35 + 0.05 * torch.sin(4 * t), 1.1 * torch.sin(t)], 1), torch.tensor([1.0, 0.85, 0.1]), 0.025)
    means = torch.cat([p[0] for p in parts])
    scales = torch.cat([p[1] for p in parts])
    rgb = torch.cat([p[2] for p in parts]).clamp(0, 1)
    n = means.shape[0]
    gs = Gaussians(means, scales, torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4).contiguous(), torch.full((n,), 0.95),
                   rgb_to_sh0(rgb)[:, :, None].contiguous())
    return save_ply(gs, path)


COMFY28 = "comfyui-0.28.0"  # ComfyUI 0.28.0 with the frontend it pins (1.45.21, in its own venv)


def _write_donut_spz(path: Path, n: int = 1_000_000) -> Path:
    """A z-up donut of n splats (pink icing on top, SH degree 3): the 1M-splat viewer scene."""
    from vist3a.atomic import atomic_save_bytes
    from vist3a.formats.spz import spz_bytes
    from vist3a.gaussians import Gaussians, rgb_to_sh0

    g = torch.Generator().manual_seed(0)
    u = torch.rand(n, generator=g) * 2 * math.pi
    v = torch.rand(n, generator=g) * 2 * math.pi
    tube = 0.35 * torch.rand(n, generator=g).sqrt()
    ring = 1.0 + tube * torch.cos(v)
    means = torch.stack([ring * torch.cos(u), ring * torch.sin(u), tube * torch.sin(v)], 1)
    icing = (means[:, 2] > 0.08)[:, None].float()
    rgb = icing * torch.tensor([0.95, 0.45, 0.7]) + (1 - icing) * torch.tensor([0.75, 0.5, 0.25])
    sh = torch.randn(n, 3, 16, generator=g) * 0.03
    sh[:, :, 0] = rgb_to_sh0(rgb)
    gs = Gaussians(means, torch.full((n, 3), 0.006), torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4).contiguous(),
                   torch.full((n,), 0.9), sh)
    return atomic_save_bytes(path, spz_bytes(gs, 3, compresslevel=1))


def _load_and_preview(file: str, max_splats: int = 1_000_000) -> dict:
    """Load PLY -> Preview Splats, as a UI-format graph with a new workflow id (the viewer restores the latest run of
    its workflow from the server's history; each test's graph is a workflow of its own)."""
    import uuid

    return {
        "id": str(uuid.uuid4()), "revision": 0, "last_node_id": 2, "last_link_id": 1, "version": 0.4, "config": {}, "groups": [],
        "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
        "links": [[1, 1, 0, 2, 0, "SPLAT"]],
        "nodes": [
            {"id": 1, "type": "VIST3ALoadPLY", "pos": [40, 120], "size": [340, 110], "flags": {}, "order": 0, "mode": 0, "inputs": [],
             "outputs": [{"name": "splat", "type": "SPLAT", "links": [1], "slot_index": 0}], "properties": {},
             "widgets_values": [file, ""]},
            {"id": 2, "type": "VIST3APreviewSplats", "pos": [420, 120], "size": [520, 560], "flags": {}, "order": 1, "mode": 0,
             "inputs": [{"name": "splat", "type": "SPLAT", "link": 1}, {"name": "cameras", "type": "CAMERAS", "link": None, "shape": 7}],
             "outputs": [], "properties": {}, "widgets_values": [max_splats]},
        ],
    }


@pytest.fixture(scope="module", params=["pinned", NEW_FRONTEND, COMFY28])
def browser_server(request, tmp_path_factory):
    """The frontend ComfyUI 0.3.75 pins (1.32.x, README screenshots), a current one (--front-end-root), and
    ComfyUI 0.28.0 with its pinned frontend."""
    from comfyui28_env import FRONTEND as FRONTEND28
    from comfyui28_env import missing_reason

    from vist3a.tiny_release import write_tiny_release

    from comfyui_env import install_frontend, write_example_video

    version = "0.28.0" if request.param == COMFY28 else "0.3.75"
    if version == "0.28.0" and missing_reason():
        pytest.skip(missing_reason())
    chromium = _ensure_chromium()
    _ensure_playwright()
    extra = [] if request.param in ("pinned", COMFY28) else ["--front-end-root", str(install_frontend(request.param))]
    base = tmp_path_factory.mktemp("comfy_browser")
    write_tiny_release(base / "models")
    write_example_video(base / "input" / "vist3a_example_orbit.mp4")
    _write_showcase_ply(base / "input" / "vist3a_showcase.ply")
    _write_donut_spz(base / "input" / "vist3a_donut_1m.spz")
    srv = ComfyServer(base, base / "models", extra, version=version).start()
    srv.chromium = chromium
    srv.frontend = FRONTEND28 if request.param == COMFY28 else request.param
    srv.shots = request.param == "pinned"
    yield srv
    srv.stop()


def _drive(server, workflow: Path, overrides: dict, **shots) -> dict:
    cfg = {"url": server.url, "workflow": str(workflow), "overrides": overrides, "chromium": server.chromium, **shots}
    t0 = time.time()
    try:
        out = subprocess.run(["node", "ui_test.mjs", json.dumps(cfg)], cwd=BROWSER_DIR, capture_output=True, text=True, timeout=HANG_S)
    except subprocess.TimeoutExpired as e:  # say how far it got (ui_test logs its steps on stderr)
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise AssertionError(f"ui_test.mjs ran over the {HANG_S:.0f} s hang guard; its log:\n{err[-3000:]}") from None
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.time() - t0, 1)
    assert not result.get("fatal"), result["fatal"]
    return result


def _non_background(png: Path) -> float:
    from PIL import Image

    with Image.open(png) as im:
        im = im.convert("RGB")
        pixels = list(im.get_flattened_data() if hasattr(im, "get_flattened_data") else im.getdata())
    from collections import Counter

    bg = Counter(pixels).most_common(1)[0][0]
    return sum(1 for p in pixels if sum(abs(a - b) for a, b in zip(p, bg)) > 30) / len(pixels)


def test_ui_runs_the_text_to_3dgs_workflow_and_the_viewer_draws(browser_server, tmp_path):
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    wf = WORKFLOWS / "VIST3A text to 3D splats - Wan 1.3B.json"
    graph_shot = DOCS_IMAGES / "comfyui_graph.png" if browser_server.shots else tmp_path / "graph.png"
    result = _drive(browser_server, wf, FAST, graphShot=str(tmp_path / "graph_before.png"),
                    graphAfterShot=str(graph_shot), viewerShot=str(tmp_path / "viewer_tiny.png"))
    assert result["missingTypes"] == [], result["missingTypes"]
    assert result["frontendVersion"], result
    if browser_server.frontend != "pinned":
        assert result["frontendVersion"] == browser_server.frontend
    # the frontend's own graphToPrompt agrees with the test's UI -> API conversion
    ours = browser_server.api_from_workflow(wf)
    theirs = result["prompt"]
    assert set(theirs) == set(ours)
    for nid, node in ours.items():
        assert theirs[nid]["class_type"] == node["class_type"]
        assert theirs[nid]["inputs"] == node["inputs"], (nid, theirs[nid]["inputs"], node["inputs"])
    assert result["viewerLoaded"] is True, result
    viewer = result["viewer"]
    assert viewer["splats"] > 0 and viewer["frames"] >= 1
    assert viewer["nonBackground"] > 0.005, viewer  # tiny random weights: a faint cloud
    assert viewer["upSource"] == "cameras", viewer  # Decode Splats' predicted cameras give the up axis
    assert _non_background(tmp_path / "viewer_tiny.png") > 0.02
    assert result["redrawn"] and result["afterInteraction"]["yaw"] != viewer["yaw"] and result["afterInteraction"]["dist"] > viewer["dist"]
    assert result["afterReset"] == {"yaw": viewer["yaw"], "dist": viewer["dist"]}
    assert result["upAfterToggle"] == "+y" and result["upAfterCycle"].startswith("auto"), result
    assert "vist3a-viewer" in (result["fullscreen"] or "").split()
    assert not result["pageErrors"], result["pageErrors"]
    # our viewer's three.js stays private: the page's own three.js (the frontend's 3D nodes) does not see a second one
    assert not [w for w in result["consoleWarnings"] if "Multiple instances of Three.js" in w], result["consoleWarnings"]
    print(f"\nbrowser: UI ready {result['uiReadyMs']} ms, queue -> splat drawn {result['queueToViewerMs']} ms, "
          f"total {result['wall_s']} s, frontend {result['frontendVersion']}")


def _compare_with_torch_renderer(canvas_png: Path, cam: dict, ply: Path, side_by_side: Path) -> None:
    """The viewer (Spark) and our torch renderer from the same camera draw the same picture: small mean
    difference and no blotch (no 8x8 block whose mean colour differs a lot)."""
    import numpy as np
    from PIL import Image

    from vist3a.formats import load_ply
    from vist3a.render import render_gaussians
    from vist3a.render.cameras import look_at

    W, H = cam["width"], cam["height"]
    fy = 0.5 * H / math.tan(math.radians(cam["fovY"]) / 2)
    K = torch.tensor([[fy, 0, W / 2], [0, fy, H / 2], [0, 0, 1.0]])[None]
    c2w = look_at(cam["eye"], cam["target"], cam["up"])[None]
    with torch.no_grad():
        ours, _, _ = render_gaussians(load_ply(ply), c2w, K, W, H, background=tuple(cam["background"]))
    ours = ours[0].clamp(0, 1).numpy()
    with Image.open(canvas_png) as im:
        spark = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    assert spark.shape == ours.shape, (spark.shape, ours.shape)
    diff = np.abs(spark - ours).mean(axis=2)
    hb, wb = H // 8 * 8, W // 8 * 8
    blocks = np.abs(spark[:hb, :wb] - ours[:hb, :wb]).reshape(hb // 8, 8, wb // 8, 8, 3).mean(axis=(1, 3)).max(axis=2)
    Image.fromarray((np.concatenate([spark, ours], axis=1) * 255).round().astype("uint8")).save(side_by_side)
    print(f"\nviewer vs torch renderer: mean |diff| {diff.mean():.4f}, worst 8x8 block {blocks.max():.3f}, "
          f"blocks over 0.25: {(blocks > 0.25).mean():.4f}")
    assert diff.mean() < 0.05, diff.mean()
    assert (blocks > 0.25).mean() < 0.01, (blocks > 0.25).mean()


def test_viewer_screenshot_of_a_loaded_ply(browser_server, tmp_path):
    """Load PLY -> Preview Splats on a synthetic scene: the README's viewer screenshot."""
    graph = _load_and_preview("vist3a_showcase.ply")
    wf = tmp_path / "showcase.json"
    wf.write_text(json.dumps(graph))
    shot = DOCS_IMAGES / "comfyui_viewer.png" if browser_server.shots else tmp_path / "viewer.png"
    result = _drive(browser_server, wf, {}, viewerShot=str(tmp_path / "showcase_node.png"), fullscreenShot=str(shot), resize=300, reload=True,
                    canvasDump=str(tmp_path / "showcase_canvas.png"))
    _compare_with_torch_renderer(tmp_path / "showcase_canvas.png", result["camera"], browser_server.base / "input" / "vist3a_showcase.ply",
                                 DOCS_IMAGES / "viewer_vs_torch.png" if browser_server.shots else tmp_path / "side_by_side.png")
    assert result["missingTypes"] == []
    assert result["viewerLoaded"] is True, result
    assert result["viewer"]["nonBackground"] > 0.05, result["viewer"]
    assert result["viewer"]["upSource"] == "points" and result["viewer"]["up"] == [0, -1, 0]  # flat floor, OpenCV y down
    # the viewer fills the enlarged node and shows the scene again after a page reload
    grown = result["afterResize"]["rect"]["height"] - result["beforeResize"]["rect"]["height"]
    assert grown > 240, (result["beforeResize"]["rect"], result["afterResize"]["rect"])
    assert result["restored"] == result["viewer"]["splats"], result.get("restored")
    assert _non_background(tmp_path / "showcase_node.png") > 0.05
    if result["fullscreen"]:
        assert _non_background(shot) > 0.05
    assert ui_to_api(graph, browser_server.object_info())["1"]["inputs"]["file"] == "vist3a_showcase.ply"


def test_reload_right_after_a_run_shows_the_latest_run(browser_server, tmp_path):
    """Run Load PLY -> Preview Splats, run it again with fewer splats and reload the page the moment the new scene is
    drawn: the viewer comes back with that latest run (from the server's history), not an empty viewer or the
    previous run's scene (the frontend had not saved the node's properties yet)."""
    wf = tmp_path / "rerun.json"
    wf.write_text(json.dumps(_load_and_preview("vist3a_showcase.ply")))
    result = _drive(browser_server, wf, {}, interact=False, rerunThenReload={"max_splats": 10_000})
    assert result["viewerLoaded"] is True, result
    rerun = result["rerun"]
    assert rerun["first"]["splats"] > 10_000 and rerun["second"]["splats"] == 10_000, rerun
    assert rerun["restored"] == rerun["second"] and rerun["after"] == rerun["second"], rerun
    assert not result["pageErrors"], result["pageErrors"]


def test_native_splat_workflow_loads_in_the_0_28_ui(browser_server, tmp_path):
    """The workflow for ComfyUI's native splat nodes loads in 0.28's own frontend with every node known,
    and the frontend turns it into the same prompt as the server tests (the 3D viewport aside)."""
    from comfy_workflows import NATIVE_SPECS

    if browser_server.version != "0.28.0":
        pytest.skip("the native splat nodes need ComfyUI 0.28")
    for name in NATIVE_SPECS:
        result = _drive(browser_server, WORKFLOWS / name, FAST, loadOnly=True, graphShot=str(tmp_path / "native_graph.png"))
        assert result["missingTypes"] == [], result["missingTypes"]
        assert result["frontendVersion"] == browser_server.frontend, result["frontendVersion"]
        ours, theirs = browser_server.api_from_workflow(WORKFLOWS / name), result["prompt"]
        assert set(theirs) == set(ours)
        for nid, node in ours.items():
            assert theirs[nid]["class_type"] == node["class_type"]
            mine = {k: v for k, v in node["inputs"].items() if k != "viewport_state"}  # the frontend fills it from the live 3D view
            assert {k: theirs[nid]["inputs"].get(k) for k in mine} == mine, (nid, theirs[nid]["inputs"], node["inputs"])
        assert not result["pageErrors"], result["pageErrors"]


def test_viewer_frames_a_million_splat_z_up_scene(browser_server, tmp_path):
    """1M splats (SH 3) through Load PLY -> Preview Splats: Spark draws them and the view frames the whole
    donut with its z axis up on screen. Load time and frames per second (SwiftShader on the CPU: seconds
    per frame, so no interaction here; not asserted) go to bench/results/."""
    wf = tmp_path / "donut.json"
    wf.write_text(json.dumps(_load_and_preview("vist3a_donut_1m.spz")))
    shot = DOCS_IMAGES / "viewer_donut_1m.png" if browser_server.shots else tmp_path / "donut.png"
    result = _drive(browser_server, wf, {}, viewerShot=str(shot), bench=2, interact=False)
    assert result["viewerLoaded"] is True, result
    v = result["viewer"]
    assert v["splats"] == 1_000_000, v
    assert v["upSource"] == "points" and v["up"] == [0, 0, 1], v
    # framed: the drawn pixels keep clear of the canvas edges, the centre is mid-canvas, up points up
    x0, y0, x1, y1 = v["bbox"]
    assert x0 > 2 and y0 > 2 and x1 < v["width"] - 3 and y1 < v["height"] - 3, v
    cx, cy, _ = v["centreOnScreen"]
    assert abs(cx - v["rect"]["width"] / 2) < 0.1 * v["rect"]["width"] and abs(cy - v["rect"]["height"] / 2) < 0.1 * v["rect"]["height"], v
    assert v["upOnScreen"][1] < cy - 10, v
    assert v["centre"] > 0.05 and v["nonBackground"] < 0.9, v
    assert _non_background(shot) > 0.05
    assert not result["pageErrors"], result["pageErrors"]
    bench = {"frontend": result["frontendVersion"], "splats": v["splats"], "sh_degree": 3, "renderer": "Spark 2.2.0 (web/vendor)",
             "browser": "headless Chromium, SwiftShader WebGL2 (CPU)", "canvas": [v["width"], v["height"]],
             "queue_to_drawn_ms": result["queueToViewerMs"], "fetch_ms": result["bench"]["fetchMs"],
             "decode_ms": result["bench"]["decodeMs"], "fps": round(result["bench"]["fps"], 2), "fps_frames": result["bench"]["frames"]}
    out = REPO / "bench" / "results" / f"viewer_1m_{'pinned' if browser_server.frontend == 'pinned' else browser_server.frontend}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(bench, indent=2) + "\n")
    tmp.replace(out)
    print(f"\nviewer 1M: {bench}")


def test_shipped_workflows_open_with_every_node_in_view(browser_server, tmp_path):
    """Each shipped workflow's saved view on a 1600x1000 window: no overlapping nodes (title bars
    included, rectangles read from app.graph), every node fully visible, not under the side bar,
    menu, floating Run toolbar, minimap or canvas buttons (hit-tested through the canvas transform), drawn
    with titles (above litegraph's level-of-detail zoom), and every rendered widget area (DOM widgets and
    their canvases, e.g. ComfyUI's 3D viewports) inside its node, at the saved zoom and at 90%."""
    from comfy_workflows import NATIVE_SPECS

    files = sorted(f for f in WORKFLOWS.glob("*.json")  # the native-splat workflow needs ComfyUI 0.28's nodes
                   if browser_server.version == "0.28.0" or f.name not in NATIVE_SPECS)
    shots = [(DOCS_IMAGES if browser_server.shots or (browser_server.version == "0.28.0" and f.name in NATIVE_SPECS) else tmp_path)
             / f"workflow_{f.stem}.png" for f in files]
    cfg = {"url": browser_server.url, "workflow": str(files[0]), "graphShot": str(shots[0]), "layoutOnly": True, "spillScales": [0.9],
           "moreWorkflows": [str(f) for f in files[1:]], "moreShots": [str(s) for s in shots[1:]], "chromium": browser_server.chromium}
    out = subprocess.run(["node", "ui_test.mjs", json.dumps(cfg)], cwd=BROWSER_DIR, capture_output=True, text=True, timeout=HANG_S)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert not result.get("fatal"), result["fatal"]
    for f in files:
        layout = result["layouts"][str(f)]
        saved = json.loads(f.read_text())["extra"]["ds"]
        assert layout["scale"] == pytest.approx(saved["scale"]), (f.name, layout, saved)  # the saved view was applied
        assert layout["nodes"] == len(json.loads(f.read_text())["nodes"])
        assert layout["overlaps"] == [], (f.name, layout["overlaps"])
        assert layout["hidden"] == [], (f.name, layout["hidden"])
        assert layout["lowQuality"] is False, (f.name, layout["scale"])  # titles and widgets drawn, not untitled boxes
        # rendered widget areas (3D viewports, our viewer, text boxes) stay inside their node, at the saved view and at 90%
        assert layout["spills"] == [] and layout["spillsAt"]["0.9"] == [], (f.name, layout["spills"], layout["spillsAt"])
    assert all(s.is_file() for s in shots)


NATIVE_VIEWERS = ["PreviewGaussianSplat", "SaveGaussianSplat"]


def _splat_pixels(png: Path) -> dict:
    """The splats in a screenshot of a ComfyUI 3D viewer (grid off): the viewer letterboxes its square viewport
    (1024x1024 target) into the canvas and draws its buttons on the bars, so only the central square is read.
    Returns the fraction of it that differs from its background, their bounding box (fractions of the side) and
    the mean height of the drawn pixels (0 top, 1 bottom)."""
    import numpy as np
    from PIL import Image

    with Image.open(png) as im:
        px = np.asarray(im.convert("RGB"), dtype=np.int16)
    h, w = px.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    sq = px[y0 + 2:y0 + side - 2, x0 + 2:x0 + side - 2]
    flat = sq.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    bg = colours[counts.argmax()]
    far = (np.abs(sq - bg).sum(axis=2) > 40)
    ys, xs = np.nonzero(far)
    n = sq.shape[0]
    box = [0.0, 0.0] if len(xs) == 0 else [float(xs.max() - xs.min() + 1) / n, float(ys.max() - ys.min() + 1) / n]
    return {"fraction": float(far.mean()), "box": box, "centre_y": float(ys.mean()) / n if len(ys) else None}


def test_native_splat_viewers_draw_the_native_workflow(browser_server, tmp_path):
    """ComfyUI 0.28's own Preview Splat and Save Splat load the shipped native-splat workflow's scene (SH degree 3
    by default; degree 4 made Spark refuse it with 'Invalid number of f_rest properties: 72') and draw it framed by
    3D Viewer Camera, with no error toast."""
    from comfy_workflows import NATIVE_SPECS

    if browser_server.version != "0.28.0":
        pytest.skip("the native splat nodes need ComfyUI 0.28")
    (name,) = NATIVE_SPECS
    wf = json.loads((WORKFLOWS / name).read_text())
    viewers = {str(n["id"]): n["type"] for n in wf["nodes"] if n["type"] in NATIVE_VIEWERS}
    result = _drive(browser_server, WORKFLOWS / name, FAST, nativeViewers=NATIVE_VIEWERS, nativeShotDir=str(tmp_path),
                    graphAfterShot=str(DOCS_IMAGES / "comfyui28_native_splat_workflow.png"))
    assert result["status"] == "success", result
    assert not [t for t in result["toasts"] if "Error" in t], result["toasts"]
    assert not [e for e in result["consoleErrors"] if "loading model" in e or "f_rest" in e], result["consoleErrors"]
    assert set(result["nativeRects"]) == set(viewers), (result["nativeRects"], viewers)
    for nid, t in viewers.items():
        assert result["nativeDrawn"][nid], (t, result["nativeDrawn"])
        drawn = _splat_pixels(tmp_path / f"{nid}.png")
        print(f"\n{t}: {drawn}")
        assert drawn["fraction"] > 0.002, (t, drawn)  # tiny random weights: a faint cloud, framed
        assert max(drawn["box"]) > 0.25, (t, drawn)  # not a speck: it spans a quarter of the view or more
    assert not result["pageErrors"], result["pageErrors"]
    assert not [w for w in result["consoleWarnings"] if "Multiple instances of Three.js" in w], result["consoleWarnings"]


def test_native_preview_frames_our_scene_upright(browser_server, tmp_path):
    """Load PLY -> Create 3D File -> two Preview Splats, one given 3D Viewer Camera's camera_info, one left at
    ComfyUI's camera: ours frames the scene larger and centred, and upright (the red sphere above the floor: our
    SPLAT is in ComfyUI's splat axes, OpenCV y down, which its viewer turns upright). README screenshot."""
    from comfy_workflows import build_ui

    if browser_server.version != "0.28.0":
        pytest.skip("the native splat nodes need ComfyUI 0.28")
    info = dict(browser_server.object_info())
    view = dict(viewport_state="", width=1024, height=1024)
    spec = [
        (1, "VIST3ALoadPLY", dict(file="vist3a_showcase.ply"), {}, (40, 80), None),
        (2, "VIST3AViewerCamera", dict(fov=35.0), {"splat": (1, 0)}, (40, 300), None),
        (3, "SplatToFile3D", dict(format="ply"), {"splat": (1, 0)}, (40, 500), None),
        (4, "PreviewGaussianSplat", view, {"model_3d": (3, 0), "camera_info": (2, 0)}, (420, 80), "Preview Splat + 3D Viewer Camera"),
        (5, "PreviewGaussianSplat", view, {"model_3d": (3, 0)}, (860, 80), "Preview Splat, its own camera"),
    ]
    wf = tmp_path / "native_showcase.json"
    wf.write_text(json.dumps(build_ui(spec, info)))
    result = _drive(browser_server, wf, {}, nativeViewers=NATIVE_VIEWERS, nativeShotDir=str(tmp_path),
                    graphAfterShot=str(DOCS_IMAGES / "comfyui28_native_preview.png"))
    assert result["status"] == "success", result
    assert result["nativeDrawn"] == {"4": True, "5": True}, result["nativeDrawn"]
    ours, theirs = _splat_pixels(tmp_path / "4.png"), _splat_pixels(tmp_path / "5.png")
    print(f"\nnative preview, 3D Viewer Camera: {ours}\nnative preview, its own camera: {theirs}")
    assert max(ours["box"]) > 0.6 and ours["fraction"] > 2 * theirs["fraction"], (ours, theirs)
    red, floor = _colour_rows(tmp_path / "4.png")
    assert red < floor, (red, floor)  # upright: the sphere stands on the floor
    assert not [t for t in result["toasts"] if "Error" in t], result["toasts"]


def _colour_rows(png: Path) -> tuple[float, float]:
    """Mean row (0 top, 1 bottom) of the showcase's red sphere and of its grey floor in a viewer screenshot."""
    import numpy as np
    from PIL import Image

    with Image.open(png) as im:
        px = np.asarray(im.convert("RGB"), dtype=np.int16)
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    red = (r > 140) & (g < 90) & (b < 90)
    grey = (abs(r - g) < 12) & (abs(g - b) < 12) & (r > 110)
    rows = np.arange(px.shape[0])[:, None] / px.shape[0]
    assert red.sum() > 20 and grey.sum() > 20, (red.sum(), grey.sum())
    return float((rows * red).sum() / red.sum()), float((rows * grey).sum() / grey.sum())


def test_a_refused_path_reads_as_one_short_instruction(browser_server, tmp_path):
    """Load PLY with a path outside ComfyUI's folders: the error card the page shows is headed by the pack's short
    exception name or the node (never our module's path through custom_nodes/, e.g. '.../custom_nodes/ComfyUI-VIST3A
    .comfy_nodes.errors.NodeError'), and the message a user reads there or in the details it opens leads with what
    to do, in a few lines."""
    graph = _load_and_preview("vist3a_showcase.ply")
    graph["nodes"][0]["widgets_values"] = ["vist3a_showcase.ply", "/etc/vist3a_secret.ply"]
    wf = tmp_path / "refused.json"
    wf.write_text(json.dumps(graph))
    shot = (DOCS_IMAGES / "comfyui_error.png" if browser_server.shots else
            DOCS_IMAGES / "comfyui28_error.png" if browser_server.version == "0.28.0" else tmp_path / "error.png")
    result = _drive(browser_server, wf, {}, failing=True, errorShot=str(shot), detailsShot=str(tmp_path / "details.png"))
    assert result["status"] == "error", result.get("status")
    card = result["pageText"]
    assert "custom_nodes" not in card and "comfy_nodes" not in card, card[-2000:]
    assert ".comfy_nodes." not in result["detailsText"], result["detailsText"][-3000:]  # no module path anywhere
    # the message on the card (1.32, 1.45) and in the details' report (the traceback and log lines below it aside)
    prefixes = ("• ", "- **Exception Message:** ", "VIST3A.NodeError: ")
    report = [line for line in result["detailsText"].splitlines() if "Exception Message:" in line]
    shown = []
    for line in card.splitlines() + report:
        if "vist3a_secret.ply is outside" in line:
            for prefix in prefixes:
                line = line.strip().removeprefix(prefix)
            shown.append(line)
    assert shown and all(line.startswith("Copy vist3a_secret.ply into ") and len(line) < 600 for line in shown), shown


def test_template_cards_show_whole_titles_and_summaries(browser_server, tmp_path):
    """The template browser (Templates -> ComfyUI-VIST3A) lists the workflows this ComfyUI can run (the native-splat
    one only on 0.28; 0.3.75 opened it with missing nodes), with titles that are not cut (line-clamped or clipped) and
    our one-line summaries as subtitles instead of the title again."""
    from comfy_workflows import NATIVE_SPECS, SPECS, template_summaries

    summaries = template_summaries()
    runnable = sorted(Path(n).stem for n in [*SPECS, *(NATIVE_SPECS if browser_server.version == "0.28.0" else [])])
    pack = next(k for k in browser_server.get("/workflow_templates") if "VIST3A" in k)
    shot = (DOCS_IMAGES / "comfyui_templates.png" if browser_server.shots else
            DOCS_IMAGES / "comfyui28_templates.png" if browser_server.version == "0.28.0" else tmp_path / "templates.png")
    result = _drive(browser_server, WORKFLOWS / "unused.json", {}, templatesShot=str(shot),
                    templates={"pack": pack, "names": sorted(summaries), "summaries": [summaries[n] for n in sorted(summaries)]})
    cards = result["templates"]["cards"]
    assert sorted(cards) == runnable, (sorted(cards), runnable)
    assert not [n for n, c in cards.items() if c["cut"]], cards
    assert result["templates"]["repeatedSubtitles"] == [], result["templates"]
    # 1.32 and 1.45 give a pack's card a subtitle (the name again; ours says what the workflow does), 1.58 none
    expected = [] if browser_server.frontend == NEW_FRONTEND else sorted(summaries[n] for n in runnable)
    assert sorted(result["templates"]["summariesShown"]) == expected, result["templates"]
    assert result["templates"]["summariesCut"] == [], result["templates"]  # each fits its two lines
