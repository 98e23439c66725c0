"""Cancel and progress inside one long forward pass, through hooks on a model's repeated blocks.

Text encoding, the VAE decode and the stitched decode are each one call into a model, minutes long on a
CPU: nothing between its start and its end could ask whether the user pressed Cancel or move a progress
bar (a Cancel during the decode of a shipped workflow took minutes). Every model here is built from
repeated blocks held in ``nn.ModuleList``s or ``nn.Sequential``s (UMT5 layers, VAE up-sampling stages, DINO and aggregator
blocks, head stages), so a forward pre-hook on each block asks ``should_cancel()`` before the block runs
(raising :class:`~vist3a.errors.Cancelled`) and counts the blocks that start for ``progress(done, total)``.
The hooks only read a flag and count: no tensor is touched, so no device sync is added.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator, Optional

from torch import nn

from .errors import Cancelled

__all__ = ["repeated_blocks", "BlockCount", "block_checks"]

CancelFn = Callable[[], bool]
ProgressFn = Callable[[int, int], None]


def repeated_blocks(module: nn.Module) -> list[nn.Module]:
    """The elements of the outermost ``nn.ModuleList``s and ``nn.Sequential``s inside ``module`` (module order), or
    ``module`` itself when it holds none: the units between which a long forward pass can stop."""
    containers = (nn.ModuleList, nn.Sequential)
    if isinstance(module, containers):
        return list(module) or [module]
    found: list[nn.Module] = []

    def walk(m: nn.Module) -> None:
        for child in m.children():
            if isinstance(child, containers):
                found.extend(child)
            else:
                walk(child)

    walk(module)
    return found or [module]


class BlockCount:
    """How many counted blocks have started (``started``) out of ``total`` expected."""

    def __init__(self, total: int):
        self.started = 0
        self.total = max(1, int(total))


@contextlib.contextmanager
def block_checks(module: nn.Module, should_cancel: Optional[CancelFn] = None, progress: Optional[ProgressFn] = None, *,
                 counted: Optional[Iterable[nn.Module]] = None, expected: Optional[int] = None,
                 what: str = "the model") -> Iterator[BlockCount]:
    """While the block runs, ask ``should_cancel()`` before every repeated block of ``module``, and report
    ``progress(done, total)`` with the ``counted`` modules (default: the repeated blocks) finished so far: each
    time one starts (the ones before it are done) and once at the end.

    ``expected`` is how many counted starts one pass makes (default: one per counted module); a module that
    runs more often than expected raises the total instead of the bar passing 100%. Hooks are removed on exit.
    """
    if should_cancel is None and progress is None:
        yield BlockCount(1)
        return
    blocks = repeated_blocks(module)
    counted = blocks if counted is None else list(counted)
    count = BlockCount(len(counted) if expected is None else expected)
    counted_ids = {id(m) for m in counted}

    def check(mod, args):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"{what} cancelled at step {max(1, count.started)} of {count.total}")
        if id(mod) in counted_ids:
            done = count.started
            count.started += 1
            count.total = max(count.total, count.started)
            if progress is not None:
                progress(done, count.total)

    handles = [m.register_forward_pre_hook(check) for m in {id(m): m for m in (*blocks, *counted)}.values()]
    try:
        yield count
    finally:
        for h in handles:
            h.remove()
    if progress is not None:
        progress(count.started, count.total)
