"""The ComfyUI entry point and the core stay separable: the repo folder imports under any package name,
`vist3a` imports from a pip install without ComfyUI, and the .spz export round-trips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from guards import HANG_S

REPO = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path, env_path: str | None = None) -> dict:
    env = {"PYTHONPATH": env_path} if env_path else {}
    import os

    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, **env, "PYTHONNOUSERSITE": "1"}, timeout=HANG_S)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_repo_folder_imports_under_any_name_without_comfyui(tmp_path):
    code = f"""
import importlib.util, json, sys, asyncio
spec = importlib.util.spec_from_file_location("/some/custom_nodes/My Pack_x_v2", {str(REPO / '__init__.py')!r})
mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
import vist3a
try:
    asyncio.run(mod.comfy_entrypoint()); raised = False
except RuntimeError:
    raised = True
print(json.dumps({{"web": mod.WEB_DIRECTORY, "core": vist3a.__file__, "raised": raised,
                  "comfy": any(m.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths') for m in sys.modules)}}))
"""
    r = _run(code, tmp_path)
    assert r["web"] == "./web" and r["raised"] and not r["comfy"]
    assert Path(r["core"]).resolve() == (REPO / "vist3a" / "__init__.py").resolve()


@pytest.mark.slow
def test_pip_installed_core_imports_without_comfyui(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(REPO)],
                   check=True, capture_output=True, timeout=HANG_S, cwd=tmp_path)
    assert not (target / "comfy_nodes").exists(), "the ComfyUI nodes must not be installed as a top-level package"
    code = """
import json, sys
import vist3a, vist3a.gaussians, vist3a.formats, vist3a.tiny_release, vist3a.pipeline
print(json.dumps({"core": vist3a.__file__, "comfy": any(m.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths', 'comfy_nodes') for m in sys.modules)}))
"""
    r = _run(code, tmp_path, env_path=str(target))
    assert Path(r["core"]).resolve().is_relative_to(target.resolve()) and not r["comfy"]


def test_tiny_release_layout(tmp_path):
    from vist3a.tiny_release import TINY_RELEASE_FILES, write_tiny_release
    from vist3a.weights import sniff

    paths = write_tiny_release(tmp_path)
    assert set(paths) == set(TINY_RELEASE_FILES)
    assert sniff(paths["stitched_pth"]).kind == "stitched_pth"
    assert sniff(paths["anysplat"]).kind == "anysplat"
    assert sniff(paths["stitched_export"]).kind == "stitched_export"
    assert sniff(paths["lora_1_3b"]).kind == "wan_lora_peft"
    assert write_tiny_release(tmp_path) == paths  # second call keeps the files


def test_registry_metadata_and_single_entry_point():
    """[tool.comfy] is complete, its icon exists, .comfyignore keeps tests/bench/caches out but the node in,
    and comfy_entrypoint is the only registration (a NODE_CLASS_MAPPINGS would shadow it)."""
    import ast

    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    comfy = meta["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["requires-comfyui"].startswith(">=")
    icon = REPO / comfy["Icon"]
    assert icon.is_file() and icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(icon) as im:
        assert im.width <= 800 and im.height <= 400
    assert meta["project"]["urls"]
    names = {n.id for n in ast.walk(ast.parse((REPO / "__init__.py").read_text())) if isinstance(n, ast.Name)}
    assert "NODE_CLASS_MAPPINGS" not in names and "NODE_DISPLAY_NAME_MAPPINGS" not in names

    def ignored(path: str) -> bool:
        out = subprocess.run(["git", "-c", f"core.excludesFile={REPO / '.comfyignore'}", "check-ignore", "--no-index", "-q", path],
                             cwd=REPO, capture_output=True)
        return out.returncode == 0

    for path in ("tests/test_comfy_server.py", "bench/run.py", ".cache/comfyui/x", "vist3a_train/train.py", "comfy_nodes/__pycache__/a.pyc"):
        assert ignored(path), path
    for path in ("__init__.py", "comfy_nodes/splats.py", "vist3a/splat_contract.py", "web/vist3a.js", "requirements.txt",
                 "workflows/VIST3A text to 3D splats - Wan 1.3B.json", comfy["Icon"], "pyproject.toml"):
        assert not ignored(path), path
