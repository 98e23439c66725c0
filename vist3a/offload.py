"""Weight offload at run time: whole modules (``ModuleOffloader``) or transformer blocks (``BlockStreamer``).

Weights are read-only during inference, so "offloading" a module never copies anything back: the
(pinned) CPU copy is the master, the device copy is made when needed and dropped after.
``ModuleOffloader`` does that for whole modules (one stage at a time), ``BlockStreamer`` for
individual transformer blocks, prefetching the next streamed block on a side CUDA stream while the
current one computes ("block swap"), so a 14B transformer runs in a 24 GB budget. Used by
:class:`vist3a.pipeline.VIST3APipeline` and by the ComfyUI Wan loader's "blocks" offload.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence, Union

import torch
from torch import nn

Device = Union[str, torch.device]
GIB = 1024**3

__all__ = [
    "GIB",
    "execution_device",
    "set_execution_device",
    "tensor_bytes",
    "module_bytes",
    "ModuleOffloader",
    "BlockStreamer",
    "spread_indices",
    "plan_resident_blocks",
    "OFFLOAD_MODES",
    "resolve_offload",
    "stream_transformer_blocks",
]


_EXEC_ATTR = "_vist3a_execution_device"


def execution_device(module: nn.Module) -> torch.device:
    """Where ``module`` computes: the device set by an offloader, else that of its first parameter."""
    dev = getattr(module, _EXEC_ATTR, None)
    if dev is not None:
        return dev
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def set_execution_device(module: nn.Module, device: Optional[Device]) -> None:
    if device is None:
        if hasattr(module, _EXEC_ATTR):
            delattr(module, _EXEC_ATTR)
    else:
        object.__setattr__(module, _EXEC_ATTR, torch.device(device))


def _unique_tensors(modules: Iterable[nn.Module]) -> list[torch.Tensor]:
    seen, out = set(), []
    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                out.append(t)
    return out


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def module_bytes(module: nn.Module) -> int:
    return tensor_bytes(_unique_tensors([module]))


def _master_copy(t: torch.Tensor, pin: bool) -> torch.Tensor:
    data = t.data
    if data.device.type != "cpu":
        data = data.to("cpu")
    if pin and not data.is_pinned():
        data = data.pin_memory()
    return data


def _device_copy(master: torch.Tensor, device: torch.device) -> torch.Tensor:
    if master.device == device:  # CPU "offload" (tests): still a real, separate copy
        return torch.empty_like(master).copy_(master)
    return master.to(device, non_blocking=True)


class ModuleOffloader:
    """Keep a module's weights in (pinned) CPU memory; `onload()` puts a copy on ``device``, `offload()`
    drops it again (nothing is copied back: inference never changes weights, so anything that does,
    e.g. re-merging a LoRA, must happen before the offloader is made or be followed by a new one).

    Tensors in ``skip`` (e.g. the blocks a `BlockStreamer` handles, or an embedding table looked up on
    the CPU) are left alone.
    """

    def __init__(self, module: nn.Module, device: Device, *, skip: Iterable[torch.Tensor] = (), pin: Optional[bool] = None):
        self.module = module
        self.device = torch.device(device)
        pin = self.device.type == "cuda" if pin is None else pin
        skip_ids = {id(t) for t in skip}
        self.tensors = [t for t in _unique_tensors([module]) if id(t) not in skip_ids]
        self.masters = []
        for t in self.tensors:  # one tensor at a time: the old copy is freed before the next is made
            t.data = _master_copy(t, pin)
            self.masters.append(t.data)
        self.onloaded = False
        self.transfers = 0
        set_execution_device(module, self.device)

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.masters)

    def onload(self) -> None:
        if self.onloaded:
            return
        for t, m in zip(self.tensors, self.masters):
            t.data = _device_copy(m, self.device)
        self.onloaded = True
        self.transfers += 1

    def offload(self) -> None:
        if not self.onloaded:
            return
        for t, m in zip(self.tensors, self.masters):
            t.data = m
        self.onloaded = False

    def remove(self) -> None:
        """Stop managing the module: its tensors are left on the CPU masters (move it where you want)."""
        for t, m in zip(self.tensors, self.masters):
            t.data = m
        self.onloaded = False
        set_execution_device(self.module, None)


def spread_indices(n: int, k: int) -> list[int]:
    """``k`` of ``range(n)`` spread evenly (which blocks to stream: interleaved with resident ones, so
    each transfer overlaps the compute of the resident blocks before it)."""
    k = max(0, min(n, int(k)))
    if k == 0:
        return []
    return sorted({min(n - 1, int((i + 0.5) * n / k)) for i in range(k)})


class BlockStreamer:
    """Block swap: ``blocks`` live in (pinned) CPU memory and are copied to ``device`` just before they
    run and dropped right after; the next ``prefetch`` blocks are copied ahead on a side CUDA stream
    while the current one computes.  ``cyclic=True`` (a denoising loop) prefetches the first block of
    the next forward at the end of this one.

    At most ``prefetch + 1`` streamed blocks hold device memory at any time (`max_in_flight` records
    it).  On a CPU device the copies are real but synchronous, which is what the tests exercise.
    """

    def __init__(self, blocks: Sequence[nn.Module], device: Device, *, prefetch: int = 1, cyclic: bool = False,
                 pin: Optional[bool] = None):
        self.blocks = list(blocks)
        self.device = torch.device(device)
        self.prefetch = max(0, int(prefetch))
        self.cyclic = cyclic
        pin = self.device.type == "cuda" if pin is None else pin
        self.tensors = [_unique_tensors([b]) for b in self.blocks]
        self.masters = []
        for ts in self.tensors:
            ms = []
            for t in ts:
                t.data = _master_copy(t, pin)
                ms.append(t.data)
            self.masters.append(ms)
        self.copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._in_flight: dict[int, tuple[Optional[torch.cuda.Event], list[torch.Tensor]]] = {}
        self.loads = 0
        self.max_in_flight = 0
        self._handles = []
        for i, block in enumerate(self.blocks):
            self._handles.append(block.register_forward_pre_hook(self._pre_hook(i)))
            self._handles.append(block.register_forward_hook(self._post_hook(i)))

    @property
    def nbytes(self) -> int:
        return sum(tensor_bytes(ms) for ms in self.masters)

    def _issue(self, i: int) -> None:
        if i in self._in_flight:
            return
        if self.copy_stream is not None:
            # The masters are pinned and never written, so the copy needs no ordering against compute;
            # the copies are handed to the compute stream with record_stream (allocator safety).
            with torch.cuda.stream(self.copy_stream):
                copies = [_device_copy(m, self.device) for m in self.masters[i]]
                event = torch.cuda.Event()
                event.record(self.copy_stream)
        else:
            copies, event = [_device_copy(m, self.device) for m in self.masters[i]], None
        self._in_flight[i] = (event, copies)
        self.loads += 1
        self.max_in_flight = max(self.max_in_flight, len(self._in_flight))

    def _pre_hook(self, i: int):
        def hook(module, args):
            for j in range(i, min(len(self.blocks), i + self.prefetch + 1)):
                self._issue(j)
            event, copies = self._in_flight[i]
            if event is not None:
                stream = torch.cuda.current_stream(self.device)
                stream.wait_event(event)
                for c in copies:
                    c.record_stream(stream)
            for t, c in zip(self.tensors[i], copies):
                t.data = c

        return hook

    def _post_hook(self, i: int):
        def hook(module, args, output):
            for t, m in zip(self.tensors[i], self.masters[i]):
                t.data = m
            self._in_flight.pop(i, None)
            if self.cyclic and i == len(self.blocks) - 1:
                for j in range(min(len(self.blocks), self.prefetch)):
                    self._issue(j)

        return hook

    def release(self) -> None:
        """Drop prefetched copies (end of a stage)."""
        self._in_flight.clear()

    def remove(self) -> None:
        """Detach the hooks; the blocks are left on their CPU masters (move them where you want)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.release()
        for ts, ms in zip(self.tensors, self.masters):
            for t, m in zip(ts, ms):
                t.data = m


def plan_resident_blocks(block_bytes: Sequence[int], budget_bytes: float, *, prefetch: int = 1) -> int:
    """How many of the blocks can stay resident when ``budget_bytes`` is what is left for block weights
    (streamed blocks in flight need ``prefetch + 1`` block buffers of that budget)."""
    n = len(block_bytes)
    if n == 0:
        return 0
    largest = max(block_bytes)
    if sum(block_bytes) <= budget_bytes:
        return n
    room = budget_bytes - (prefetch + 1) * largest
    return max(0, min(n - 1, int(room // largest)))


OFFLOAD_MODES = ("auto", "none", "text_encoder", "model", "sequential")


def resolve_offload(mode: str, device: Device, *, sizes: dict[str, int], budget_bytes: Optional[float],
                    reserve_bytes: float) -> str:
    """Resolve ``"auto"``: CPU -> "none"; a GPU -> the lightest mode whose weights fit the budget.

    ``sizes``: bytes of "text_encoder", "transformer", "vae", "decoder" (and "text_encoder_block", the
    largest text-encoder block).  ``reserve_bytes``: activations and workspace kept free.
    """
    if mode not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {mode!r}")
    device = torch.device(device)
    if mode != "auto":
        return mode
    if device.type != "cuda":
        return "none"
    budget = budget_bytes if budget_bytes is not None else torch.cuda.get_device_properties(device).total_memory
    resident = sizes.get("transformer", 0) + sizes.get("vae", 0) + sizes.get("decoder", 0)
    te_stream = 2 * sizes.get("text_encoder_block", 0)
    if resident + te_stream + reserve_bytes <= budget:
        return "text_encoder"
    if max(sizes.get("transformer", 0), sizes.get("decoder", 0), sizes.get("vae", 0)) + reserve_bytes <= budget:
        return "model"
    return "sequential"


def stream_transformer_blocks(transformer: nn.Module, device: Device, *, prefetch: int = 1) -> BlockStreamer:
    """Everything but ``transformer.blocks`` on ``device``; the blocks stream from (pinned) CPU memory.

    The ComfyUI Wan loader's "blocks" offload: a whole denoising loop (``cyclic``) with the next block
    prefetched. Idempotent: a second call returns the streamer already installed.
    """
    existing = getattr(transformer, "_vist3a_block_streamer", None)
    if existing is not None:
        return existing
    device = torch.device(device)
    for name, child in transformer.named_children():
        if name != "blocks":
            child.to(device)
    for param in transformer.parameters(recurse=False):
        param.data = param.data.to(device)
    for name, buf in transformer.named_buffers(recurse=False):
        setattr(transformer, name, buf.to(device))
    set_execution_device(transformer, device)
    streamer = BlockStreamer(list(transformer.blocks), device, prefetch=prefetch, cyclic=True)
    object.__setattr__(transformer, "_vist3a_block_streamer", streamer)
    return streamer
