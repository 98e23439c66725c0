"""Jobs that cannot fit are refused up front with numbers and advice, not an OOM inside torch."""

import pytest

from vist3a import limits


def test_estimate_scales_with_frames_and_size():
    small, big = limits.estimate(5, 64, 64), limits.estimate(13, 512, 512)
    assert small.gaussians == 5 * 56 * 56 and big.gaussians == 13 * 448 * 448
    assert big.decoder_bytes > 100 * small.decoder_bytes


def test_out_of_range_requests_are_refused():
    with pytest.raises(limits.ResourceError, match="outside 1..81"):
        limits.check_generation(200, 512, 512)
    with pytest.raises(limits.ResourceError, match="1280-pixel limit"):
        limits.check_generation(13, 4096, 512)
    with pytest.raises(limits.ResourceError, match="over the limit of 10,000"):
        limits.check_generation(13, 512, 512, max_gaussians=10_000)


def test_memory_check_uses_what_is_available(monkeypatch):
    monkeypatch.setattr(limits, "available_bytes", lambda device: 2 * limits.GIB)
    with pytest.raises(limits.ResourceError, match=r"needs about .* GiB but only 2\.0 GiB is free"):
        limits.check_generation(21, 512, 512)
    assert limits.check_generation(5, 64, 64).gaussians == 15680
