"""tools/thumbnails.py: every shipped workflow has its template picture; the picture is a render with
the workflow's title and says that the models were tiny random ones."""

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import thumbnails  # noqa: E402


def test_every_shipped_workflow_has_a_picture():
    from PIL import Image

    for wf in sorted((REPO / "workflows").glob("*.json")):
        pic = wf.with_suffix(".jpg")
        assert pic.is_file(), f"{pic.name} is missing: run python tools/thumbnails.py"
        with Image.open(pic) as im:
            assert im.format == "JPEG" and im.size == (thumbnails.SIZE, thumbnails.SIZE)
        assert thumbnails.title_of(json.loads(wf.read_text()), wf.stem) != wf.stem.replace("_", " "), wf.name


def test_picture_is_a_render_with_title_and_caption():
    import numpy as np

    from vist3a.gaussians import Gaussians, rgb_to_sh0

    n = 400
    g = torch.Generator().manual_seed(0)
    means = torch.randn(n, 3, generator=g) * torch.tensor([1.0, 0.1, 1.0])
    gs = Gaussians(means, torch.full((n, 3), 0.08), torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4).contiguous(),
                   torch.full((n,), 0.9), rgb_to_sh0(torch.tensor([[0.9, 0.2, 0.1]]).expand(n, 3))[:, :, None].contiguous())
    rgb = thumbnails.render_scene(gs, size=96)
    assert rgb.shape == (96, 96, 3)
    red = (rgb[..., 0] > 0.5) & (rgb[..., 1] < 0.4)
    assert 0.02 < float(red.float().mean()) < 0.9  # the scene is in the picture, not filling it
    img = np.asarray(thumbnails.compose(torch.zeros(200, 200, 3), "A title"))
    assert img[:20].max() > 200 and img[-15:, :, 0].max() > 200  # white title on top, yellow caption at the bottom
    note = {"nodes": [{"type": "MarkdownNote", "widgets_values": ["**VIST3A text -> 3D.**\n\nmore"]}]}
    assert thumbnails.title_of(note, "x") == "VIST3A text -> 3D"


def test_every_header_fits_whole():
    """The picture's header is the workflow's whole summary (it once stopped mid-sentence at two lines)."""
    from PIL import Image, ImageDraw, ImageFont

    from comfy_workflows import SUMMARIES

    draw = ImageDraw.Draw(Image.new("RGB", (thumbnails.SIZE, thumbnails.SIZE)))
    try:
        fonts = {s: ImageFont.load_default(size=s) for s in thumbnails.HEADER_SIZES}
    except TypeError:  # Pillow < 10.1
        fonts = {s: ImageFont.load_default() for s in thumbnails.HEADER_SIZES}

    def measure(line, size):
        return draw.textlength(line, font=fonts[size])

    for stem, text in SUMMARIES.items():
        size, lines = thumbnails.fit_header(text, thumbnails.SIZE - 28, measure)
        assert " ".join(lines) == text and len(lines) <= thumbnails.HEADER_LINES, (stem, lines)
        assert all(measure(line, size) <= thumbnails.SIZE - 28 for line in lines)
    with pytest.raises(ValueError, match="shorten it"):
        thumbnails.fit_header("word " * 200, thumbnails.SIZE - 28, measure)
