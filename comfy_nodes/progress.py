"""Progress bars, text on a running node, and Cancel: ComfyUI's interrupt checked between steps."""

from __future__ import annotations

import time

import comfy.model_management as mm
import comfy.utils

from vist3a.cpu_estimate import progress_line


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


def running_node_id(node_cls):
    """The id of the node being executed (a V3 node's hidden ``unique_id``), or None outside ComfyUI's executor."""
    hidden = getattr(node_cls, "hidden", None)
    return getattr(hidden, "unique_id", None) if hidden is not None else None


def node_text(text: str, node_id) -> None:
    """Show text on a node while it runs (ComfyUI's progress text, sent to the client that queued the prompt);
    silently skipped where unsupported."""
    if node_id is None:
        return
    try:
        from server import PromptServer

        server = PromptServer.instance
        server.send_progress_text(text, str(node_id), getattr(server, "client_id", None))
    except Exception:  # an older ComfyUI without progress text, or no server (scripts): the console line is enough
        pass


class NodeText:
    """The text a running node shows: a fixed first line (the estimate and advice) and a status line that
    follows the work, sent at most every ``every_s`` seconds (the last update of a stage is always sent)."""

    def __init__(self, node_id, every_s: float = 1.0):
        self.node_id = node_id
        self.every_s = every_s
        self.header = ""
        self._sent_at = 0.0

    def say(self, status: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._sent_at < self.every_s:
            return
        self._sent_at = now
        node_text("\n".join(part for part in (self.header, status) if part), self.node_id)


class StageTimer:
    """progress(done, total) for one stage of a node: moves the bar inside [start, end] of the node's total and
    shows 'stage: step 3 of 13, 20 s so far, about 1 min left' on the node."""

    def __init__(self, bar: Progress, text: NodeText, label: str, start: int, end: int, unit: str = "step"):
        self.bar, self.text, self.label, self.start, self.end, self.unit = bar, text, label, start, end, unit
        self.t0 = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        self.bar.set(self.start + (self.end - self.start) * min(done, total) // max(1, total))
        line = progress_line(done, total, time.monotonic() - self.t0, self.unit)
        self.text.say(f"{self.label}: {line}", force=done >= total)


def interrupt_on_cancel(exc: BaseException) -> None:
    """vist3a raised Cancelled because should_cancel() returned True: hand ComfyUI its own interrupt."""
    mm.throw_exception_if_processing_interrupted()  # clears the flag and raises
    raise mm.InterruptProcessingException() from exc
