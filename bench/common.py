"""Shared by the benchmarks: the command line as run, results written atomically as JSON + markdown."""

from __future__ import annotations

import datetime as _dt
import json
import math
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from anywhere, without installing
    sys.path.insert(0, str(ROOT))


def command_line() -> str:
    """The command as typed (relative to the repository root), for the results file."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    return " ".join(["python", shlex.quote(str(script)), *map(shlex.quote, sys.argv[1:])])


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _clean(obj):
    """JSON-safe: NaN/inf -> None, tuples -> lists, tensors/numbers -> floats."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return _clean(obj.item())
    return obj


def write_json(path: str | Path, result: dict) -> Path:
    """`path` written to a temporary file and renamed (NaN/inf as null)."""
    from vist3a.atomic import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(_clean(result), f, indent=2)
        f.write("\n")
    return path


def write_results(path: str | Path, result: dict, markdown: str) -> tuple[Path, Path]:
    """`path` (.json) and the same name with .md, each written to a temporary file and renamed."""
    from vist3a.atomic import atomic_write

    path = write_json(path, result)
    md_path = path.with_suffix(".md")
    with atomic_write(md_path, "w", encoding="utf-8") as f:
        f.write(markdown)
    return path, md_path


def fmt(value, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}{unit}"
