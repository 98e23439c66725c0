"""One block describing this machine for CI logs: CPU model, cores, torch and its CPU kernel level."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    import torch

    print(f"machine: {cpu_model()} | {os.cpu_count()} cores | {platform.machine()} | Python {platform.python_version()}")
    print(f"torch {torch.__version__} | cpu capability {torch.backends.cpu.get_cpu_capability()} | "
          f"threads {torch.get_num_threads()} | mkl {torch.backends.mkl.is_available()} | "
          f"mkldnn {torch.backends.mkldnn.is_available()}")
    for var in ("ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS"):
        if os.environ.get(var):
            print(f"{var}={os.environ[var]}")


if __name__ == "__main__":
    main()
