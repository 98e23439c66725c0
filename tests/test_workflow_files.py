"""The shipped workflow files as a new user opens them: a Run Size dropdown at the top left, titled with both
choices, drives every widget a CPU user has to lower, and the note says so. (Runs: tests/test_comfy_server.py.)"""

from __future__ import annotations

import json

import pytest

from comfy_workflows import NATIVE_SPECS, SPECS, WORKFLOWS


def _run_size_links(ui: dict) -> dict[str, set[str]]:
    """{node type: widgets driven by the Run Size node} of a UI-format workflow."""
    by_id = {n["id"]: n for n in ui["nodes"]}
    run_size = {n["id"] for n in ui["nodes"] if n["type"] == "VIST3ARunSize"}
    driven: dict[str, set[str]] = {}
    for link_id, src, _slot, dst, dst_slot, _type in ui["links"]:
        if src in run_size:
            inp = by_id[dst]["inputs"][dst_slot]
            assert inp.get("widget", {}).get("name") == inp["name"] and inp["link"] == link_id, inp
            driven.setdefault(by_id[dst]["type"], set()).add(inp["name"])
    return driven


@pytest.mark.parametrize("workflow", sorted(SPECS) + sorted(NATIVE_SPECS))
def test_every_workflow_has_a_visible_run_size(workflow):
    """One dropdown sets the sizes a CPU user must lower: it sits top left, titled so, and drives the widgets."""
    ui = json.loads((WORKFLOWS / workflow).read_text())
    node = next(n for n in ui["nodes"] if n["type"] == "VIST3ARunSize")
    assert "quick try (CPU)" in node["title"] and node["widgets_values"] == ["official (GPU)"]
    assert node["pos"][0] == min(n["pos"][0] for n in ui["nodes"]) and node["pos"][1] == min(n["pos"][1] for n in ui["nodes"])
    driven = _run_size_links(ui)
    sampler = driven.get("VIST3ASample") or driven.get("KSampler") or driven.get("VIST3AImagesToSplats")
    assert sampler, driven
    if "VIST3ASample" in driven:
        assert driven["VIST3ASample"] == {"steps", "frames", "width", "height"}
    if "KSampler" in driven:
        assert driven["KSampler"] == {"steps"} and driven["EmptyHunyuanLatentVideo"] == {"width", "height", "length"}
    if "VIST3AImagesToSplats" in driven:
        assert driven["VIST3AImagesToSplats"] == {"max_views", "size"}
    note = next(n for n in ui["nodes"] if n["type"] == "MarkdownNote")["widgets_values"][0]
    assert "Run Size" in note and "quick try (CPU)" in note
