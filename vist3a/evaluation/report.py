"""Result files for the evaluations: JSON, a Markdown table and a small bar chart (Pillow only)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_save_bytes, atomic_write


def write_json(path: Path, data) -> Path:
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=2)
    return path


def fmt(v, digits: int = 4) -> str:
    return "n/a" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    def cell(v) -> str:
        return fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_text(path: Path, text: str) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return path


def bar_chart(labels: Sequence[str], values: Sequence[float], path: Path, title: str, *, width: int = 720) -> Path:
    """Horizontal bars, one per label, value printed at the bar's end; written atomically as PNG."""
    font = ImageFont.load_default()
    row, left, top = 18, min(260, 12 + 7 * max((len(s) for s in labels), default=4)), 28
    height = top + row * max(1, len(labels)) + 10
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((8, 6), title, fill="black", font=font)
    vals = [v for v in values if v is not None]
    hi = max([abs(v) for v in vals], default=1.0) or 1.0
    span = width - left - 70
    for i, (label, v) in enumerate(zip(labels, values)):
        y = top + i * row
        d.text((6, y + 2), label[:36], fill="black", font=font)
        if v is None:
            d.text((left, y + 2), "n/a", fill="gray", font=font)
            continue
        length = int(span * abs(v) / hi)
        d.rectangle([left, y + 2, left + max(1, length), y + row - 3], fill=(70, 110, 190))
        d.text((left + length + 4, y + 2), f"{v:.4g}", fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_save_bytes(path, buf.getvalue())
