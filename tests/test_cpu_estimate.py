"""The CPU time estimates Sample, Decode Splats and Images to Splats show: token count, FLOP formulas, scaling, and
advice that names only the settings above the quick try."""

import pytest

from vist3a.cpu_estimate import (
    decoder_flops,
    describe,
    describe_decode,
    estimate_decode,
    estimate_sample,
    human_seconds,
    measure_gflops,
    progress_line,
    quick_advice,
    wan_step_flops,
    wan_tokens,
)


def test_tokens_follow_the_wan_latent_grid():
    assert wan_tokens(13, 512, 512) == 4 * 32 * 32  # 1 + 12//4 latent frames, /8 VAE, 2x2 patches
    assert wan_tokens(1, 64, 96) == 1 * 4 * 6


def test_estimate_scales_with_steps_cfg_and_size():
    base = dict(params=1_300_000_000, layers=30, dim=1536, steps=50, cfg=7.5, frames=13, height=512, width=512, gflops=100.0)
    e = estimate_sample(**base)
    tokens = wan_tokens(13, 512, 512)
    assert e.seconds == pytest.approx(50 * 2 * wan_step_flops(1_300_000_000, 30, 1536, tokens) / 100e9)
    assert estimate_sample(**{**base, "cfg": 1.0}).seconds == pytest.approx(e.seconds / 2)
    assert estimate_sample(**{**base, "steps": 10}).seconds == pytest.approx(e.seconds / 5)
    assert estimate_sample(**{**base, "width": 256, "height": 256}).seconds < e.seconds / 4
    # 1.3B at the official sizes needs ~1.4 PFLOP: hours on a 100 GFLOP/s CPU
    assert 3600 < e.seconds < 36000
    line = describe(e)
    assert line.startswith("[VIST3A] Sample on the CPU: about 3.8 h")
    assert line.endswith("for a quick try lower steps to 10, frames to 5 and width/height to 256.")


def test_measured_speed_is_positive():
    assert measure_gflops(size=64, repeats=1) > 0


def test_decode_estimate_counts_frame_and_global_attention():
    # full-size stitched decoder (~1.2 G parameters with its heads), 13 frames of 32x32 tokens
    full = dict(params=1_200_000_000, dim=1024, frame_blocks=22 + 24, global_blocks=24, frames=13, tokens_per_frame=1024)
    f = decoder_flops(**full)
    tokens = 13 * 1024
    assert f == pytest.approx(2 * 1.2e9 * tokens + 4 * 1024 * (46 * 13 * 1024**2 + 24 * tokens**2))
    # global attention grows with the square of the frame count, the rest linearly
    assert decoder_flops(**{**full, "frames": 26}) > 2 * f
    e = estimate_decode(**full, gflops=100.0)
    assert e.seconds == pytest.approx(f / 100e9) and e.seconds > 60  # minutes on a 100 GFLOP/s CPU
    line = describe_decode(e, frames=13, size=512)
    assert line.startswith("[VIST3A] Decode Splats on the CPU: at least")
    assert line.endswith("for a quick try sample with frames to 5 and width/height to 256.")


@pytest.mark.parametrize("settings, advice", [
    (dict(steps=50, frames=13, size=512), "lower steps to 10, frames to 5 and width/height to 256"),
    (dict(steps=10, frames=5, size=2048), "lower width/height to 256"),  # only what is above the quick try
    (dict(steps=8, frames=5, size=256), "these are already the quick-try sizes"),
    (dict(max_views=24, anysplat_size=224), "lower max_views to 8"),
])
def test_advice_never_suggests_a_value_already_set(settings, advice):
    assert quick_advice(**settings).endswith(advice)


def test_long_runs_at_quick_sizes_do_not_advise_lowering():
    e = estimate_sample(params=1_300_000_000, layers=30, dim=1536, steps=10, cfg=7.5, frames=5, height=256, width=256,
                        gflops=0.01)
    assert describe(e).endswith("these are already the quick-try sizes.")
    d = estimate_decode(params=10**9, dim=1024, frame_blocks=40, global_blocks=24, frames=5, tokens_per_frame=4096, gflops=1.0)
    line = describe_decode(d, frames=5, size=2048)
    assert line.endswith("for a quick try sample with width/height to 256.") and "frames to" not in line


def test_progress_line_says_what_is_left():
    assert progress_line(0, 50, 3.0) == "step 0 of 50, 3 s so far"
    assert progress_line(5, 50, 60.0) == "step 5 of 50, 60 s so far, about 9 min left"
    assert progress_line(13, 13, 120.0, "frame") == "frame 13 of 13, 2 min so far"
    assert human_seconds(7200) == "2.0 h"


def test_anysplat_estimate_reads_the_model():
    from vist3a.cpu_estimate import describe_anysplat, estimate_anysplat
    from vist3a.tiny import build_tiny_anysplat

    model = build_tiny_anysplat()
    cfg = model.cfg
    e = estimate_anysplat(model, views=6, height=56, width=42, gflops=10.0)
    params = sum(p.numel() for p in model.parameters())
    flops = decoder_flops(params, cfg.embed_dim, cfg.dino_depth + cfg.aa_depth, cfg.aa_depth, 6, 4 * 3)
    assert e.frames == 6 and e.tokens_per_frame == 12 and e.seconds == pytest.approx(flops / 10e9)
    assert describe_anysplat(e, views=24, size=448).endswith("lower max_views to 8 and size to 224.")


def test_estimates_read_the_sizes_of_real_models():
    """The node-facing helpers read the transformer's and the stitched decoder's sizes the formulas need."""
    from vist3a.cpu_estimate import estimate_stitched_decode, estimate_wan_sampling
    from vist3a.tiny import build_tiny_decoder
    from vist3a.wan.tiny import build_tiny_wan

    t = build_tiny_wan().transformer
    est = estimate_wan_sampling(t, steps=4, cfg=7.5, frames=5, height=64, width=64, gflops=10.0)
    params = sum(p.numel() for p in t.parameters())
    dim = t.config.num_attention_heads * t.config.attention_head_dim
    expected = 4 * 2 * wan_step_flops(params, len(t.blocks), dim, wan_tokens(5, 64, 64)) / 10e9
    assert est.seconds == pytest.approx(expected) and est.passes == 2

    dec = build_tiny_decoder()
    cfg, cut = dec.encoder.cfg, dec.cfg.cut_block
    e = estimate_stitched_decode(dec, (2, 16, 3, 8, 12), gflops=10.0)
    assert e.frames == 2 * 9 and e.tokens_per_frame == 4 * 6
    params = sum(p.numel() for p in dec.parameters())
    flops = decoder_flops(params, cfg.embed_dim, cfg.dino_depth - cut + cfg.aa_depth, cfg.aa_depth, 18, 24)
    assert e.seconds == pytest.approx(flops / 10e9)
