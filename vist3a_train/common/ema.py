"""Exponential moving average of the trainable (LoRA) parameters, kept in float32.

Decay at step ``s`` is ``min((1 + s) / (10 + s), decay)`` (the official warm-up: 0.1, 0.18, ... up to
0.99). The shadow holds full tensors on every rank (the Wan LoRA is 26 M parameters at 14B, 105 MB in
fp32), fed from the engine's full fp32 values so it is the same under ZeRO-2, ZeRO-3 and plain torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

__all__ = ["EMA"]


class EMA:
    def __init__(self, state: Mapping[str, torch.Tensor], decay: float = 0.99):
        self.decay = float(decay)
        self.shadow = {k: v.detach().float().clone() for k, v in state.items()}

    def current_decay(self, step: int) -> float:
        return min((1.0 + step) / (10.0 + step), self.decay)

    @torch.no_grad()
    def update(self, step: int, state: Mapping[str, torch.Tensor]) -> float:
        d = self.current_decay(step)
        for k, v in self.shadow.items():
            v.mul_(d).add_(state[k].to(v.device, torch.float32), alpha=1.0 - d)
        return d

    def save(self, path: Path) -> None:
        from vist3a.weights import save_safetensors_atomic

        save_safetensors_atomic(self.shadow, path)

    def load(self, path: Path) -> None:
        from safetensors.torch import load_file

        saved = load_file(str(path))
        missing = [k for k in self.shadow if k not in saved]
        if missing:
            raise RuntimeError(f"EMA file '{path}' lacks '{missing[0]}' (and {len(missing) - 1} more)")
        for k, v in self.shadow.items():
            v.copy_(saved[k].to(v.device))
