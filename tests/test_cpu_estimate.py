"""The CPU time estimate printed by Sample: token count, FLOP formula, scaling and the message."""

import pytest

from vist3a.cpu_estimate import describe, estimate_sample, measure_gflops, wan_step_flops, wan_tokens


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
    assert line.startswith("[VIST3A] Sample on the CPU: about 3.8 h") and "lower steps" in line


def test_measured_speed_is_positive():
    assert measure_gflops(size=64, repeats=1) > 0
