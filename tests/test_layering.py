"""The import layers of docs/architecture.md, checked on the source (AST only, nothing is imported).

* the core (``vist3a``) never imports ComfyUI, the node pack, the training package, DeepSpeed or the
  developer folders (``bench``, ``tools``, ``tests``), at any level (not even inside a function);
* the node pack, the training package and the ComfyUI entry (the root ``__init__.py``) never import
  each other's forbidden neighbours or the developer folders;
* imports inside ``vist3a`` form no cycle (function-level ones included), and the ones that run at import
  time (module level, including inside a module-level ``try``/``if``/``with`` or a class body) only point
  at the same or a lower layer;
* no test module imports another: tests share code through ``tests/helpers.py`` and the other helper modules.

Every rule has a self-test below on a fake tree, so a gap in the checker shows up as a failing test.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

COMFYUI = {"comfy", "comfy_api", "comfy_execution", "comfy_extras", "folder_paths", "server", "nodes"}
DEVELOPER = {"bench", "tools", "tests", "conftest"}
ROOT_ENTRY = "<root __init__>"  # ComfyUI imports the repository folder itself as a package

FORBIDDEN = {
    "vist3a": COMFYUI | DEVELOPER | {"comfy_nodes", "vist3a_train", "deepspeed"},
    "comfy_nodes": DEVELOPER | {"vist3a_train", "deepspeed"},
    "vist3a_train": COMFYUI | DEVELOPER | {"comfy_nodes"},
    ROOT_ENTRY: DEVELOPER | {"vist3a_train", "deepspeed"},
}

# Lower numbers are lower layers; a module may import its own layer or lower ones at module level.
# A package (e.g. vist3a.weights) counts as one unit; its submodules may import each other freely.
LAYERS = {
    0: ["vist3a", "vist3a.errors", "vist3a.atomic", "vist3a.sync", "vist3a.offload", "vist3a.read_roots",
        "vist3a.cpu_estimate", "vist3a.finite", "vist3a.block_hooks", "vist3a.run_sizes"],
    1: ["vist3a.weights", "vist3a.models", "vist3a.gaussians", "vist3a.formats", "vist3a.render", "vist3a.view_prep"],
    2: ["vist3a.wan", "vist3a.decoders", "vist3a.parity", "vist3a.tiny", "vist3a.functional", "vist3a.placement",
        "vist3a.outputs", "vist3a.limits", "vist3a.splat_contract", "vist3a.scene_view", "vist3a.batch_media",
        "vist3a.mesh", "vist3a.share_html"],
    3: ["vist3a.pipeline", "vist3a.info", "vist3a.tiny_release", "vist3a.checkpoints"],
    4: ["vist3a.demo", "vist3a.cli", "vist3a.__main__", "vist3a.batch", "vist3a.evaluation"],
}


# Imports inside functions are only for dependencies that are heavy to import or optional (docs/architecture.md),
# and for the CLI's subcommands (so `--help` and bad arguments answer without loading torch).
HEAVY_OR_OPTIONAL = {"diffusers", "transformers", "accelerate", "peft", "sentencepiece", "tokenizers", "ftfy", "gsplat",
                     "imageio", "torchvision", "open_clip", "pyiqa", "qwen_vl_utils", "isal", "lpips", "matplotlib", "skimage",
                     "scipy", "trimesh"}
LAZY_FRONT_ENDS = {"vist3a.cli", "vist3a.__main__", "vist3a.evaluation.cli"}


def _modules(package: str, root: Path = REPO) -> dict[str, Path]:
    """Dotted module name -> file for every .py file of ``package`` (the root entry: the top __init__.py)."""
    if package == ROOT_ENTRY:
        return {ROOT_ENTRY: root / "__init__.py"}
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _runtime_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements that run when the module is imported: module level, inside module-level compound
    statements (try/except/else/finally, if/else, with, for, while, match) and class bodies, but not
    inside functions and not under ``if TYPE_CHECKING:``."""
    out = []
    for node in body:
        out.append(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out += _runtime_statements(node.orelse)
            continue
        for field in ("body", "orelse", "finalbody"):
            out += _runtime_statements(getattr(node, field, []) or [])
        for handler in getattr(node, "handlers", []) or []:
            out += _runtime_statements(handler.body)
        for case in getattr(node, "cases", []) or []:
            out += _runtime_statements(case.body)
    return out


def _imports(name: str, path: Path, *, module_level: bool, known: set[str] | frozenset = frozenset()) -> list[str]:
    """Absolute names of what ``name`` imports.

    For ``from X import y`` that is ``X.y`` when ``X.y`` is one of the ``known`` modules, else ``X`` (so a
    valid ``from . import sibling`` is an edge to the sibling, not to the half-initialised package). The
    root entry's relative imports resolve to top-level names (``from .comfy_nodes import ...``).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if name == ROOT_ENTRY:
        package = ""
    else:
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = _runtime_statements(tree.body) if module_level else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            submodules = [f"{mod}.{a.name}" if mod else a.name for a in node.names]
            found += [m for m in submodules if m in known]
            if not mod:
                continue
            if any(m not in known for m in submodules):
                found.append(mod)
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


def _forbidden_imports(root: Path = REPO) -> list[str]:
    bad = []
    for package, forbidden in FORBIDDEN.items():
        for name, path in _modules(package, root).items():
            if not path.is_file():
                continue
            for imported in _imports(name, path, module_level=False):
                if imported.split(".")[0] in forbidden:
                    bad.append(f"{path.relative_to(root)} imports {imported}")
    return sorted(set(bad))


def _core_graph(root: Path = REPO, *, module_level: bool) -> dict[str, list[str]]:
    modules = _modules("vist3a", root)
    known = frozenset(modules)
    return {name: sorted({m for m in _imports(name, path, module_level=module_level, known=known) if m in known and m != name})
            for name, path in modules.items()}


def _upward_imports(graph: dict[str, list[str]]) -> list[str]:
    upward = []
    for name, targets in graph.items():
        for target in targets:
            src, dst = _unit(name), _unit(target)
            if src != dst and _layer(dst) > _layer(src):
                upward.append(f"{name} (layer {_layer(src)}) imports {target} (layer {_layer(dst)})")
    return upward


def test_forbidden_imports_at_any_level():
    bad = _forbidden_imports()
    assert not bad, "layering broken:\n" + "\n".join(bad)


def test_every_core_module_has_a_layer():
    missing = [name for name in _modules("vist3a") if _unit(name) is None]
    assert not missing, f"add these modules to LAYERS here and to docs/architecture.md: {missing}"


def test_core_imports_point_down_and_have_no_cycles():
    graph = _core_graph(module_level=True)
    upward = _upward_imports(graph)
    assert not upward, "imports must point to the same or a lower layer:\n" + "\n".join(upward)
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
    # ... and none hidden inside functions either (the CLI imports its subcommands lazily, never the reverse)
    cycle = _find_cycle(_core_graph(module_level=False))
    assert cycle is None, "import cycle through a function-level import: " + " -> ".join(cycle or [])


def test_every_layer_unit_exists():
    """A renamed or deleted module must leave LAYERS too (a stale entry would hide a missing layer)."""
    modules = _modules("vist3a")
    stale = [unit for units in LAYERS.values() for unit in units if unit not in modules]
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def _function_level_imports(name: str, path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    runtime = set(map(id, _runtime_statements(tree.body)))
    return [ast.unparse(node) for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in runtime]


def _lazy_light_imports(root: Path = REPO) -> list[str]:
    bad = []
    for name, path in _modules("vist3a", root).items():
        if name in LAZY_FRONT_ENDS:
            continue
        for line in _function_level_imports(name, path):
            node = ast.parse(line).body[0]
            top = (node.names[0].name if isinstance(node, ast.Import) else ("." if node.level else node.module or "")).split(".")[0]
            if top not in HEAVY_OR_OPTIONAL:
                bad.append(f"{path.relative_to(root)}: `{line}` inside a function (import it at module level)")
    return bad


def test_imports_inside_functions_are_only_for_heavy_or_optional_dependencies():
    bad = _lazy_light_imports()
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------------------ the checker itself


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_sees_cycles_and_upward_imports(tmp_path):
    """A fake package with a cycle is caught by the same helpers."""
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from .b import x\n",
                      "pkg/b.py": "from . import a\n\ndef f():\n    import comfy\n"})
    pkg = tmp_path / "pkg"
    known = frozenset({"pkg", "pkg.a", "pkg.b"})
    a = _imports("pkg.a", pkg / "a.py", module_level=True, known=known)
    b_top = _imports("pkg.b", pkg / "b.py", module_level=True, known=known)
    b_all = _imports("pkg.b", pkg / "b.py", module_level=False, known=known)
    assert "pkg.b" in a and "pkg.a" in b_top and "comfy" not in b_top and "comfy" in b_all
    assert _find_cycle({"pkg.a": ["pkg.b"], "pkg.b": ["pkg.a"]}) == ["pkg.a", "pkg.b", "pkg.a"]
    assert _find_cycle({"pkg.a": ["pkg.b"], "pkg.b": []}) is None


def test_the_checker_forbids_developer_folders_and_comfyui_everywhere(tmp_path):
    """The core must not import bench/tools/tests; training must not import ComfyUI; the root entry is scanned."""
    _write(tmp_path, {
        "vist3a/__init__.py": "", "vist3a/a.py": "def f():\n    from bench.measure import x\n",
        "vist3a/b.py": "import tools.comfyui_env\n", "vist3a/c.py": "from tests import conftest\n",
        "vist3a_train/__init__.py": "", "vist3a_train/t.py": "def f():\n    import folder_paths\n",
        "vist3a_train/u.py": "from comfy_execution import graph\n",
        "comfy_nodes/__init__.py": "from bench import common\n",
        "__init__.py": "from .vist3a_train import t\n",
    })
    bad = _forbidden_imports(tmp_path)
    for expected in ("vist3a/a.py imports bench.measure", "vist3a/b.py imports tools.comfyui_env", "vist3a/c.py imports tests",
                     "vist3a_train/t.py imports folder_paths", "vist3a_train/u.py imports comfy_execution",
                     "comfy_nodes/__init__.py imports bench", "__init__.py imports vist3a_train"):
        assert any(line.startswith(expected) for line in bad), (expected, bad)


def test_the_checker_sees_imports_that_run_inside_module_level_blocks(tmp_path):
    """An upward import inside a module-level try/if/with or a class body runs at import time: caught.
    Under ``if TYPE_CHECKING:`` or inside a function it does not run: not a module-level edge."""
    _write(tmp_path, {
        "vist3a/__init__.py": "", "vist3a/errors.py": "try:\n    from .cli import main\nexcept ImportError:\n    main = None\n",
        "vist3a/atomic.py": "import os\nif os.name:\n    with open(os.devnull):\n        from . import pipeline\n",
        "vist3a/sync.py": "class A:\n    from .demo import x\n",
        "vist3a/offload.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .cli import main\n\ndef f():\n    from .batch import b\n",
        "vist3a/cli.py": "", "vist3a/pipeline.py": "", "vist3a/demo.py": "", "vist3a/batch.py": "",
    })
    graph = _core_graph(tmp_path, module_level=True)
    assert graph["vist3a.errors"] == ["vist3a.cli"] and graph["vist3a.atomic"] == ["vist3a.pipeline"]
    assert graph["vist3a.sync"] == ["vist3a.demo"] and graph["vist3a.offload"] == []
    upward = _upward_imports(graph)
    assert len(upward) == 3 and all("(layer 0) imports" in line for line in upward)


def test_a_sibling_import_from_the_package_is_no_cycle(tmp_path):
    """``from . import keys`` inside a package imports the sibling module, not the package: no false cycle,
    while a real package <-> module cycle is still found."""
    _write(tmp_path, {
        "vist3a/__init__.py": "", "vist3a/weights/__init__.py": "from .detect import sniff\n",
        "vist3a/weights/detect.py": "from . import keys\n\ndef sniff():\n    return keys\n", "vist3a/weights/keys.py": "",
        "vist3a/models/__init__.py": "from .a import x\n", "vist3a/models/a.py": "from . import b\nfrom . import x_value\n",
        "vist3a/models/b.py": "",
    })
    graph = _core_graph(tmp_path, module_level=True)
    assert graph["vist3a.weights.detect"] == ["vist3a.weights.keys"]
    assert _find_cycle({k: v for k, v in graph.items() if k.startswith("vist3a.weights")}) is None
    # `from . import x_value` names no module, so it is the package itself: a real cycle with models/__init__
    assert graph["vist3a.models.a"] == ["vist3a.models", "vist3a.models.b"]
    assert _find_cycle(graph) == ["vist3a.models", "vist3a.models.a", "vist3a.models"]


def test_the_checker_sees_light_imports_hidden_in_functions(tmp_path):
    _write(tmp_path, {
        "vist3a/__init__.py": "", "vist3a/cli.py": "def main():\n    from .batch import run\n",
        "vist3a/a.py": "def f():\n    import json\n    from .b import g\n    from diffusers import X\n    import torchvision.models\n",
        "vist3a/b.py": "try:\n    import isal\nexcept ImportError:\n    isal = None\n",
    })
    bad = _lazy_light_imports(tmp_path)
    assert len(bad) == 2 and "`import json`" in bad[0] and "`from .b import g`" in bad[1]


def _test_module_imports(root: Path = REPO) -> list[str]:
    """Imports of one test module by another (tests share code through the helper modules only)."""
    tests = {p.stem for p in (root / "tests").glob("test_*.py")}
    bad = []
    for path in sorted((root / "tests").glob("*.py")):
        for imported in _imports(path.stem, path, module_level=False):
            if imported.split(".")[0] in tests:
                bad.append(f"tests/{path.name} imports {imported}")
    return bad


def test_test_modules_share_code_only_through_helper_modules():
    assert _test_module_imports() == []


def test_the_checker_sees_a_test_module_imported_by_another(tmp_path):
    _write(tmp_path, {"tests/test_a.py": "def test_x():\n    from test_b import scene\n", "tests/test_b.py": "scene = 1\n",
                      "tests/helpers.py": "", "tests/test_c.py": "from helpers import scene\n"})
    assert _test_module_imports(tmp_path) == ["tests/test_a.py imports test_b"]
