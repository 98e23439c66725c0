"""The one place the GPU-check scripts (decode.py, render_compare.py, the gpu tests) take measurement
helpers from, so a move of those helpers (issue 17: vist3a/perf.py -> bench/ + a runtime module) is
fixed here alone."""

from vist3a.perf import (  # noqa: F401  re-exported
    GIB,
    PeakMemory,
    BlockStreamer,
    describe_device,
    materialize_random_,
    module_bytes,
    no_host_sync,
    summarize,
    synchronize,
    versions,
)
