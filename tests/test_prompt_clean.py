"""Prompt cleaning identical to the official setup (diffusers' Wan cleaning with ftfy installed)."""

from __future__ import annotations

import builtins

import pytest
import torch

from vist3a.errors import VIST3AError
from vist3a.wan.text_clean import clean_prompt

NEEDS_CLEANING = [
    ("The Mona Lisa doesnâ€™t have eyebrows.", "The Mona Lisa doesn't have eyebrows."),  # mojibake
    ("“A red car” on a ‘wet’ road", "\"A red car\" on a 'wet' road"),  # curly quotes
    ("Fish &amp;amp; chips &lt;3", "Fish & chips <3"),  # HTML entities, escaped twice
    ("cafÃ© au lait", "café au lait"),
    ("  a\tcat \n\n on   a mat  ", "a cat on a mat"),
    ("ﬁne ligature", "fine ligature"),
]


@pytest.mark.parametrize("raw, expected", NEEDS_CLEANING)
def test_cleaning_repairs_text(raw, expected):
    assert clean_prompt(raw) == expected


@pytest.mark.parametrize("raw", [r for r, _ in NEEDS_CLEANING])
def test_cleaning_equals_diffusers_wan_cleaning_with_ftfy(raw):
    from diffusers.pipelines.wan import pipeline_wan

    assert pipeline_wan.is_ftfy_available()
    assert clean_prompt(raw) == pipeline_wan.prompt_clean(raw)


def test_missing_ftfy_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_ftfy(name, *args, **kwargs):
        if name == "ftfy":
            raise ImportError("No module named 'ftfy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ftfy)
    with pytest.raises(VIST3AError, match="pip install ftfy"):
        clean_prompt("a cat")


def test_encoder_sees_cleaned_text():
    from vist3a.wan.sampling import encode_prompt
    from vist3a.wan.tiny import build_tiny_wan

    tiny = build_tiny_wan(seed=0)
    messy, clean = "“A red car” &amp;amp; a caf\u00c3\u00a9   stop", "\"A red car\" & a caf\u00e9 stop"
    # Uncleaned, the tokenizer sees different text (so this test can fail)...
    assert tiny.tokenizer([messy]).input_ids != tiny.tokenizer([clean]).input_ids
    # ...cleaned, the encoder gets the same tokens.
    assert torch.equal(encode_prompt(tiny, [messy]), encode_prompt(tiny, [clean]))
    assert not torch.equal(encode_prompt(tiny, [clean]), encode_prompt(tiny, ["A red car and a cafe stop"]))


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_an_empty_prompt_is_said_with_what_still_applies(prompt):
    from vist3a.wan.prompts import empty_prompt_note

    note = empty_prompt_note(prompt)
    assert note.startswith("The prompt is empty") and "camera template" in note and "negative prompt" in note
    assert "\n" not in note
    assert "template is off" in empty_prompt_note(prompt, camera_template=False)


def test_a_real_prompt_says_nothing():
    from vist3a.wan.prompts import empty_prompt_note

    assert empty_prompt_note("a red car") is None
