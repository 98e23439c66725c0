"""Is a series of RSS samples growing? A verdict that tolerates allocator noise but not leaks.

RSS of a long-running server is noisy: the allocator keeps freed pages, a busy machine shifts when
they are returned, and one large temporary can lift the series for a while. A ratio of two points
(the old test: end / after-warm-up <= 1.05) mistakes such a step for a leak on a loaded machine. A leak
is different in kind: every run adds about the same amount, so the series keeps a positive slope.

The server runs with ALLOCATOR_ENV below, so RSS follows the memory that is kept, not the allocator's free
pages. The verdict uses the Theil-Sen slope (the median of all pairwise slopes), which ignores up to ~29% of
outlying samples, and compares it with a budget in MiB per run. The budget comes from measured clean
runs (see docs/reliability.md); the soak test also injects a real leak and requires this verdict to
flag it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

MIB = 2**20

# RSS counts pages the allocator holds, not bytes the program keeps. glibc serves a large block from its heap
# once a block of that size has been freed (its mmap threshold rises to the largest freed block, up to 32 MiB),
# and keeps freed heap pages resident: after 50 generations, a Cancel and two model switches the server held
# ~120 MiB of such free pages (peak 1276 MiB, 1157 MiB at the end), and 20 runs of a 5 MiB/run leak were
# allocated into them without RSS moving: the leak verdict that followed said "no leak" (it passed alone, on
# a fresh server with no free pages). With the threshold fixed, every block of 64 KiB or more (each tensor of a
# scene) is its own mapping, returned to the system when freed and counted in RSS while kept, so RSS follows
# what is kept whatever ran before; two arenas keep small-object pages from spreading over per-thread pools.
ALLOCATOR_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}


def theil_sen_slope(values: list[float]) -> float:
    """Median of (v[j] - v[i]) / (j - i) over all i < j: per-sample trend, robust to outliers."""
    n = len(values)
    if n < 2:
        raise ValueError("need at least two samples for a slope")
    slopes = [(values[j] - values[i]) / (j - i) for i in range(n) for j in range(i + 1, n)]
    return statistics.median(slopes)


@dataclass(frozen=True)
class TrendVerdict:
    slope_mib_per_run: float
    budget_mib_per_run: float
    runs: int

    @property
    def leaking(self) -> bool:
        return self.slope_mib_per_run > self.budget_mib_per_run

    def as_dict(self) -> dict:
        return {"slope_mib_per_run": round(self.slope_mib_per_run, 3),
                "budget_mib_per_run": self.budget_mib_per_run, "runs": self.runs, "leaking": self.leaking}


def rss_trend(samples_bytes: list[int], budget_mib_per_run: float) -> TrendVerdict:
    """Verdict over RSS samples taken after each run (warm-up already dropped by the caller)."""
    mib = [s / MIB for s in samples_bytes]
    return TrendVerdict(theil_sen_slope(mib), budget_mib_per_run, len(mib))
