"""How many CPU threads the torch rasteriser uses: as many as pay off on this machine right now.

The rasteriser runs thousands of small tensor ops per view (projection, pairing, compositing in batches).
torch splits each op over its intra-op threads and waits for all of them at the end of the op; on a
machine shared with other work one of those threads is often not scheduled, and every op then waits for
a scheduler time slice. On 2 cores at load average 6-10 that made rendering 5-15x slower with 2 threads than
with 1 (bench/render_threads.py, bench/results/render_threads.md), while on an idle machine the second thread
gains under 2x. So :func:`pick_threads` uses one thread outright when the load average says there is no
idle core even leaving out this process's own threads, and otherwise runs the same small ops for a few
scheduler time slices on one thread, then on the configured count (several windows, each must win): the
render uses the configured count only when it was clearly faster (:func:`cpu_render_threads`); torch's count
is restored afterwards.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator

import torch

__all__ = ["PROBE_S", "PROBE_WINDOWS", "FASTER", "REUSE_S", "op_pair", "busy_machine", "pick_threads", "cpu_render_threads"]

PROBE_S = 0.02  # one-thread timing: several scheduler time slices, so a busy machine shows in it
PROBE_WINDOWS = 3  # the configured count must beat one thread in each of these (a busy machine is sometimes kind)
FASTER = 0.8  # more threads only when the same ops take less than this share of one thread's time
REUSE_S = 10.0  # a pick is reused this long (a render calls the rasteriser once per few views)
_recent: dict[tuple[int, int], tuple[float, int]] = {}  # (threads, size class) -> (when, pick)


def op_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    """Two element-wise ops of the rasteriser's kind (one parallel region each)."""
    torch.mul(x, 1.0001, out=y)
    torch.add(y, x, out=y)


def _one_thread_pairs(x: torch.Tensor, y: torch.Tensor, budget_s: float) -> tuple[int, float]:
    """Op pairs on one thread until ``budget_s`` has passed: (pairs, seconds)."""
    torch.set_num_threads(1)
    op_pair(x, y)
    t0 = time.perf_counter()
    pairs, elapsed = 0, 0.0
    while elapsed < budget_s:
        op_pair(x, y)
        pairs += 1
        elapsed = time.perf_counter() - t0
    return pairs, elapsed


def _beats(threads: int, x: torch.Tensor, y: torch.Tensor, pairs: int, limit_s: float) -> bool:
    """Do ``pairs`` op pairs on ``threads`` threads finish within ``limit_s``? Stops as soon as they cannot."""
    torch.set_num_threads(threads)
    op_pair(x, y)  # the thread team started
    t0 = time.perf_counter()
    for _ in range(pairs):
        op_pair(x, y)
        if time.perf_counter() - t0 > limit_s:
            return False
    return True


def pick_threads(elements: int, configured: int | None = None) -> int:
    """``configured`` (default: torch's current count) when it clearly beats one thread on ops of ``elements``
    floats (the largest tensors the render works on, kept within 64K-1M), else 1. Costs ~2 x PROBE_S."""
    configured = torch.get_num_threads() if configured is None else int(configured)
    if configured <= 1:
        return max(1, configured)
    elements = int(min(max(elements, 1 << 16), 1 << 20))
    key = (configured, elements.bit_length())
    cached = _recent.get(key)
    if cached is not None and time.monotonic() - cached[0] < REUSE_S:
        return cached[1]
    if busy_machine(configured):
        return 1
    previous = torch.get_num_threads()
    chosen = configured
    try:
        x = torch.rand(elements)
        y = torch.empty_like(x)
        for _ in range(PROBE_WINDOWS):
            pairs, one_s = _one_thread_pairs(x, y, PROBE_S)
            if not _beats(configured, x, y, pairs, FASTER * one_s):
                chosen = 1
                break
    finally:
        torch.set_num_threads(previous)
    _recent[key] = (time.monotonic(), chosen)
    return chosen


def busy_machine(own_threads: int) -> bool:
    """The 1-minute load average leaves no idle core even counting all ``own_threads`` of this process as part
    of it (False where the system has no load average)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return False
    return load >= _cpus() + own_threads


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@contextlib.contextmanager
def cpu_render_threads(elements: int) -> Iterator[int]:
    """Run the block with :func:`pick_threads` intra-op threads (yielded), then restore torch's count."""
    previous = torch.get_num_threads()
    chosen = pick_threads(elements, previous)
    if chosen == previous:
        yield chosen
        return
    torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        torch.set_num_threads(previous)
