"""scene.html: one self-contained page (viewer + scene) that opens from disk, offline."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from guards import HANG_S

from vist3a.formats import FormatError, load_spz, read_splats, write_splats
from vist3a.formats.spz import spz_bytes, widest_fractional_bits
from vist3a.gaussians import Gaussians, rgb_to_sh0
from vist3a.share_html import HtmlError, save_html, viewer_sources

ROOT = Path(__file__).resolve().parents[1]
BROWSER_DIR = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("VIST3A_CHROMIUM", "/usr/bin/chromium")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def scene_with_floor(n_floor: int = 3000, n_ball: int = 2000, seed: int = 0) -> Gaussians:
    """A red ball standing on a grey floor; -y is up (the floor is at y = +0.5), SH degree 1."""
    g = torch.Generator().manual_seed(seed)
    u, v = torch.rand(n_floor, generator=g) * 3 - 1.5, torch.rand(n_floor, generator=g) * 3 - 1.5
    floor = torch.stack([u, torch.full_like(u, 0.5), v], 1)
    d = torch.randn(n_ball, 3, generator=g)
    ball = 0.5 * d / d.norm(dim=1, keepdim=True)
    means = torch.cat([floor, ball])
    rgb = torch.cat([torch.full((n_floor, 3), 0.6), torch.tensor([0.9, 0.1, 0.1]).expand(n_ball, 3)])
    n = n_floor + n_ball
    sh = torch.zeros(n, 3, 4)
    sh[:, :, 0] = rgb_to_sh0(rgb)
    return Gaussians(means, torch.full((n, 3), 0.03), torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4).contiguous(), torch.full((n,), 0.9), sh)


def _payload(page: bytes) -> bytes:
    m = re.search(rb'<script type="application/octet-stream" id="vist3a-scene" data-format="spz" data-bytes="(\d+)">([A-Za-z0-9+/=]*)</script>', page)
    assert m, "no embedded scene"
    data = base64.b64decode(m.group(2), validate=True)
    assert len(data) == int(m.group(1))
    return data


def test_page_holds_the_viewer_and_the_scene_as_spz(tmp_path, monkeypatch):
    import vist3a.share_html as html

    monkeypatch.setattr(html, "_B64_BLOCK", 3 * 1000)  # several blocks even for a small scene: the stream joins them right
    g = scene_with_floor()
    path = save_html(g, tmp_path / "scene.html", title="ball <&> floor")
    page = path.read_bytes()
    assert page.startswith(b"<!doctype html>") and page.rstrip().endswith(b"</html>")
    assert b"<title>ball &lt;&amp;&gt; floor</title>" in page
    data = _payload(page)
    assert data == spz_bytes(g, 1, widest_fractional_bits(g.means), compresslevel=1)  # the .spz the node's preview sends
    (tmp_path / "x.spz").write_bytes(data)
    back = load_spz(tmp_path / "x.spz")
    assert back.num == g.num and back.sh_degree == 1
    torch.testing.assert_close(back.means, g.means, atol=1e-3, rtol=0)
    scripts = re.findall(rb"<script[^>]*>", page)
    assert scripts.count(b'<script type="module">') == 2 and page.count(b"</script>") == len(scripts)  # nothing ends early
    assert b"import {" not in page and b"export{" not in page.replace(b" ", b"")  # no module file to fetch
    info = json.loads(re.search(rb'<script type="application/json" id="vist3a-info">(.*?)</script>', page, re.S).group(1))
    assert info["up"] == [0.0, -1.0, 0.0] and info["up_source"] == "points" and info["count"] == g.num


def test_viewer_sources_are_rewritten_for_one_page():
    spark, viewer = viewer_sources()
    assert spark.rstrip().count("globalThis.__vist3aSpark = {") == 1
    assert "SplatMesh:" in spark and "SparkRenderer:" in spark and "THREE:" in spark
    assert "globalThis.__vist3aSpark;" in viewer and "\nexport " not in viewer and "class SplatViewer" in viewer


def test_refusals(tmp_path):
    empty = Gaussians(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 3, 1))
    with pytest.raises(HtmlError, match="no Gaussians"):
        save_html(empty, tmp_path / "e.html")
    with pytest.raises(HtmlError, match="is missing"):
        save_html(scene_with_floor(10, 10), tmp_path / "m.html", web_dir=tmp_path)
    (tmp_path / "a.html").write_text("<html></html>")
    with pytest.raises(FormatError, match="viewer page, which is written but not read"):
        read_splats(tmp_path / "a.html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html"]  # nothing half-written


def test_a_failure_while_streaming_leaves_no_file(tmp_path, monkeypatch):
    import vist3a.share_html as html

    calls = []

    def flaky(block):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return base64.b64encode(block)

    monkeypatch.setattr(html, "_B64_BLOCK", 3 * 100)
    monkeypatch.setattr(html.base64, "b64encode", flaky)
    target = tmp_path / "scene.html"
    target.write_text("old")
    with pytest.raises(OSError):
        save_html(scene_with_floor(200, 200), target)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["scene.html"]


def test_convert_writes_a_page_and_refuses_to_read_one(tmp_path):
    g = scene_with_floor(100, 100)
    write_splats(g, tmp_path / "a.ply")
    r = subprocess.run([sys.executable, "-m", "vist3a", "convert", str(tmp_path / "a.ply"), str(tmp_path / "b.html")],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=HANG_S)
    assert r.returncode == 0, r.stderr
    (tmp_path / "c.spz").write_bytes(_payload((tmp_path / "b.html").read_bytes()))
    assert load_spz(tmp_path / "c.spz").num == g.num
    r = subprocess.run([sys.executable, "-m", "vist3a", "convert", str(tmp_path / "b.html"), str(tmp_path / "c.ply")],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=HANG_S)
    assert r.returncode == 2 and "written but not read" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ headless browser


def _browser_ready() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"chromium is not installed at {CHROMIUM}")
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").is_file():
        if not shutil.which("npm"):
            pytest.skip("npm is not installed")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BROWSER_DIR, check=True, capture_output=True)


def open_offline(page: Path, **cfg) -> dict:
    """tests/browser/html_check.mjs: the page from a file:// URL, network off; returns its findings."""
    _browser_ready()
    r = subprocess.run(["node", "html_check.mjs", json.dumps({"path": str(page), "chromium": CHROMIUM, **cfg})],
                       cwd=BROWSER_DIR, capture_output=True, text=True, timeout=HANG_S)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.browser
@pytest.mark.slow
def test_page_opens_offline_from_disk_and_draws_the_scene_upright(tmp_path):
    g = scene_with_floor()
    page = save_html(g, tmp_path / "scene.html")
    top, centre = [0.0, -0.5, 0.0], [0.0, 0.0, 0.0]  # the top of the ball and its centre (-y is up)
    shot = tmp_path / "shot.png"
    result = open_offline(page, probe=[top, centre], shot=str(shot))
    assert "error" not in result, result
    assert result["consoleErrors"] == [] and result["pageErrors"] == [], result
    assert result["blocked"] == [] and all(u.startswith("file:") for u in result["requests"]), result["requests"]
    assert result["stats"]["loaded"] and result["stats"]["splats"] == g.num and result["stats"]["frames"] >= 1
    cov = result["coverage"]
    assert cov["nonBackground"] > 0.05 and cov["centre"] > 0.3, cov  # drawn, and framed in the middle
    (tx, ty, _), (cx, cy, _) = result["probe"]
    assert ty < cy - 20 and abs(tx - cx) < 0.2 * cov["width"]  # upright: the top of the ball is above its centre on screen
    assert result["title"] == "scene" and shot.stat().st_size > 0


@pytest.mark.browser
@pytest.mark.slow
def test_generate_writes_a_page_that_starts_from_the_predicted_cameras(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vist3a", "generate", "a red ball", "-o", str(tmp_path / "g.html"), "--tiny",
                        "--frames", "5", "--size", "64", "--steps", "2", "--views", str(tmp_path / "views")],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=HANG_S)
    assert r.returncode == 0, r.stderr[-3000:]
    page = (tmp_path / "g.html").read_bytes()
    info = json.loads(re.search(rb'<script type="application/json" id="vist3a-info">(.*?)</script>', page, re.S).group(1))
    assert info["up_source"] == "cameras" and len(info["camera"]["c2w"]) == 4
    cams = json.loads((tmp_path / "views" / "cameras.json").read_text())
    assert len(cams["c2w"]) == 5 and cams["image_size"][0] > 0
    result = open_offline(tmp_path / "g.html")
    assert result["consoleErrors"] == [] and result["pageErrors"] == [] and result["blocked"] == [], result
    # the tiny random decoder's splats are sub-pixel specks (median scale 1e-3 of a 2.5-unit scene): few pixels, but some
    assert result["stats"]["loaded"] and result["stats"]["splats"] == 5 * 56 * 56 and result["coverage"]["bbox"], result
    assert math.isclose(sum(v * v for v in result["view"]["up"]), 1.0, rel_tol=1e-6)
