"""One check for every number a user gives: NaN and infinity are refused where they enter.

NaN passes every range check written as a comparison (``nan < 0`` and ``nan > 30`` are both false), so a
``--cfg nan`` or a node input of NaN (ComfyUI passes floats through; JSON allows ``NaN``) would otherwise run
a whole generation and write a file full of NaNs. The CLI's argument types, the node wrapper, the training
config reader and the settings dataclasses of the Python API all call this module, so the message is the
same everywhere: one line naming the setting, the value and what is expected.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any, Iterable

from .errors import NonFiniteError

__all__ = ["NonFiniteError", "is_finite_number", "check_finite", "check_finite_values", "check_finite_fields",
           "finite_float"]


def is_finite_number(value: Any) -> bool:
    """False for float NaN/inf (and numpy/torch scalars that are); True for any other value."""
    if isinstance(value, bool) or not hasattr(value, "__float__"):
        return True
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        return True  # not a scalar number (e.g. a tensor with several elements): not this check's business


def _message(name: str, value: Any, where: str | None) -> str:
    place = f"{where}: " if where else ""
    return f"{place}{name} is {value}; it must be a finite number (not NaN or infinity), e.g. its default"


def check_finite(value: Any, name: str, *, where: str | None = None) -> Any:
    """Return ``value`` unchanged, or raise :class:`NonFiniteError` naming ``name`` when it is NaN/inf."""
    if not is_finite_number(value):
        raise NonFiniteError(_message(name, value, where))
    return value


def check_finite_values(values: Iterable[tuple[str, Any]], *, where: str | None = None) -> None:
    """:func:`check_finite` over ``(name, value)`` pairs; lists and tuples are checked item by item."""
    for name, value in values:
        if isinstance(value, (list, tuple)):
            check_finite_values(((f"{name}[{i}]", v) for i, v in enumerate(value)), where=where)
        elif isinstance(value, dict):
            check_finite_values(((f"{name}.{k}", v) for k, v in value.items()), where=where)
        else:
            check_finite(value, name, where=where)


def check_finite_fields(obj: Any, *, where: str | None = None, prefix: str = "") -> None:
    """Every number in a dataclass (nested dataclasses, lists, tuples and dicts included) must be finite."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = prefix + f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_finite_fields(value, where=where, prefix=name + ".")
        else:
            check_finite_values([(name, value)], where=where)


def finite_float(text: str) -> float:
    """argparse ``type=``: a float that is not NaN or infinite (argparse prints the one-line usage error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number (NaN and infinity are refused)")
    return value
