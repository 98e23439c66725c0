"""Errors a node shows: one sentence that says what to do, the original exception kept as its cause."""

from __future__ import annotations

import functools

import torch

import comfy.model_management as mm

from vist3a.errors import VIST3AError
from vist3a.finite import is_finite_number

from .progress import interrupt_on_cancel


class NodeError(RuntimeError):
    """An error shown in the UI as one sentence; the original exception is kept as __cause__.

    ComfyUI heads the error card with the exception's ``module.qualname``; a custom node's modules are named
    after its folder path (``/…/custom_nodes/ComfyUI-VIST3A.comfy_nodes.errors``), so the card said little
    but that path. Naming the module after the pack makes the headline ``VIST3A.NodeError``."""

    __module__ = "VIST3A"


def _sentence(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0].strip()
    return first if first.endswith((".", "!", "?")) else first + "."


def _refuse_non_finite(what: str, inputs: dict) -> None:
    """ComfyUI checks a FLOAT input against its min/max only, which NaN passes (and the API's JSON may carry NaN or
    Infinity): refuse such a number before the node runs, naming the input."""
    for name, value in inputs.items():
        if isinstance(value, float) and not is_finite_number(value):
            raise NodeError(f"{what}: the input '{name}' is {value}; enter a finite number (NaN and infinity are refused).")


def friendly(what: str):
    """Decorator for `execute`: user errors keep their own sentence, anything unexpected becomes
    '<what> failed: <reason>.' (ComfyUI still logs the traceback); Cancel passes through."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            _refuse_non_finite(what, kwargs)
            try:
                return fn(*args, **kwargs)
            except mm.InterruptProcessingException:
                raise
            except VIST3AError as exc:
                from vist3a.wan import Cancelled

                if isinstance(exc, Cancelled):
                    interrupt_on_cancel(exc)
                raise NodeError(_sentence(exc)) from exc
            except NodeError:
                raise
            except torch.cuda.OutOfMemoryError as exc:
                raise NodeError(
                    f"{what} ran out of GPU memory; lower the resolution/frames, pick offload 'comfy' or 'blocks', "
                    "or use fp8/bf16 weights.") from exc
            except (ValueError, FileNotFoundError, TypeError, RuntimeError, OSError) as exc:
                raise NodeError(f"{what} failed: {_sentence(exc)}") from exc

        return wrapper

    return deco
