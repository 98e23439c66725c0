"""Device synchronisation: wait for a device at stage boundaries, and forbid host syncs inside hot loops.

Why a module of its own: the denoising loop must never make the host wait for the GPU (it would
serialise the block-swap copies), and the CPU tests prove it with :func:`no_host_sync`, which the
sampler and the pipeline use; timing code uses :func:`synchronize`.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Union

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .errors import HostSyncError

Device = Union[str, torch.device]

__all__ = ["synchronize", "no_host_sync", "SYNCING_OPS", "HostSyncError"]


def synchronize(device: Device | None = None) -> None:
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device is None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


# aten ops that make the host wait for a CUDA device (value reads, data-dependent shapes, solvers that
# check their error codes on the host).  Copies between the CPU and the device also wait unless they
# are non-blocking from pinned memory; on a CPU-only run they cannot be seen (everything is on the CPU).
SYNCING_OPS = frozenset({
    "aten._local_scalar_dense",  # .item(), bool(t), float(t), int(t), if t: ...
    "aten.is_nonzero", "aten.equal", "aten.nonzero", "aten.masked_select", "aten.unique_dim",
    "aten._unique2", "aten.unique_consecutive", "aten.linalg_solve", "aten._linalg_solve_ex",
    "aten.linalg_solve_ex", "aten._linalg_check_errors", "aten.linalg_inv_ex", "aten.linalg_cholesky_ex",
})
_SYNC_METHODS = ("tolist", "numpy")  # read tensor memory without dispatching an op


def _sync_detector():
    class _Detector(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket)
            if name in SYNCING_OPS:
                raise HostSyncError(f"{name} needs the tensor's value on the host (a device sync on a GPU)")
            return func(*args, **(kwargs or {}))

    return _Detector()


@contextlib.contextmanager
def no_host_sync(device: Device = "cpu") -> Iterator[None]:
    """Fail on any device -> host synchronisation inside the block.

    On CUDA this is ``torch.cuda.set_sync_debug_mode("error")`` (every blocking sync raises). On a CPU
    nothing ever waits, so the ops that *would* wait on a GPU (:data:`SYNCING_OPS`: ``.item()``,
    ``bool(t)``, ``nonzero``, ``linalg.solve``'s error check, ...) and ``.tolist()``/``.numpy()``
    raise :class:`HostSyncError` instead, which makes CPU tests a faithful proxy.
    """
    device = torch.device(device)
    if device.type == "cuda":
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(previous)
        return
    saved = {name: torch.Tensor.__dict__.get(name) for name in _SYNC_METHODS}

    def refuse(name):
        def method(self, *args, **kwargs):
            raise HostSyncError(f"Tensor.{name} reads a tensor's values on the host (a device sync on a GPU)")

        return method

    for name in _SYNC_METHODS:
        setattr(torch.Tensor, name, refuse(name))
    try:
        with _sync_detector():
            yield
    finally:
        for name, method in saved.items():
            if method is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, method)
