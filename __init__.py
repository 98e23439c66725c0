"""ComfyUI entry point of VIST3A (this folder may have any name under ComfyUI/custom_nodes/).

ComfyUI imports this folder as a package named after its path, so the core library is made
importable as `vist3a` by putting this folder on sys.path once; the nodes live in `comfy_nodes/`
and are registered with the V3 API through `comfy_entrypoint()`. The viewer is served from web/.
"""

import logging
import os
import sys

_ROOT = os.path.dirname(os.path.abspath(__file__))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import vist3a  # noqa: E402  (the core, never imports ComfyUI)

if os.path.dirname(os.path.dirname(os.path.abspath(vist3a.__file__))) != _ROOT:
    logging.getLogger("vist3a").warning(
        "VIST3A: 'vist3a' is imported from %s, not from this custom node folder %s; the nodes may not match it",
        os.path.dirname(vist3a.__file__), _ROOT)

WEB_DIRECTORY = "./web"

try:  # inside ComfyUI; elsewhere (pytest collecting this folder, plain python) there is nothing to register
    import comfy_api.latest  # noqa: F401
except ImportError:
    VIST3AExtension = None
else:
    from .comfy_nodes import VIST3AExtension


async def comfy_entrypoint():
    if VIST3AExtension is None:
        raise RuntimeError("VIST3A's nodes need ComfyUI (comfy_api); install this folder into ComfyUI/custom_nodes/")
    return VIST3AExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
