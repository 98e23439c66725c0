"""Running the training scripts as a user does (torchrun, 2 CPU ranks, the tiny config) and reading their loss
logs: shared by the end-to-end training tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = "vist3a_train/configs/tiny_cpu.yaml"
BIN = Path(sys.executable).parent


def train_env(**extra) -> dict:
    """This environment, offline, one OMP thread, the venv's launchers on PATH, no injected fault; plus ``extra``."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    env.pop("VIST3A_TRAIN_FAULT", None)
    env.update(extra)
    return env


def torchrun_cmd(script: str, out: Path, *args: str) -> list[str]:
    """The command line of ``vist3a_train/<script>.py`` on 2 ranks with the tiny config, writing to ``out``."""
    launcher = [str(BIN / "torchrun")] if (BIN / "torchrun").exists() else [sys.executable, "-m", "torch.distributed.run"]
    return [*launcher, "--standalone", "--nproc_per_node", "2", f"vist3a_train/{script}.py", "--config", TINY,
            "--output-dir", str(out), *args]


def run_ok(cmd: list[str], timeout: int = 600, **env) -> str:
    """Run ``cmd`` in the repository with :func:`train_env`; assert it succeeded; its stdout + stderr."""
    t = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=train_env(**env), capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-6000:]}"
    print(f"[{time.time() - t:.1f} s] {' '.join(cmd[-8:])}")
    return out


def logged_losses(out: Path, script: str) -> list[tuple[int, float]]:
    """(step, loss) of every logged step of ``script`` in the run folder ``out``."""
    lines = (out / "logs" / f"{script}.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines)]
