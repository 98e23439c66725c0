"""Camera-motion prompt augmentation for the reward rollouts of align.py.

The official alignment wraps each reward prompt, in backticks, in a randomly chosen camera-motion
sentence (``augment_camera_prompt`` in the release's ``train_vdm.py``), so the LoRA learns
3D-consistent videos for many trajectories. We ship none of those sentences: the templates are read
from a file the user points ``align.reward.camera_prompts`` at, either

* the official ``train_vdm.py`` itself: the list literal ``possible_prompts`` inside
  ``augment_camera_prompt`` is parsed (never executed); its f-strings' ``{base}`` becomes the
  placeholder, and its plain ``"base"`` entry becomes :data:`LITERAL_BASE`, or
* a UTF-8 text file with one template per line containing ``{prompt}`` (a line that is just
  ``{prompt}`` keeps the prompt unchanged; empty lines and ``#`` comments are skipped).

Two styles of filling them in (``align.reward.camera_prompt_style``):

* ``official`` (default): the text the released LoRA was aligned with. The official loop hands
  ``augment_camera_prompt`` the prompt loader's batch, a one-element *list* (train_vdm.py:513, 528), so the
  f-string writes the list: ``... scene: `['a cozy cabin']`. ...`` (brackets and Python's quotes, ``"`` when
  the prompt holds a ``'``, backslashes doubled); and its ``"base"`` entry is the literal word ``base``, the
  whole prompt text for 1 rollout in 82.
* ``clean``: what the code evidently meant: ``... scene: `a cozy cabin`. ...``, and the prompt unchanged for
  the ``"base"`` entry.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path
from typing import Sequence

from .config import ConfigError

__all__ = ["load_camera_templates", "augment_camera_prompt", "BARE", "LITERAL_BASE", "STYLES"]

BARE = "{p}"  # the template that leaves the prompt unchanged
LITERAL_BASE = "\x00base"  # the official list's plain "base" entry (the word itself officially, unchanged prompt in clean style)
STYLES = ("official", "clean")


def _from_official_source(path: Path, text: str) -> tuple[str, ...]:
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise ConfigError(f"camera-prompt file '{path}' is not valid Python ({exc.msg}, line {exc.lineno})") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "augment_camera_prompt":
            for sub in ast.walk(node):
                if (isinstance(sub, ast.Assign) and isinstance(sub.value, ast.List)
                        and any(isinstance(t, ast.Name) and t.id == "possible_prompts" for t in sub.targets)):
                    return tuple(_template(e, path) for e in sub.value.elts)
    raise ConfigError(f"camera-prompt file '{path}' has no `possible_prompts = [...]` list inside "
                      "`def augment_camera_prompt`; point align.reward.camera_prompts at the official train_vdm.py "
                      "or at a text file with one template per line containing {prompt}")


def _template(node: ast.expr, path: Path) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return LITERAL_BASE if node.value == "base" else node.value.replace("{", "{{").replace("}", "}}")
    if isinstance(node, ast.JoinedStr):
        out = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                out.append(str(part.value).replace("{", "{{").replace("}", "}}"))
            elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name) and part.value.id == "base":
                out.append("{p}")
            else:
                raise ConfigError(f"camera-prompt file '{path}' line {node.lineno}: only {{base}} may be interpolated")
        return "".join(out)
    raise ConfigError(f"camera-prompt file '{path}' line {getattr(node, 'lineno', '?')}: expected a string template")


def _from_text(path: Path, text: str) -> tuple[str, ...]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{prompt}" not in line:
            raise ConfigError(f"camera-prompt file '{path}' line {n} has no {{prompt}} placeholder: {line[:80]!r}")
        out.append(line.replace("{", "{{").replace("}", "}}").replace("{{prompt}}", "{p}"))
    return tuple(out)


def load_camera_templates(path: str | Path) -> tuple[str, ...]:
    """Templates (``{p}`` = the prompt in backticks; :data:`BARE` = prompt unchanged; :data:`LITERAL_BASE` = the
    official "base" entry) from ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"camera-prompt file '{path}' does not exist (align.reward.camera_prompts)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"camera-prompt file '{path}' cannot be read as UTF-8 text ({exc})") from None
    templates = _from_official_source(path, text) if path.suffix == ".py" else _from_text(path, text)
    if not templates:
        raise ConfigError(f"camera-prompt file '{path}' holds no templates")
    return templates


def augment_camera_prompt(prompt: str, rng: random.Random, templates: Sequence[str], style: str = "official") -> str:
    """One template drawn uniformly (one ``rng.choice``, as the official ``random.choice``), filled in ``style``."""
    if style not in STYLES:
        raise ValueError(f"camera prompt style must be one of {', '.join(STYLES)}, got {style!r}")
    template = rng.choice(list(templates))
    if template == LITERAL_BASE:
        return "base" if style == "official" else prompt
    if template == BARE:
        return prompt
    inserted = f"`{[prompt]}`" if style == "official" else f"`{prompt}`"  # official: str() of a one-element list
    return template.format(p=inserted)
