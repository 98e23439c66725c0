"""Rank-0 logging: messages on stdout, scalars to TensorBoard (``OUTPUT/tensorboard/<script>``) and to a
JSON-lines file (``OUTPUT/logs/<script>.jsonl``, handy for tests and plots), a tqdm bar."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import distributed as D

__all__ = ["RunLogger"]


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


class RunLogger:
    def __init__(self, out_dir: Path, script: str, *, tensorboard: bool = True):
        self.script = script
        self.main = D.is_main()
        self.out_dir = Path(out_dir)
        self.jsonl = self.out_dir / "logs" / f"{script}.jsonl"
        self.tb = None
        self._tb_wanted = tensorboard

    def info(self, msg: str) -> None:
        if self.main:
            print(f"[vist3a_train.{self.script}] {msg}", flush=True)

    def start(self, resumed_step: int) -> None:
        """Drop records past the resumed step (they belong to the lost tail of a killed run)."""
        if not self.main:
            return
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        if self.jsonl.is_file():
            kept = []
            for line in self.jsonl.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resumed_step:
                        kept.append(line)
                except ValueError:
                    continue
            self.jsonl.write_text("".join(k + "\n" for k in kept))
        if self._tb_wanted:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.out_dir / "tensorboard" / self.script), purge_step=resumed_step + 1)
            except Exception as exc:  # tensorboard not installed
                self.info(f"TensorBoard logging disabled ({exc})")

    def log(self, step: int, scalars: dict) -> None:
        if not self.main:
            return
        clean = {k: float(v) for k, v in scalars.items() if v is not None}
        with open(self.jsonl, "a") as f:
            f.write(json.dumps({"step": int(step), **clean}) + "\n")
        if self.tb is not None:
            for k, v in clean.items():
                self.tb.add_scalar(f"{self.script}/{k}", v, int(step))

    def progress(self, total: int, initial: int):
        if not self.main:
            return _NullBar()
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=self.script, dynamic_ncols=True, file=sys.stderr,
                    mininterval=1.0)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None
