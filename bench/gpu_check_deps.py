"""The one place the GPU-check scripts (decode.py, render_compare.py, the gpu tests) take measurement and
runtime helpers from, so a later move of those helpers is fixed here alone."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import (  # noqa: E402,F401  re-exported
    PeakMemory,
    describe_device,
    materialize_random_,
    summarize,
    versions,
)

from vist3a.offload import GIB, BlockStreamer, module_bytes  # noqa: E402,F401
from vist3a.sync import no_host_sync, synchronize  # noqa: E402,F401
