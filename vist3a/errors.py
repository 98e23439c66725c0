"""Exception types shared by the VIST3A core, the ComfyUI nodes and the training backend.

Every error the user can act on derives from :class:`VIST3AError`, so front ends (nodes, CLI) can
show its message verbatim instead of a traceback. Messages are written as ONE sentence that names
the file, the key, what was expected vs. found, and what to do about it.
"""

from __future__ import annotations

from os import PathLike
from typing import Optional, Union

__all__ = ["VIST3AError", "CheckpointError"]


class VIST3AError(Exception):
    """Base class: an error whose message is meant for the end user, not for a developer."""


class CheckpointError(VIST3AError, ValueError):
    """A weights file is missing, unreadable, unsafe, or does not match the expected architecture.

    It is also a ``ValueError`` so generic callers that only catch ``ValueError`` still handle it.
    ``path`` and ``key`` are kept as attributes so front ends can highlight the offending file/key
    without parsing the message.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Optional[Union[str, PathLike]] = None,
        key: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.key = key
