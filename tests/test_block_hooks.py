"""Cancel and progress inside one long forward pass (vist3a/block_hooks.py), on the real models of each stage:
the UMT5 text encoder, the Wan VAE decoder, the stitched decoder and plain AnySplat. A Cancel raised after k
blocks stops the pass there: fewer blocks run than a whole pass has (counted in blocks, not seconds)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vist3a.block_hooks import block_checks, repeated_blocks
from vist3a.errors import Cancelled
from vist3a.functional import splats_from_images, splats_from_latent
from vist3a.tiny import build_tiny_anysplat, build_tiny_decoder
from vist3a.wan import decode_latents, encode_prompt
from vist3a.wan.tiny import build_tiny_wan


class CancelAfter:
    """should_cancel() that answers True from its (k+1)-th question on, counting the questions."""

    def __init__(self, k: int):
        self.k, self.asked = k, 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.asked > self.k


def test_outermost_lists_and_sequentials_are_the_blocks():
    inner = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
    outer = nn.Module()
    outer.layers = nn.ModuleList([nn.Sequential(nn.Linear(2, 2), nn.ReLU()), nn.Linear(2, 2)])
    outer.head = nn.Module()
    outer.head.stages = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    outer.head.inner = inner
    blocks = repeated_blocks(outer)
    assert blocks == [*outer.layers, *outer.head.stages, *inner]
    plain = nn.Linear(2, 2)
    assert repeated_blocks(plain) == [plain]


def test_no_callbacks_means_no_hooks():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    with block_checks(model):
        assert not any(m._forward_pre_hooks for m in model)


def test_progress_counts_blocks_and_hooks_are_removed():
    model = nn.Sequential(*[nn.Linear(3, 3) for _ in range(5)])
    seen = []
    with block_checks(model, progress=lambda d, t: seen.append((d, t))):
        model(torch.zeros(1, 3))
        model(torch.zeros(1, 3))  # runs more often than expected: the total grows, the bar never passes 100%
    assert seen[:5] == [(i, 5) for i in range(5)] and seen[5:7] == [(5, 6), (6, 7)] and seen[-1] == (10, 10)
    assert not any(m._forward_pre_hooks for m in model)


def test_hooks_are_removed_after_a_cancel():
    model = nn.Sequential(*[nn.Linear(3, 3) for _ in range(4)])
    with pytest.raises(Cancelled, match="the model cancelled at step 2 of 4"):
        with block_checks(model, CancelAfter(2)):
            model(torch.zeros(1, 3))
    assert not any(m._forward_pre_hooks for m in model)


@pytest.fixture(scope="module")
def wan():
    return build_tiny_wan()


def _stops_early(run, total_blocks):
    """A whole pass finishes every counted block; with Cancel pressed during the first block, the pass raises
    Cancelled before the second block starts: none of the total was reported done (work units, not seconds)."""
    seen = []
    run(None, lambda d, t: seen.append((d, t)))
    assert seen[-1] == (total_blocks, total_blocks) and total_blocks >= 2
    stopped = []
    with pytest.raises(Cancelled, match=f"cancelled at step 1 of {total_blocks}"):
        run(CancelAfter(1), lambda d, t: stopped.append((d, t)))
    assert stopped == [(0, total_blocks)]


def test_text_encoding_stops_between_layers(wan):
    _stops_early(lambda c, p: encode_prompt(wan, "a red car", should_cancel=c, progress=p), len(wan.text_encoder.encoder.block))


def test_vae_decode_stops_between_stages_and_counts_frames(wan):
    z = torch.randn(1, 16, 3, 4, 4)
    _stops_early(lambda c, p: decode_latents(wan, z, should_cancel=c, progress=p), 3)  # one count per latent frame
    stop = CancelAfter(3)  # inside the first frame: the decoder's stages are asked too, not only frame boundaries
    with pytest.raises(Cancelled, match="VAE decoding cancelled at step 1 of 3"):
        decode_latents(wan, z, should_cancel=stop)


def test_stitched_decode_stops_between_blocks():
    decoder = build_tiny_decoder()
    z = torch.randn(1, 16, 2, 8, 8)
    video = torch.rand(1, 3, 5, 56, 56) * 2 - 1
    _stops_early(lambda c, p: splats_from_latent(decoder, z, video, should_cancel=c, progress=p),
                 len(decoder.encoder.transformer_blocks()))


def test_images_to_splats_stops_between_blocks():
    model = build_tiny_anysplat()
    images = torch.rand(3, 56, 56, 3)
    _stops_early(lambda c, p: splats_from_images(model, images, should_cancel=c, progress=p),
                 len(model.encoder.transformer_blocks()))


def test_the_pipeline_passes_cancel_to_every_stage(monkeypatch):
    """VIST3APipeline.generate asks should_cancel inside text encoding (the first stage) already."""
    from vist3a.pipeline import GenerateSettings, VIST3APipeline

    pipe = VIST3APipeline.load(tiny=True, device="cpu")
    stop = CancelAfter(1)
    with pytest.raises(Cancelled, match="Text encoding cancelled"):
        pipe.generate("a red car", GenerateSettings(frames=5, height=64, width=64, steps=2), should_cancel=stop)
