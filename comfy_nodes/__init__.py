"""ComfyUI V3 nodes of VIST3A (category "VIST3A"). Thin: they parse inputs and call the `vist3a` core.

Imported only inside ComfyUI (they need `comfy`, `comfy_api` and `folder_paths`); the repository's
`__init__.py` registers them through `comfy_entrypoint()`.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .generate import NODES as _GENERATE
from .loaders import NODES as _LOADERS
from .mesh import NODES as _MESH
from .model_files import register_model_folder
from .run_size import NODES as _RUN_SIZE
from .splats import NODES as _SPLATS
from .templates import install_template_filter

NODES: list[type[io.ComfyNode]] = [*_LOADERS, *_GENERATE, *_SPLATS, *_MESH, *_RUN_SIZE]


class VIST3AExtension(ComfyExtension):
    async def on_load(self) -> None:
        register_model_folder()
        install_template_filter()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:  # ComfyUI 0.3.75 calls only this one
        register_model_folder()
        install_template_filter()
        return list(NODES)


__all__ = ["NODES", "VIST3AExtension"]
