"""Atomic, resumable training checkpoints: ``OUTPUT/checkpoints/<script>/step-00000010/``.

Writing (collective, every rank calls :meth:`CheckpointManager.save`):

1. rank 0 (re)creates ``.tmp-step-00000010/``; barrier;
2. every rank writes its part there: the engine state (DeepSpeed writes one file per rank), its RNG
   state, and rank 0 the extras (EMA, find_layer statistics, ...); barrier;
3. rank 0 writes ``state.json`` (``"complete": true``, step, data position) last, fsyncs, and renames
   the folder to ``step-00000010`` -- a rename within one directory is atomic, so a folder named
   ``step-*`` is always whole; then older checkpoints beyond ``keep`` are renamed to ``.trash-*``
   and deleted.

Reading: :meth:`latest` takes the newest ``step-*`` folder whose ``state.json`` is readable, says
complete and names the same step; ``.tmp-*`` (a run killed while saving) and ``.trash-*`` folders are
never considered and are cleaned up at the next start. Rank 0 picks, the others follow (broadcast).
The folder must be on a file system all ranks see (one node, or a shared FS across nodes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from vist3a.atomic import atomic_write

from . import distributed as D

__all__ = ["CheckpointManager", "STEP_RE"]

STEP_RE = re.compile(r"^step-(\d{8})$")
STATE_FILE = "state.json"
FAULT_ENV = "VIST3A_TRAIN_FAULT"  # test hook: "hang_in_save:<step>" stops inside that save


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


class CheckpointManager:
    def __init__(self, root: Path, keep: int = 2):
        self.root = Path(root)
        self.keep = max(1, int(keep))

    @staticmethod
    def name(step: int) -> str:
        return f"step-{int(step):08d}"

    # ------------------------------------------------------------------------------------ reading

    def complete_checkpoints(self) -> list[tuple[int, Path]]:
        """(step, folder) of every complete checkpoint, newest first."""
        found = []
        if not self.root.is_dir():
            return found
        for child in self.root.iterdir():
            m = STEP_RE.match(child.name)
            if not m or not child.is_dir():
                continue
            try:
                state = json.loads((child / STATE_FILE).read_text())
            except (OSError, ValueError):
                continue
            if isinstance(state, dict) and state.get("complete") is True and state.get("step") == int(m.group(1)):
                found.append((int(m.group(1)), child))
        return sorted(found, key=lambda t: t[0], reverse=True)

    def latest(self) -> Optional[Path]:
        """Rank 0 looks, every rank gets the same answer."""
        path = None
        if D.is_main():
            done = self.complete_checkpoints()
            path = str(done[0][1]) if done else None
        path = D.broadcast_object(path)
        return Path(path) if path else None

    def read_state(self, folder: Path) -> dict:
        return json.loads((folder / STATE_FILE).read_text())

    def cleanup_partial(self) -> None:
        """Remove what a killed run left behind (rank 0 only; call before training starts)."""
        if not D.is_main() or not self.root.is_dir():
            return
        for child in self.root.iterdir():
            if child.name.startswith((".tmp-", ".trash-")):
                shutil.rmtree(child, ignore_errors=True)

    # ------------------------------------------------------------------------------------ writing

    def save(self, step: int, *, engine=None, state: Optional[dict] = None,
             writers: Optional[Callable[[Path], None]] = None) -> Path:
        """Collective. ``writers(folder)`` runs on every rank (write rank-0-only files behind is_main)."""
        tmp = self.root / f".tmp-{self.name(step)}"
        final = self.root / self.name(step)
        if D.is_main():
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        D.barrier()
        if engine is not None:
            engine.save(tmp / "engine")
        rank = D.info().rank
        (tmp / "rng").mkdir(exist_ok=True)
        torch.save(D.rng_state(), tmp / "rng" / f"rank{rank:05d}.pt")
        if writers is not None:
            writers(tmp)
        D.barrier()
        self._fault_hook(step, tmp)
        if D.is_main():
            record = {"complete": True, "step": int(step), "world_size": D.info().world_size,
                      "time": time.strftime("%Y-%m-%d %H:%M:%S"), **(state or {})}
            with atomic_write(tmp / STATE_FILE, "w") as f:
                json.dump(record, f, indent=2)
            _fsync_dir(tmp)
            if final.exists():  # re-saving a step (e.g. after a resume at a saved step)
                trash = self.root / f".trash-{final.name}-{os.getpid()}"
                os.replace(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, final)
            _fsync_dir(self.root)
            self._prune()
        D.barrier()
        return final

    def _prune(self) -> None:
        for _, old in self.complete_checkpoints()[self.keep:]:
            trash = self.root / f".trash-{old.name}"
            os.replace(old, trash)
            shutil.rmtree(trash, ignore_errors=True)

    @staticmethod
    def _fault_hook(step: int, tmp: Path) -> None:
        """Test hook: every rank stops inside this save (files written, not yet complete) and waits to
        be SIGKILLed; a rank whose launcher has gone exits on its own, so nothing is left behind."""
        fault = os.environ.get(FAULT_ENV, "")
        if fault == f"hang_in_save:{step}":
            parent = os.getppid()
            sys.stdout.write(f"FAULT: rank {D.info().rank} pid {os.getpid()} hanging inside the checkpoint save of "
                             f"step {step} ({tmp})\n")  # one write: ranks share the launcher's stdout
            sys.stdout.flush()
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)

    # ------------------------------------------------------------------------------------ loading

    def load(self, folder: Path, *, engine=None) -> dict:
        """Restore engine + this rank's RNG; returns state.json (call on every rank)."""
        state = self.read_state(folder)
        if engine is not None:
            engine.load(folder / "engine")
        rank = D.info().rank
        rng_file = folder / "rng" / f"rank{rank:05d}.pt"
        if rng_file.is_file():  # absent when resuming with more ranks than were saved
            D.set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
        return state
