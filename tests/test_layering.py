"""The import layers of docs/architecture.md, checked on the source (AST only, nothing is imported).

* the core (``vist3a``) never imports ComfyUI, the node pack, the training package or DeepSpeed, at any
  level (not even inside a function);
* the node pack and the training package never import each other;
* imports inside ``vist3a`` form no cycle (function-level ones included), and module-level ones only
  point at the same or a lower layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "vist3a": {"comfy", "comfy_api", "comfy_execution", "comfy_extras", "folder_paths", "server", "nodes",
               "comfy_nodes", "vist3a_train", "deepspeed"},
    "comfy_nodes": {"vist3a_train", "deepspeed"},
    "vist3a_train": {"comfy", "comfy_api", "folder_paths", "comfy_nodes"},
}

# Lower numbers are lower layers; a module may import its own layer or lower ones at module level.
# A package (e.g. vist3a.weights) counts as one unit; its submodules may import each other freely.
LAYERS = {
    0: ["vist3a", "vist3a.errors", "vist3a.atomic", "vist3a.sync", "vist3a.offload", "vist3a.read_roots",
        "vist3a.cpu_estimate"],
    1: ["vist3a.weights", "vist3a.models", "vist3a.gaussians", "vist3a.ply_binary", "vist3a.splat_formats",
        "vist3a.render", "vist3a.view_prep"],
    2: ["vist3a.wan", "vist3a.decoders", "vist3a.parity", "vist3a.tiny", "vist3a.functional", "vist3a.placement",
        "vist3a.outputs", "vist3a.limits", "vist3a.convert", "vist3a.splat_contract", "vist3a.scene_view",
        "vist3a.batch_media"],
    3: ["vist3a.pipeline", "vist3a.info", "vist3a.tiny_release", "vist3a.checkpoints"],
    4: ["vist3a.demo", "vist3a.cli", "vist3a.__main__", "vist3a.batch", "vist3a.evaluation"],
}


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((REPO / package).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_package(name: str, path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(name: str, path: Path, *, module_level: bool) -> list[str]:
    """Absolute names of what `name` imports (for `from X import y`, X.y when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if _is_package(name, path) else name.rpartition(".")[0]
    nodes = tree.body if module_level else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append(mod)
            found += [f"{mod}.{a.name}" for a in node.names]
    return found


def _unit(name: str) -> str | None:
    for units in LAYERS.values():
        for unit in sorted(units, key=len, reverse=True):
            if name == unit or (unit != "vist3a" and name.startswith(unit + ".")):
                return unit
    return None


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One cycle of `graph` (node -> imported nodes) as a path, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return None


def _layer(unit: str) -> int:
    return next(level for level, units in LAYERS.items() if unit in units)


def test_forbidden_imports_at_any_level():
    bad = []
    for package, forbidden in FORBIDDEN.items():
        for name, path in _modules(package).items():
            for imported in _imports(name, path, module_level=False):
                if imported.split(".")[0] in forbidden:
                    bad.append(f"{path.relative_to(REPO)} imports {imported}")
    assert not bad, "layering broken:\n" + "\n".join(sorted(set(bad)))


def test_every_core_module_has_a_layer():
    missing = [name for name in _modules("vist3a") if _unit(name) is None]
    assert not missing, f"add these modules to LAYERS here and to docs/architecture.md: {missing}"


def test_core_imports_point_down_and_have_no_cycles():
    modules = _modules("vist3a")
    graph = {name: sorted({m for m in _imports(name, path, module_level=True) if m in modules and m != name})
             for name, path in modules.items()}
    upward = []
    for name, targets in graph.items():
        for target in targets:
            src, dst = _unit(name), _unit(target)
            if src != dst and _layer(dst) > _layer(src):
                upward.append(f"{name} (layer {_layer(src)}) imports {target} (layer {_layer(dst)})")
    assert not upward, "imports must point to the same or a lower layer:\n" + "\n".join(upward)

    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
    # ... and none hidden inside functions either (the CLI imports its subcommands lazily, never the reverse)
    everything = {name: sorted({m for m in _imports(name, path, module_level=False) if m in modules and m != name})
                  for name, path in modules.items()}
    cycle = _find_cycle(everything)
    assert cycle is None, "import cycle through a function-level import: " + " -> ".join(cycle or [])


def test_the_checker_sees_cycles_and_upward_imports(tmp_path):
    """The checks above can fail: a fake package with a cycle is caught by the same helpers."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("from . import a\n\ndef f():\n    import comfy\n")
    a = _imports("pkg.a", pkg / "a.py", module_level=True)
    b_top = _imports("pkg.b", pkg / "b.py", module_level=True)
    b_all = _imports("pkg.b", pkg / "b.py", module_level=False)
    assert "pkg.b" in a and "pkg.a" in b_top and "comfy" not in b_top and "comfy" in b_all
    assert _find_cycle({"pkg.a": ["pkg.b"], "pkg.b": ["pkg.a"]}) == ["pkg.a", "pkg.b", "pkg.a"]
    assert _find_cycle({"pkg.a": ["pkg.b"], "pkg.b": []}) is None
