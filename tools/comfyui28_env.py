"""Install a current ComfyUI (0.28.0, with the native SPLAT type) next to 0.3.75, for the test matrix.

    python tools/comfyui28_env.py install     # once; needs the source tarball (see below)
    python tools/comfyui28_env.py serve [--port 8188] [--tiny]

The registries serve no recent ComfyUI, so its source comes from a tarball kept beside the repository:
``../shared/comfyui/ComfyUI-0.28.0.tar.gz`` (relative to the repo root; $VIST3A_COMFYUI28_TARBALL
overrides). It is GPL-3 like ComfyUI and is unpacked into the ignored cache, never committed.

ComfyUI 0.28 pins other frontend/template packages than 0.3.75, so it gets its OWN venv in
.cache/comfyui28/venv, layered on the project venv: a .pth there adds the project's site-packages
*after* its own, so torch & co. are shared (no 5 GB copy) while 0.28's pins live only in its venv
and never change what 0.3.75 sees. pip there leaves packages outside that venv alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfyui_env  # noqa: E402

REPO = comfyui_env.REPO
COMFY_VERSION = "0.28.0"
TARBALL_SHA256 = "d9f9817848bb702bd0ae7d0b00c94a3851a4a11a3f84d85baadde65c75de36bb"
CACHE = Path(os.environ.get("VIST3A_COMFYUI28_CACHE", REPO / ".cache" / "comfyui28"))
COMFY = CACHE / f"ComfyUI-{COMFY_VERSION}"
VENV = CACHE / "venv"
PYTHON = VENV / "bin" / "python"
STAMP = CACHE / f".installed-{COMFY_VERSION}"
FRONTEND = "1.45.21"  # what 0.28.0's requirements pin
# torch comes from the project venv; torchaudio (imported at start by 0.28's audio VAE) has no build
# matching torch 2.14.1 on the registry, the newest imports fine beside it without its deps.
SKIP = {"torch", "torchvision", "torchaudio", "comfyui_manager"}
TORCHAUDIO = "torchaudio==2.11.1"


def tarball() -> Path:
    return Path(os.environ.get("VIST3A_COMFYUI28_TARBALL", REPO.parent / "shared" / "comfyui" / f"ComfyUI-{COMFY_VERSION}.tar.gz"))


def missing_reason() -> str | None:
    """Why ComfyUI 0.28 cannot be installed here (None when it can): the tests skip with this."""
    if STAMP.is_file() and (COMFY / "main.py").is_file() and PYTHON.is_file():
        return None
    if not tarball().is_file():
        return f"ComfyUI {COMFY_VERSION} source tarball not found at {tarball()} (set VIST3A_COMFYUI28_TARBALL)"
    return None


def _requirements() -> list[str]:
    out = []
    for line in (COMFY / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        name = line.replace("-", "_").split("=")[0].split(">")[0].split("<")[0].split("~")[0].strip().lower()
        if line and name not in SKIP:
            out.append(line)
    return out


def _make_venv() -> None:
    base = getattr(sys, "_base_executable", sys.executable)
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    _layer_on_project_venv()


def _layer_on_project_venv() -> None:
    """Make the project venv's packages (torch & co.) visible to ComfyUI 0.28's venv, after its own."""
    site = subprocess.run([str(PYTHON), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    project = sysconfig.get_paths()["purelib"]  # the interpreter running this: the project venv
    # `import` lines of a .pth run at start-up; addsitedir appends (lower priority) and reads its .pth files too
    pth = Path(site) / "zz_vist3a_project_venv.pth"
    text = f"import site; site.addsitedir({project!r})\n"
    if not pth.is_file() or pth.read_text() != text:
        pth.write_text(text)


def _pip(*args: str) -> None:
    subprocess.run([str(PYTHON), "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)


def install() -> Path:
    """Unpack ComfyUI 0.28 into .cache/comfyui28, build its layered venv, link this repo. Idempotent."""
    if not (STAMP.is_file() and (COMFY / "main.py").is_file() and PYTHON.is_file()):
        src = tarball()
        if not src.is_file():
            raise FileNotFoundError(missing_reason())
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        if digest != TARBALL_SHA256:
            raise ValueError(f"{src} has sha256 {digest}, expected {TARBALL_SHA256} (the ComfyUI {COMFY_VERSION} tarball of ../shared/comfyui)")
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = CACHE / "unpack.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"[comfyui28] unpacking {src.name} ...", flush=True)
        with tarfile.open(src) as t:
            t.extractall(tmp, filter="data")
        shutil.rmtree(COMFY, ignore_errors=True)
        (tmp / COMFY.name).rename(COMFY)
        shutil.rmtree(tmp)
        print(f"[comfyui28] venv {VENV} on top of {sys.prefix} ...", flush=True)
        _make_venv()
        reqs = _requirements()
        print(f"[comfyui28] installing ComfyUI {COMFY_VERSION}'s requirements ({len(reqs)} lines, no torch) and the pack's ...", flush=True)
        _pip("install", *reqs, "-r", str(REPO / "requirements.txt"))  # one resolve for both lists
        _pip("install", "--no-deps", TORCHAUDIO)
        STAMP.write_text(json.dumps({"comfyui": COMFY_VERSION, "from": str(src), "sha256": digest}))
    _layer_on_project_venv()  # again on every install: a moved checkout moves the project venv with it
    comfyui_env.link_repo(COMFY / "custom_nodes")
    return COMFY


def server_command(port: int, extra_paths: Path | None = None, base: Path | None = None, extra: list[str] = ()) -> list[str]:
    return comfyui_env.server_command(port, extra_paths, base, extra, python=str(PYTHON), comfy=COMFY)


def serve(port: int, tiny: bool = False) -> int:
    install()
    return comfyui_env.serve(port, tiny=tiny, python=str(PYTHON), comfy=COMFY, version=COMFY_VERSION)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help=f"install ComfyUI {COMFY_VERSION} into .cache/comfyui28 (own venv) and link this repo")
    s = sub.add_parser("serve", help="install if needed and run it on 127.0.0.1 (CPU)")
    s.add_argument("--port", type=int, default=8188)
    s.add_argument("--tiny", action="store_true", help="use tiny random models even if real weights are present")
    args = parser.parse_args(argv)
    if args.cmd == "install":
        print(install())
        return 0
    return serve(args.port, tiny=args.tiny)


if __name__ == "__main__":
    raise SystemExit(main())
