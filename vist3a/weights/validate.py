"""Check a state dict (or name -> shape metadata) against the keys a model expects, in one sentence."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..errors import CheckpointError
from .common import fmt_shape, shape_of


def _rest_count(n_missing: int, n_unexpected: int, n_wrong: int) -> str:
    parts = []
    if n_missing:
        parts.append(f"{n_missing} missing")
    if n_unexpected:
        parts.append(f"{n_unexpected} unexpected")
    if n_wrong:
        parts.append(f"{n_wrong} wrong-shaped")
    return f" (plus {', '.join(parts)} other keys)" if parts else ""


def validate_state_dict(
    sd: Mapping[str, Any],
    expected: Mapping[str, Any],
    *,
    source: str,
    allow_missing: Iterable[str] = (),
    ignore_prefixes: Iterable[str] = (),
    what: str = "the expected model",
) -> dict:
    """Check keys and shapes of ``sd`` against ``expected`` (name -> shape or tensor).

    Raises one :class:`CheckpointError` naming the first problem (missing, then unexpected, then
    wrong shape) and counting the rest, instead of letting ``load_state_dict`` print hundreds of
    lines. Keys of ``sd`` under ``ignore_prefixes`` are dropped; returns the remaining dict.
    """
    ignore = tuple(ignore_prefixes)
    allowed = set(allow_missing)
    missing = [k for k in expected if k not in sd and k not in allowed]
    unexpected = [k for k in sd if k not in expected and not (ignore and k.startswith(ignore))]
    wrong = [
        (k, shape_of(expected[k]), shape_of(sd[k]))
        for k in expected
        if k in sd and shape_of(expected[k]) != shape_of(sd[k])
    ]
    fix = "check that this file is the right checkpoint for this model or re-export it"
    head = f"Checkpoint '{source}' does not match {what}:"
    if missing:
        k = missing[0]
        prefix_hint = ""
        wrapped = next((s for s in sd if s.endswith("." + k)), None)
        if wrapped is not None:
            prefix_hint = f"; its keys carry an extra prefix '{wrapped[: -len(k)]}'"
        rest = _rest_count(len(missing) - 1, len(unexpected), len(wrong))
        raise CheckpointError(
            f"{head} key '{k}' (shape {fmt_shape(shape_of(expected[k]))}) is missing{rest}{prefix_hint}; {fix}.",
            path=source,
            key=k,
        )
    if unexpected:
        k = unexpected[0]
        rest = _rest_count(0, len(unexpected) - 1, len(wrong))
        raise CheckpointError(
            f"{head} key '{k}' (shape {fmt_shape(shape_of(sd[k]))}) is not part of it{rest}; {fix}.",
            path=source,
            key=k,
        )
    if wrong:
        k, exp, found = wrong[0]
        rest = _rest_count(0, 0, len(wrong) - 1)
        raise CheckpointError(
            f"{head} key '{k}' has shape {fmt_shape(found)} where {fmt_shape(exp)} was expected{rest}; {fix} "
            "(a different model size or configuration?)",
            path=source,
            key=k,
        )
    return {k: v for k, v in sd.items() if k in expected}
