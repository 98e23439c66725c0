"""Prompt datasets for the reward branch of align.py: a text file with one prompt per line (the
official format), a JSON list of strings, or an inline list in the config."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Optional, Sequence

from .base import DatasetError

__all__ = ["PromptDataset"]


class PromptDataset:
    def __init__(self, path: Optional[str | Path] = None, prompts: Optional[Sequence[str]] = None):
        self.root = None if path is None else Path(path).expanduser()
        if self.root is not None:
            if not self.root.is_file():
                raise DatasetError(f"prompt file '{self.root}' does not exist", self.root)
            try:
                text = self.root.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise DatasetError(f"prompt file '{self.root}' cannot be read as UTF-8 text ({exc})", self.root) from None
            if self.root.suffix.lower() == ".json":
                try:
                    data = json.loads(text)
                except ValueError as exc:
                    raise DatasetError(f"prompt file '{self.root}' is not valid JSON ({exc})", self.root) from None
                if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
                    raise DatasetError(f"prompt file '{self.root}' must hold a JSON list of strings", self.root)
                prompts = data
            else:
                prompts = text.splitlines()
        self.prompts = [p.strip() for p in (prompts or []) if p and p.strip()]
        if not self.prompts:
            raise DatasetError(f"prompt dataset {self.root or '(inline)'} holds no prompts", self.root)

    def __len__(self) -> int:
        return len(self.prompts)

    def describe(self) -> str:
        return f"prompts from {self.root or 'the config'}"

    def load(self, index: int, rng: random.Random) -> dict:
        return {"prompt": self.prompts[index]}
