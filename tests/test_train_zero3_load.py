"""align.py under ZeRO-3 streams the frozen Wan transformer into per-rank partitions (deepspeed.zero.Init +
one tensor at a time from safetensors) and trains exactly as when every rank loads the whole model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from guards import HANG_S

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _align(out: Path, wan: Path, *extra: str) -> str:
    launcher = [str(BIN / "torchrun")] if (BIN / "torchrun").exists() else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [*launcher, "--standalone", "--nproc_per_node", "2", "vist3a_train/align.py", "--config",
           "vist3a_train/configs/tiny_cpu.yaml", "--output-dir", str(out), "--max-steps", "2",
           "--deepspeed-config", "zero3.json", "--set", "models.tiny=false", "--set", f"models.wan={wan}",
           "--set", "align.reward.enabled=false", *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return proc.stdout + proc.stderr


def test_streamed_zero3_loading_trains_like_the_full_load(tmp_path):
    from safetensors.torch import load_file

    from vist3a.wan.tiny import save_tiny_wan_diffusers

    wan = save_tiny_wan_diffusers(tmp_path / "wan")
    log = _align(tmp_path / "streamed", wan)
    assert "streamed from" in log
    log_full = _align(tmp_path / "full", wan, "--set", "models.stream_zero3=false")
    assert "streamed from" not in log_full

    def losses(d):
        return [json.loads(x)["loss"] for x in (d / "logs" / "align.jsonl").read_text().splitlines()]

    a, b = losses(tmp_path / "streamed"), losses(tmp_path / "full")
    assert len(a) == 2 and a == pytest.approx(b, rel=1e-5)
    la = load_file(str(tmp_path / "streamed" / "export" / "vist3a_lora" / "adapter_model.safetensors"))
    lb = load_file(str(tmp_path / "full" / "export" / "vist3a_lora" / "adapter_model.safetensors"))
    assert la.keys() == lb.keys() and max(float((la[k] - lb[k]).abs().max()) for k in la) < 1e-5
