"""Where each model lives during generation: the offload plan of :class:`vist3a.pipeline.VIST3APipeline`.

Why a module of its own: deciding which weights stay on the GPU, which move per stage and which
transformer blocks stream is a planning problem (sizes, budget, reserve) independent of running the
stages; the mechanics are :mod:`vist3a.offload`. Modes (see the pipeline docs): "none",
"text_encoder", "model", "sequential".
"""

from __future__ import annotations

from typing import Optional

import torch

from .offload import BlockStreamer, ModuleOffloader, module_bytes, plan_resident_blocks, spread_indices

STAGE_COMPONENT = {"text": "text_encoder", "denoise": "transformer", "vae": "vae", "splats": "decoder"}


def component_bytes(wan, decoder) -> dict:
    """Bytes of each component that placement moves ("text_encoder" without its token table, the largest
    "text_encoder_block", "transformer", "vae", "decoder")."""
    out = {}
    if wan.text_encoder is not None:
        emb = wan.text_encoder.get_input_embeddings().weight
        out["text_encoder"] = module_bytes(wan.text_encoder) - emb.numel() * emb.element_size()
        blocks = getattr(getattr(wan.text_encoder, "encoder", None), "block", None)
        if blocks is not None and len(blocks):
            out["text_encoder_block"] = max(module_bytes(b) for b in blocks)
    for name, module in (("transformer", wan.transformer), ("vae", wan.vae), ("decoder", decoder)):
        if module is not None:
            out[name] = module_bytes(module)
    return out


class Placement:
    """The offloaders and block streamers of one placement; ``remove()`` undoes it.

    ``stage_offloaders``: component -> ModuleOffloader, on the device only during its stage;
    ``fixed_offloaders``: always-onloaded parts of partly offloaded modules;
    ``streamers``: component -> BlockStreamer.
    """

    def __init__(self) -> None:
        self.stage_offloaders: dict[str, ModuleOffloader] = {}
        self.fixed_offloaders: list[ModuleOffloader] = []
        self.streamers: dict[str, BlockStreamer] = {}

    def apply(self, mode: str, wan, decoder, device: torch.device, budget: Optional[float], reserve: float) -> int:
        """Put the models where `mode` says; returns the number of streamed transformer blocks."""
        tr, te, vae, dec = wan.transformer, wan.text_encoder, wan.vae, decoder
        resident = {"none": [te, tr, vae, dec], "text_encoder": [tr, vae, dec]}.get(mode, [])
        for module in resident:
            if module is not None:
                module.to(device)
        if mode == "none":
            return 0
        if te is not None:
            # The token table (2 GB for UMT5-XXL) stays on the CPU: encode_prompt looks up there, only rows travel.
            tables = {id(m): m for m in (te.get_input_embeddings(),
                                         getattr(getattr(te, "encoder", None), "embed_tokens", None)) if m is not None}
            for table in tables.values():
                table.to("cpu")
            emb_weights = [m.weight for m in tables.values()]
            blocks = getattr(getattr(te, "encoder", None), "block", None)
            if blocks is not None and len(blocks):
                skip = [t for b in blocks for t in list(b.parameters()) + list(b.buffers())] + emb_weights
                fixed = ModuleOffloader(te, device, skip=skip)
                fixed.onload()
                self.fixed_offloaders.append(fixed)
                self.streamers["text_encoder"] = BlockStreamer(blocks, device, prefetch=1, cyclic=False)
            else:
                self.stage_offloaders["text_encoder"] = ModuleOffloader(te, device, skip=emb_weights)
        if mode == "text_encoder":
            return 0
        for name, module in (("vae", vae), ("decoder", dec)):
            if module is not None:
                self.stage_offloaders[name] = ModuleOffloader(module, device)
        if tr is None:
            return 0
        if mode == "model":
            self.stage_offloaders["transformer"] = ModuleOffloader(tr, device)
            return 0
        # sequential: the blocks that do not fit the budget stream, spread between resident ones
        blocks = list(tr.blocks)
        block_bytes = [module_bytes(b) for b in blocks]
        total = budget if budget is not None else (
            torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else float("inf"))
        rest = module_bytes(tr) - sum(block_bytes)
        keep = plan_resident_blocks(block_bytes, total - reserve - rest, prefetch=1)
        stream_idx = spread_indices(len(blocks), len(blocks) - keep)
        streamed = [blocks[i] for i in stream_idx]
        skip = [t for b in streamed for t in list(b.parameters()) + list(b.buffers())]
        self.stage_offloaders["transformer"] = ModuleOffloader(tr, device, skip=skip)
        if streamed:
            self.streamers["transformer"] = BlockStreamer(streamed, device, prefetch=1, cyclic=True)
        return len(streamed)

    def remove(self) -> None:
        """Detach every hook; the weights are left on their CPU masters."""
        for streamer in self.streamers.values():
            streamer.remove()
        for off in list(self.stage_offloaders.values()) + self.fixed_offloaders:
            off.remove()
        self.streamers.clear()
        self.stage_offloaders.clear()
        self.fixed_offloaders.clear()
