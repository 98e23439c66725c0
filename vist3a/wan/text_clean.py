"""Prompt cleaning exactly as diffusers' Wan pipeline does it with ``ftfy`` installed (the official setup).

The official requirements install ``ftfy`` and diffusers 0.33.1's ``basic_clean`` calls ``ftfy.fix_text``
unconditionally, so curly quotes become straight ones and mis-decoded text ("donâ€™t") is repaired
before tokenisation.  Without ftfy the tokens, and so the video, differ; we require it instead of
silently cleaning less.
"""

from __future__ import annotations

import html
import re

from ..errors import VIST3AError

__all__ = ["clean_prompt"]

_SPACES = re.compile(r"\s+")


def _fix_text(text: str) -> str:
    try:
        import ftfy
    except ImportError as exc:
        raise VIST3AError(
            "prompt cleaning needs the 'ftfy' package (the official VIST3A setup installs it); "
            "run `pip install ftfy` or `pip install -e .[wan]`"
        ) from exc
    return ftfy.fix_text(text)


def clean_prompt(text: str) -> str:
    """ftfy repair, HTML entities unescaped twice, whitespace runs collapsed to one space, trimmed."""
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a string, got {type(text).__name__}")
    text = html.unescape(html.unescape(_fix_text(text))).strip()
    return _SPACES.sub(" ", text).strip()
