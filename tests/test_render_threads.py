"""The CPU rasteriser picks its thread count from a short timing (vist3a/render/threads.py): one thread when extra
threads do not clearly pay off right now, torch's own count restored afterwards. The timings are faked here, so
the verdicts do not depend on this machine's load."""

from __future__ import annotations

import time

import pytest
import torch

from vist3a.render import rasterize, threads


@pytest.fixture(autouse=True)
def fresh_picks(monkeypatch):
    monkeypatch.setattr(threads, "_recent", {})
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # an idle machine unless a test says so
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def fake_timings(monkeypatch, one_s, many_s):
    """One thread takes ``one_s`` for the probe's ops, the configured count ``many_s``."""
    calls = []

    def one(x, y, budget_s):
        calls.append(1)
        return 100, one_s

    def beats(threads, x, y, pairs, limit_s):
        calls.append(threads)
        return many_s <= limit_s

    monkeypatch.setattr(threads, "_one_thread_pairs", one)
    monkeypatch.setattr(threads, "_beats", beats)
    return calls


def test_one_thread_configured_is_kept_without_timing(monkeypatch):
    calls = fake_timings(monkeypatch, 1.0, 0.1)
    assert threads.pick_threads(1 << 16, configured=1) == 1 and calls == []


def test_extra_threads_are_used_when_clearly_faster(monkeypatch):
    fake_timings(monkeypatch, 1.0, 0.5)
    assert threads.pick_threads(1 << 16, configured=4) == 4


@pytest.mark.parametrize("many_s", [0.9, 1.0, 9.0])
def test_extra_threads_that_are_not_clearly_faster_mean_one_thread(monkeypatch, many_s):
    # a busy machine: the thread team is often waiting for a thread that is not scheduled
    fake_timings(monkeypatch, 1.0, many_s)
    assert threads.pick_threads(1 << 16, configured=2) == 1


def test_every_window_must_be_won(monkeypatch):
    results = iter([True, True, False])
    monkeypatch.setattr(threads, "_one_thread_pairs", lambda x, y, budget_s: (100, 1.0))
    monkeypatch.setattr(threads, "_beats", lambda *a: next(results))
    assert threads.pick_threads(1 << 16, configured=2) == 1


def test_a_loaded_machine_means_one_thread_without_timing(monkeypatch):
    calls = fake_timings(monkeypatch, 1.0, 0.1)
    monkeypatch.setattr(threads, "_cpus", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (4.0, 4.0, 4.0))  # 2 cores, 2 of ours: still no idle core
    assert threads.pick_threads(1 << 16, configured=2) == 1 and calls == []
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (3.5, 3.0, 3.0))  # maybe: the timing decides
    assert threads.pick_threads(1 << 16, configured=2) == 2 and calls


def test_a_pick_is_reused_for_a_while_then_timed_again(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    calls = fake_timings(monkeypatch, 1.0, 9.0)
    assert threads.pick_threads(1 << 16, configured=2) == 1
    n = len(calls)
    clock[0] += threads.REUSE_S / 2
    assert threads.pick_threads(1 << 16, configured=2) == 1 and len(calls) == n
    clock[0] += threads.REUSE_S
    threads.pick_threads(1 << 16, configured=2)
    assert len(calls) > n


def test_the_slower_team_is_stopped_early():
    x = torch.rand(1 << 16)
    y = torch.empty_like(x)
    t0 = time.perf_counter()
    assert not threads._beats(2, x, y, pairs=10**9, limit_s=0.0)  # gives up at once, not after 10^9 pairs
    assert time.perf_counter() - t0 < 60  # a hang guard, not a timing


def test_the_real_timing_answers_one_or_the_configured_count():
    torch.set_num_threads(2)
    assert threads.pick_threads(1 << 15) in (1, 2)
    assert torch.get_num_threads() == 2


def test_rasterize_on_the_cpu_runs_with_the_pick_and_restores_the_count(monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.setattr(threads, "pick_threads", lambda elements, configured=None: 1)
    seen = []
    from vist3a.render import torch_backend

    real = torch_backend.rasterize_torch

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    import vist3a.render as render

    monkeypatch.setattr(render, "rasterize_torch", spy)
    n = 50
    g = torch.Generator().manual_seed(0)
    means = torch.randn(n, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 3.0])
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    scales = torch.full((n, 3), 0.05)
    opac = torch.full((n,), 0.8)
    sh = torch.rand(n, 3, 1, generator=g)
    K = torch.tensor([[[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]]])
    rgb, alpha, _ = rasterize(means, quats, scales, opac, sh, torch.eye(4)[None], K, 32, 32, backend="torch")
    assert seen == [1] and torch.get_num_threads() == 2
    assert alpha.max() > 0.5 and rgb.shape == (1, 32, 32, 3)
