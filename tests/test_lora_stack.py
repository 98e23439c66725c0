"""sync_lora_stack: the adapters on a shared tiny Wan transformer follow the wanted stack (add, change
strength, swap file, reorder, remove all) and the weights come back exactly when the stack is empty."""

from __future__ import annotations

import pytest
import torch

from vist3a.wan import load_vist3a_lora
from vist3a.wan.lora import applied_loras
from vist3a.wan.lora_stack import sync_lora_stack
from vist3a.wan.tiny import TINY_TRANSFORMER_CONFIG, save_tiny_vist3a_lora


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora_stack")
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    transformer = WanTransformer3DModel.from_config(TINY_TRANSFORMER_CONFIG).eval()  # only the transformer is needed
    a = load_vist3a_lora(save_tiny_vist3a_lora(root / "a", transformer, seed=1))
    b = load_vist3a_lora(save_tiny_vist3a_lora(root / "b", transformer, seed=2))
    return transformer, a, b


def _state(transformer):
    return {name: (s["lora"].path.name, s["strength"]) for name, s in applied_loras(transformer).items()}


def test_stack_follows_the_wanted_loras(setup):
    transformer, a, b = setup
    before = {k: v.clone() for k, v in transformer.state_dict().items()}
    sync_lora_stack(transformer, [(a, 1.0)])
    assert _state(transformer) == {"vist3a_0": ("a", 1.0)}
    kept = applied_loras(transformer)["vist3a_0"]["lora"]
    sync_lora_stack(transformer, [(a, 0.5)])  # only the strength changes: the same adapter stays
    assert _state(transformer) == {"vist3a_0": ("a", 0.5)} and applied_loras(transformer)["vist3a_0"]["lora"] is kept
    sync_lora_stack(transformer, [(b, 1.0), (a, 0.25)])  # another file in slot 0, the first moves to slot 1
    assert _state(transformer) == {"vist3a_0": ("b", 1.0), "vist3a_1": ("a", 0.25)}
    sync_lora_stack(transformer, [])
    assert _state(transformer) == {}
    after = transformer.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
