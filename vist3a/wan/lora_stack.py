"""A stack of VIST3A LoRAs kept in line on a shared Wan transformer.

Front ends (the ComfyUI nodes) share one loaded transformer between graphs that want different LoRAs
(none, one, two at other strengths); before each sampling run the transformer's PEFT adapters are
brought to the wanted stack with as little work as possible: adapters whose file changed are removed,
new ones applied, and only the strength changed where that is all that differs.
"""

from __future__ import annotations

from typing import Sequence

from .lora import WanLoRA, applied_loras, apply_vist3a_lora, remove_vist3a_lora, set_lora_strength

__all__ = ["adapter_name", "sync_lora_stack"]


def adapter_name(index: int) -> str:
    """The PEFT adapter name of the index-th LoRA of a stack."""
    return f"vist3a_{index}"


def sync_lora_stack(transformer, stack: Sequence[tuple[WanLoRA, float]]) -> None:
    """Make the VIST3A adapters on ``transformer`` exactly ``stack`` (``(lora, strength)`` in order)."""
    wanted = {adapter_name(i): (lora, float(s)) for i, (lora, s) in enumerate(stack)}
    for name, state in list(applied_loras(transformer).items()):
        if name not in wanted or str(state["lora"].path) != str(wanted[name][0].path):
            remove_vist3a_lora(transformer, name)
    for name, (lora, strength) in wanted.items():
        state = applied_loras(transformer).get(name)
        if state is None:
            apply_vist3a_lora(transformer, lora, strength, adapter_name=name)
        elif abs(state["strength"] - strength) > 1e-9:
            set_lora_strength(transformer, strength, adapter_name=name)
