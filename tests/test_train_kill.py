"""Crash safety of training: SIGKILL the whole run (launcher and both ranks) at seeded random moments,
several trials per script; the rerun must resume from the newest COMPLETE checkpoint (never a
half-written one) and continue exactly as a run that was never killed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from guards import HANG_S
from train_helpers import REPO, logged_losses, run_ok, torchrun_cmd, train_env

pytestmark = pytest.mark.slow

MAX_STEPS = 5
SCRIPTS = ("align", "stitch")
TRIALS = 3


def _args(script: str, decoder: Path) -> list[str]:
    common = ["--max-steps", str(MAX_STEPS), "--save-every", "1"]
    if script == "stitch":
        return common + ["--set", "models.layer_search=none", "--set", "stitch.view_counts=[5]"]
    return common + ["--set", f"models.decoder={decoder}"]  # align needs a stitched decoder


def _descendants(root: int) -> list[int]:
    """All processes below `root` (torchrun's workers live in their own sessions, so killpg misses them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree(proc: subprocess.Popen) -> None:
    for pid in [proc.pid, *_descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=HANG_S)


@pytest.fixture(scope="module")
def decoder_export(tmp_path_factory):
    from vist3a import decoders, tiny

    path = tmp_path_factory.mktemp("decoder") / "stitched_decoder"
    return decoders.save_stitched_export(tiny.build_tiny_decoder(), path)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, decoder_export):
    runs = {}
    for script in SCRIPTS:
        out = tmp_path_factory.mktemp(f"ref_{script}")
        run_ok(torchrun_cmd(script, out, *_args(script, decoder_export)))
        runs[script] = logged_losses(out, script)
        assert [s for s, _ in runs[script]] == list(range(1, MAX_STEPS + 1))
    return runs


@pytest.mark.parametrize("script", SCRIPTS)
def test_sigkill_at_random_points_then_resume(script, uninterrupted, decoder_export, tmp_path):
    from vist3a_train.common.checkpoint import CheckpointManager

    rng = random.Random(f"kill-{script}")
    report = []
    for trial in range(TRIALS):
        out = tmp_path / f"trial{trial}"
        cmd = torchrun_cmd(script, out, *_args(script, decoder_export))
        log = out / "logs" / f"{script}.jsonl"
        proc = subprocess.Popen(cmd, cwd=REPO, env=train_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 300
            while not (log.exists() and log.read_text().strip()) and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)  # wait for the first step, then kill somewhere in the run
            time.sleep(rng.uniform(0.0, 4.0))
        finally:
            _kill_tree(proc)
        root = out / "checkpoints" / script
        complete = [s for s, _ in CheckpointManager(root).complete_checkpoints()]
        for folder in root.glob("step-*") if root.is_dir() else []:  # a folder named step-* is always whole
            assert json.loads((folder / "state.json").read_text())["complete"] is True
        resumed = run_ok(cmd)
        if complete:
            assert f"resumed from step {complete[0]}" in resumed
        assert not list(root.glob(".tmp-*"))
        got = dict(logged_losses(out, script))
        assert sorted(got) == list(range(1, MAX_STEPS + 1))
        for step, loss in uninterrupted[script]:
            assert got[step] == pytest.approx(loss, rel=1e-5), (trial, step)
        report.append({"trial": trial, "complete_checkpoints_at_kill": complete, "resumed_from": complete[0] if complete else None})
    print(f"\n{script} kill trials: {json.dumps(report)}")
    assert any(r["resumed_from"] for r in report), "no trial was killed after a checkpoint; widen the kill window"
