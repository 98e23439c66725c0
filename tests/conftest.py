import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# VIST3A_TEST_THREADS=1 runs the suite on one thread: reductions then split differently, so numerical bounds
# must hold at both counts (see bench/parity_spread.py).
torch.set_num_threads(int(os.environ.get("VIST3A_TEST_THREADS") or max(1, min(2, os.cpu_count() or 1))))

FIXTURES = Path(__file__).parent / "fixtures"
# tools/ (ComfyUI install/serve, workflow generation) is not a test folder but the ComfyUI tests drive it
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


# One real ComfyUI server per version for the whole session (starting one takes ~10-40 s on 2 cores);
# pytest groups the tests by version and stops one server before it starts the next.
COMFY_VERSIONS = ["0.3.75", "0.28.0"]


@pytest.fixture(scope="session", params=COMFY_VERSIONS)
def comfy_server(request, tmp_path_factory):
    from comfy_harness import start_test_server

    srv = start_test_server(request.param, tmp_path_factory)
    yield srv
    srv.stop()
