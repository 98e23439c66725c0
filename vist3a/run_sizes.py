"""The two run sizes a user picks between: the official settings, and a quick try that fits a CPU.

With the official settings (50 steps, 13 frames at 512², 24 views) a CPU run takes hours with the real
models and a quarter of an hour even with the tiny ones; the quick try keeps the whole chain (sampler,
decoder, renders) but with the smallest sizes that still give a scene to look at. The Run Size node
offers these sets by name, and the time estimates name exactly the settings that are above the quick try,
so their advice never suggests a value that is already set.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RunSize", "OFFICIAL", "QUICK", "RUN_SIZES", "above_quick"]


@dataclass(frozen=True)
class RunSize:
    """Sampler, render and AnySplat sizes of one run size."""

    steps: int  # denoising steps
    frames: int  # video frames (4k+1)
    size: int  # video width = height (multiple of 16)
    views: int  # rendered orbit views
    view_size: int  # rendered view width = height
    max_views: int  # views AnySplat reconstructs from
    anysplat_size: int  # AnySplat working resolution (multiple of 14)


OFFICIAL = RunSize(steps=50, frames=13, size=512, views=24, view_size=512, max_views=24, anysplat_size=448)
QUICK = RunSize(steps=10, frames=5, size=256, views=8, view_size=256, max_views=8, anysplat_size=224)
RUN_SIZES = {"official (GPU)": OFFICIAL, "quick try (CPU)": QUICK}


def above_quick(**settings: int) -> dict[str, int]:
    """The given settings (RunSize field names) that are above the quick try, with the quick value for each;
    e.g. ``above_quick(steps=50, frames=5)`` -> ``{"steps": 10}``."""
    return {name: getattr(QUICK, name) for name, value in settings.items() if value > getattr(QUICK, name)}
