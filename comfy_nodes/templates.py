"""The template browser lists only the shipped workflows this ComfyUI can run.

ComfyUI lists every ``workflows/*.json`` of a custom node pack as a template (``GET /workflow_templates``,
also under ``/api/``) whatever nodes it needs, and no field of the list can say otherwise; so the workflow
made for ComfyUI 0.28's splat nodes was listed on 0.3.75 and opened there with "custom nodes you haven't
installed". A middleware takes out of that list, for this pack only, the workflows that use a node type
this server does not have. Every frontend reads the list from the server, so all of them follow.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from aiohttp import web

PACK_DIR = Path(__file__).resolve().parents[1]
WORKFLOWS = PACK_DIR / "workflows"
TEMPLATE_ROUTES = ("/workflow_templates", "/api/workflow_templates")
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}  # drawn by the frontend, not server nodes


def missing_node_types(workflow: dict, known) -> set[str]:
    """Node types of a UI-format workflow that the server does not have (frontend-only notes aside)."""
    types = {n.get("type") for n in workflow.get("nodes", [])}
    return {t for t in types if t and t not in FRONTEND_ONLY and t not in known}


def runnable_templates(names: list[str], known) -> list[str]:
    """The names among ``names`` (workflows/<name>.json) whose every node type is in ``known``; a name
    without a readable file stays (it is not ours to judge)."""
    keep = []
    for name in names:
        try:
            workflow = json.loads((WORKFLOWS / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            keep.append(name)
            continue
        if not missing_node_types(workflow, known):
            keep.append(name)
    return keep


def _is_this_pack(key: str) -> bool:
    """Whether the template list's key (a folder name in custom_nodes/) is this checkout."""
    import folder_paths

    return any(Path(folder, key).resolve() == PACK_DIR for folder in folder_paths.get_folder_paths("custom_nodes"))


@web.middleware
async def hide_unrunnable_templates(request: web.Request, handler):
    response = await handler(request)
    if request.path not in TEMPLATE_ROUTES or response.status != 200 or not isinstance(response, web.Response):
        return response
    try:
        listing = json.loads(response.body)
    except (TypeError, ValueError):
        return response
    import nodes

    for key, names in list(listing.items()):
        if isinstance(names, list) and _is_this_pack(key):
            listing[key] = runnable_templates(names, nodes.NODE_CLASS_MAPPINGS)
    return web.json_response(listing)


def install_template_filter() -> bool:
    """Add the middleware to ComfyUI's server (before it starts: the nodes load first); False where it cannot."""
    try:
        from server import PromptServer

        app = PromptServer.instance.app
        if hide_unrunnable_templates not in app.middlewares:
            app.middlewares.append(hide_unrunnable_templates)
        return True
    except (ImportError, AttributeError, RuntimeError) as exc:  # no server (tests), or it started already
        logging.getLogger("vist3a").warning("VIST3A: templates that need other nodes stay listed (%s)", exc)
        return False


__all__ = ["missing_node_types", "runnable_templates", "hide_unrunnable_templates", "install_template_filter", "TEMPLATE_ROUTES"]
