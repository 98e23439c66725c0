"""Exception types shared by the VIST3A core, the ComfyUI nodes and the training backend.

Every error the user can act on derives from :class:`VIST3AError`, so front ends (nodes, CLI) can
show its message verbatim instead of a traceback. Messages are written as ONE sentence that names
the file, the key, what was expected vs. found, and what to do about it. All of them live here (the
modules that raise them re-export their own, e.g. ``vist3a.gaussians.PlyError``), so the hierarchy
is visible in one place:

    VIST3AError
    ├── CheckpointError (ValueError)     weights files: missing, unsafe, wrong architecture
    ├── PlyError (ValueError)            3DGS .ply files
    ├── SpzError (ValueError)            .spz files
    ├── GlbError (ValueError)            .glb files (glTF splats)
    ├── ResourceError (ValueError)       a job that does not fit the limits / the memory
    ├── SamplingInputError (ValueError)  frame count, size, steps the Wan model cannot produce
    ├── UsageError (ValueError)          CLI arguments
    ├── NonFiniteError (ValueError)      a number that is NaN or infinite (vist3a.finite)
    ├── ParityError (ValueError)         parity fixture or its metadata unusable
    └── Cancelled                        the user cancelled a long operation

:class:`HostSyncError` is not a user error but a broken invariant (a device sync inside a loop that
must not sync), so it is a plain ``RuntimeError``.
"""

from __future__ import annotations

from os import PathLike
from typing import Optional, Union

__all__ = [
    "VIST3AError",
    "CheckpointError",
    "PlyError",
    "SpzError",
    "GlbError",
    "ResourceError",
    "SamplingInputError",
    "UsageError",
    "NonFiniteError",
    "ParityError",
    "Cancelled",
    "HostSyncError",
]


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


class PlyError(VIST3AError, ValueError):
    """A PLY file cannot be read as 3D Gaussian splats; the message names the file and the problem."""


class SpzError(VIST3AError, ValueError):
    """A file that is not a readable ``.spz`` splat."""


class GlbError(VIST3AError, ValueError):
    """A file that is not a readable ``KHR_gaussian_splatting`` glTF binary (``.glb``)."""


class ResourceError(VIST3AError, ValueError):
    """The requested job does not fit the limits or the memory available."""


class SamplingInputError(VIST3AError, ValueError):
    """Frame count, size or step settings that the Wan model cannot produce."""


class UsageError(VIST3AError, ValueError):
    """Command-line input the user can fix; printed as one line."""


class NonFiniteError(VIST3AError, ValueError):
    """A setting that must be a number is NaN or infinite (``--cfg nan``, a node input, a config value)."""


class ParityError(VIST3AError, ValueError):
    """The parity fixture or its metadata cannot be used (not a comparison failure)."""


class Cancelled(VIST3AError):
    """The user cancelled a long operation (ComfyUI's Cancel button, Ctrl-C in the CLI)."""


class HostSyncError(RuntimeError):
    """A device -> host synchronisation happened where none is allowed (e.g. inside the denoising loop)."""
