"""Small helpers shared by the weights modules: shapes as text, file checks, short messages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Union

from ..errors import CheckpointError

PathLike = Union[str, "os.PathLike[str]"]

MB = 1 << 20


def shape_of(value: Any) -> tuple[int, ...]:
    """Shape of a tensor, array, torch.Size or plain list; lets checks run on metadata only."""
    shape = getattr(value, "shape", value)
    return tuple(int(x) for x in shape)


def fmt_shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(x)) for x in shape) + "]"


def require_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(
            f"Weights file '{path}' does not exist; check the path or put the file in the model folder.",
            path=path,
        )
    if not path.is_file():
        raise CheckpointError(
            f"'{path}' is a folder, not a weights file; point to the file inside it.", path=path
        )


def first_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return (text[: limit - 3] + "...") if len(text) > limit else (text or type(exc).__name__)
