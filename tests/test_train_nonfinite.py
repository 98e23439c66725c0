"""A step whose gradient norm is not finite is skipped under DeepSpeed ZeRO-2 and ZeRO-3 (2 CPU ranks, tiny
align run): no optimizer update, no EMA update, the skip is logged, and training carries on."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from guards import HANG_S

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _align(out: Path, zero: str) -> None:
    import os

    launcher = [str(BIN / "torchrun")] if (BIN / "torchrun").exists() else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [*launcher, "--standalone", "--nproc_per_node", "2", "vist3a_train/align.py", "--config",
           "vist3a_train/configs/tiny_cpu.yaml", "--output-dir", str(out), "--max-steps", "3", "--save-every", "1",
           "--deepspeed-config", zero, "--set", "align.reward.enabled=false", "--set", "run.inject_nonfinite_steps=[2]",
           "--set", "run.keep_checkpoints=3"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert "step 2: non-finite gradient norm" in proc.stdout + proc.stderr


@pytest.mark.parametrize("zero", ["zero2.json", "zero3.json"])
def test_nonfinite_gradient_step_is_skipped_without_ema_update(zero, tmp_path):
    from safetensors.torch import load_file

    _align(tmp_path, zero)
    rows = [json.loads(x) for x in (tmp_path / "logs" / "align.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["skipped"] for r in rows] == [0.0, 1.0, 0.0]
    assert not math.isfinite(rows[1]["grad_norm"]) and math.isfinite(rows[2]["grad_norm"])
    assert rows[0]["lr"] == rows[1]["lr"] == rows[2]["lr"]  # constant schedule; the LR follows the step count
    ckpt = tmp_path / "checkpoints" / "align"
    ema = [load_file(str(ckpt / f"step-{s:08d}" / "ema.safetensors")) for s in (1, 2, 3)]
    assert all(torch.equal(ema[0][k], ema[1][k]) for k in ema[0])  # skipped step: EMA untouched
    assert any(not torch.equal(ema[1][k], ema[2][k]) for k in ema[0])  # the next step updates it again
    assert all(bool(torch.isfinite(v).all()) for v in ema[2].values())  # so the weights stayed finite
    lora = load_file(str(tmp_path / "export" / "vist3a_lora" / "adapter_model.safetensors"))
    assert all(bool(torch.isfinite(v).all()) for v in lora.values())
