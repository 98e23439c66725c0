"""Deprecated alias of :mod:`vist3a.weights`, kept for one release so external scripts keep working.

The weights code now lives in the ``vist3a.weights`` package (readers, detect, manifest, validate,
stitched); the tiny random checkpoint writer moved to :func:`vist3a.tiny.write_tiny_stitched_pth`.
Import from ``vist3a.weights``; this module will be removed in the next release.
"""

from __future__ import annotations

from .weights import *  # noqa: F401,F403
from .weights import __all__  # noqa: F401
