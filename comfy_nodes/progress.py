"""Progress bars, text on a running node, and Cancel: ComfyUI's interrupt checked between steps."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.utils


def should_cancel() -> bool:
    return mm.processing_interrupted()


def check_cancel() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel."""
    mm.throw_exception_if_processing_interrupted()


class Progress:
    """`comfy.utils.ProgressBar` over a node's stages: progress(stage, step, total) from vist3a."""

    def __init__(self, total: int):
        self.total = max(1, int(total))
        self.bar = comfy.utils.ProgressBar(self.total)
        self.value = 0

    def set(self, value: int) -> None:
        self.value = min(self.total, max(0, int(value)))
        self.bar.update_absolute(self.value, self.total)

    def step(self, n: int = 1) -> None:
        self.set(self.value + n)


def node_text(text: str, node_id) -> None:
    """Show a line of text on a node while it runs (ComfyUI's progress text); silently skipped where unsupported."""
    if node_id is None:
        return
    try:
        from server import PromptServer

        PromptServer.instance.send_progress_text(text, str(node_id))
    except Exception:  # an older ComfyUI without progress text, or no server (scripts): the console line is enough
        pass


def interrupt_on_cancel(exc: BaseException) -> None:
    """vist3a raised Cancelled because should_cancel() returned True: hand ComfyUI its own interrupt."""
    mm.throw_exception_if_processing_interrupted()  # clears the flag and raises
    raise mm.InterruptProcessingException() from exc
