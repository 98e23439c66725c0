"""A real ComfyUI server for the tests: installed into .cache/comfyui (see tools/comfyui_env.py), started on
a free port with tiny weights in a temporary models folder, driven over HTTP/websocket."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import comfyui28_env  # noqa: E402
from guards import HANG_S  # noqa: E402

import comfyui_env  # noqa: E402
from comfy_workflows import ui_to_api  # noqa: E402

# The ComfyUI versions the tests run against: the install/launch module of each.
ENVS = {comfyui_env.COMFY_VERSION: comfyui_env, comfyui28_env.COMFY_VERSION: comfyui28_env}

REPO = comfyui_env.REPO
NODE_IDS = [
    "VIST3ALoadWan", "VIST3ALoadLoRA", "VIST3AApplyLoRAToModel", "VIST3ALoadStitchedDecoder", "VIST3ALoadAnySplat",
    "VIST3ATextEncode", "VIST3ASample", "VIST3ADecodeSplats", "VIST3AImagesToSplats",
    "VIST3ARenderViews", "VIST3APreviewSplats", "VIST3ASavePLY", "VIST3ALoadPLY", "VIST3ARunSize", "VIST3AViewerCamera",
    "VIST3ASplatsToMesh",
]

# The shipped workflows use the official sizes (13 frames at 512x512, 50 steps); on a CPU with tiny
# random weights that alone takes minutes, so the tests shrink the heavy numbers and keep the graphs.
FAST = {
    "VIST3ASample": {"steps": 3, "frames": 5, "width": 64, "height": 64},
    "KSampler": {"steps": 3},
    "EmptyHunyuanLatentVideo": {"width": 64, "height": 64, "length": 5},
    "VIST3ARenderViews": {"views": 3, "width": 96, "height": 96},
    "VIST3AImagesToSplats": {"max_views": 4, "size": 56},
    "SplatToMesh": {"resolution": 64},
}


class ComfyServer:
    def __init__(self, base: Path, models: Path, extra_args: list[str] = (), version: str = comfyui_env.COMFY_VERSION,
                 env: dict | None = None):
        self.version = version
        self.extra_env = dict(env or {})
        self.env = ENVS[version]
        self.extra_args = list(extra_args)
        self.base = Path(base)
        self.models = Path(models)
        self.port = comfyui_env.free_port()
        self.log_path = self.base / "comfyui.log"
        self.proc: subprocess.Popen | None = None
        self.startup_s = None
        self._object_info = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "ComfyServer":
        comfy = self.env.install()
        extra = comfyui_env.write_extra_model_paths(self.base / "extra_model_paths.yaml", [self.models])
        cmd = self.env.server_command(self.port, extra, self.base, ["--database-url", "sqlite:///:memory:", *self.extra_args])
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **self.extra_env}
        t0 = time.time()
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=str(comfy), stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        try:
            comfyui_env.wait_ready(self.port, self.proc, timeout=HANG_S, log=self.log_path)
        except BaseException:  # a server that never got ready is not left behind
            self.stop()
            raise
        self.startup_s = time.time() - t0
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # ------------------------------------------------------------------ http
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=HANG_S) as r:
            return json.load(r)

    def post(self, path: str, data) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=json.dumps(data).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=HANG_S) as r:
                body = r.read()
                return r.status, (json.loads(body) if body else {})
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def object_info(self) -> dict:
        if self._object_info is None:
            self._object_info = self.get("/object_info")
        return self._object_info

    # ------------------------------------------------------------------ prompts
    def api_from_workflow(self, path: Path, overrides: dict | None = FAST) -> dict:
        """The workflow as an API prompt with `overrides` {class_type: {input: value}} applied; an overridden widget
        that the workflow drives from Run Size gets the literal value instead of the link."""
        api = ui_to_api(json.loads(Path(path).read_text()), self.object_info())
        for node in api.values():
            for k, v in (overrides or {}).get(node["class_type"], {}).items():
                if k in node["inputs"]:
                    node["inputs"][k] = v
        return api

    def queue(self, prompt: dict, client_id: str = "vist3a-tests") -> str:
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": client_id})
        if status != 200:
            raise AssertionError(f"/prompt refused the prompt ({status}): {json.dumps(body)[:2000]}")
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = HANG_S) -> dict:
        t0 = time.time()
        while time.time() - t0 < timeout:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None:
                if h[prompt_id]["status"].get("status_str") in ("success", "error"):
                    return h[prompt_id]
            if self.proc.poll() is not None:
                raise RuntimeError("ComfyUI died:\n" + self.log()[-3000:])
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")

    def run(self, prompt: dict, timeout: float = HANG_S) -> tuple[dict, float]:
        t0 = time.time()
        h = self.wait(self.queue(prompt), timeout)
        return h, time.time() - t0

    def fetch(self, item: dict) -> bytes:
        """A file the server produced, fetched through /view exactly like the frontend does."""
        from urllib.parse import urlencode

        q = urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""), "type": item.get("type", "output")})
        with urllib.request.urlopen(f"{self.url}/view?{q}", timeout=HANG_S) as r:
            return r.read()

    def output_path(self, item: dict) -> Path:
        """Local copy of a produced file (fetched through /view) under <base>/fetched/."""
        data = self.fetch(item)
        path = self.base / "fetched" / item.get("type", "output") / item.get("subfolder", "") / item["filename"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    async def _watch(self, client_id: str, until, timeout: float):
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}") as ws:
                t0 = time.time()
                while time.time() - t0 < timeout:
                    msg = await ws.receive(timeout=timeout)
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        data = json.loads(msg.data)
                        if until(data):
                            return data
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
        raise TimeoutError("the websocket message did not arrive")

    def queue_and_wait_for(self, prompt: dict, until, timeout: float = HANG_S) -> tuple[str, dict]:
        """Queue `prompt` and block until a websocket message satisfies `until` (e.g. a progress event)."""
        client_id = f"vist3a-ws-{time.time_ns()}"

        async def go():
            task = asyncio.create_task(self._watch(client_id, until, timeout))
            await asyncio.sleep(0.3)
            pid = await asyncio.to_thread(self.queue, prompt, client_id)
            return pid, await task

        return asyncio.run(go())


    def watch(self, prompt: dict, cancel_when=None, timeout: float = HANG_S) -> dict:
        """Queue `prompt` and follow it over the websocket to its end. `cancel_when(kind, data)` -> True presses
        Cancel (POST /interrupt) once. Returns {"progress": {node: [values]}, "max": {node: bar total},
        "texts": {node: [progress texts]}, "end": the final message type, "end_data": its data,
        "after_s": seconds from Cancel to the end (None without a Cancel)}."""
        import aiohttp

        client_id = f"vist3a-watch-{time.time_ns()}"

        async def go():
            out = {"progress": {}, "max": {}, "texts": {}, "end": None, "end_data": None, "after_s": None}
            pid, t_cancel = None, None
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}") as ws:
                    pid = await asyncio.to_thread(self.queue, prompt, client_id)
                    t0 = time.time()
                    while time.time() - t0 < timeout:
                        msg = await ws.receive(timeout=timeout)
                        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
                        if msg.type == aiohttp.WSMsgType.BINARY:  # progress text: event 3, node id length, id, text
                            if int.from_bytes(msg.data[:4], "big") == 3:
                                n = int.from_bytes(msg.data[4:8], "big")
                                node, text = msg.data[8:8 + n].decode(), msg.data[8 + n:].decode(errors="replace")
                                out["texts"].setdefault(node, []).append(text)
                                kind, d = "progress_text", {"node": node, "text": text}
                            else:
                                continue
                        elif msg.type == aiohttp.WSMsgType.TEXT:
                            data = json.loads(msg.data)
                            kind, d = data.get("type"), data.get("data", {})
                            if d.get("prompt_id") not in (None, pid):
                                continue
                            if kind == "progress":
                                out["progress"].setdefault(d["node"], []).append(d["value"])
                                out["max"][d["node"]] = d["max"]
                            elif kind in ("execution_interrupted", "execution_error", "execution_success"):
                                out.update(end=kind, end_data=d, after_s=None if t_cancel is None else time.time() - t_cancel)
                                return out
                        else:
                            continue
                        if cancel_when is not None and t_cancel is None and cancel_when(kind, d):
                            t_cancel = time.time()
                            await asyncio.to_thread(self.post, "/interrupt", {})
            raise TimeoutError(f"prompt {pid} did not end within {timeout} s (seen so far: {out})")

        return asyncio.run(go())


def start_test_server(version: str, tmp_path_factory, extra_args: list[str] = ()) -> ComfyServer:
    """A server of `version` with the tiny release in its models folder and the example video in input/;
    skips (with the reason) where that ComfyUI cannot be installed here."""
    import pytest

    from vist3a.tiny_release import write_tiny_release

    reason = getattr(ENVS[version], "missing_reason", lambda: None)()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp(f"comfy-{version}")
    write_tiny_release(base / "models")
    comfyui_env.write_example_video(base / "input" / "vist3a_example_orbit.mp4")
    return ComfyServer(base, base / "models", extra_args, version=version).start()


def import_problems(log: str, link_name: str = comfyui_env.LINK_NAME) -> list[str]:
    """Lines of the server log that say our extension failed to import (grep, not the exit code)."""
    bad = []
    for line in log.splitlines():
        if link_name in line and re.search(r"IMPORT FAILED|Cannot import|Traceback|Error", line):
            bad.append(line)
        if re.search(r"comfy_nodes|vist3a", line) and re.search(r"Error|Traceback|Cannot import", line):
            bad.append(line)
    return bad


def api_graph(decoder="vist3a_stitched_export/", anysplat="(none)", steps=3):
    """An API graph through the other loader paths: diffusers folder with a text-encoder file in place of its own,
    our export, Load PLY, predicted cameras."""
    return {
        "1": {"class_type": "VIST3ALoadWan", "inputs": {"model": "Wan2.1-T2V-1.3B-Diffusers/", "text_encoder": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                                        "vae": "(from the diffusers folder)", "dtype": "fp32", "device": "cpu", "offload": "none"}},
        "2": {"class_type": "VIST3ATextEncode", "inputs": {"wan": ["1", 0], "prompt": "a red car", "camera_template": True, "negative_prompt": "blurry"}},
        "3": {"class_type": "VIST3ASample", "inputs": {"wan": ["1", 0], "positive": ["2", 0], "negative": ["2", 1], "seed": 7, "steps": steps,
                                                       "cfg": 5.0, "shift": 5.0, "frames": 5, "width": 64, "height": 64}},
        "4": {"class_type": "VIST3ALoadStitchedDecoder", "inputs": {"decoder": decoder, "anysplat": anysplat, "precision": "fp32", "device": "auto"}},
        "5": {"class_type": "VIST3ADecodeSplats", "inputs": {"latent": ["3", 0], "vae": ["1", 0], "decoder": ["4", 0], "voxelize": "off", "min_opacity": 0.01}},
        "6": {"class_type": "VIST3ASavePLY", "inputs": {"splat": ["5", 0], "filename_prefix": "tests/api", "sh_degree": "0", "also_splat": True, "also_spz": True}},
        "7": {"class_type": "VIST3ARenderViews", "inputs": {"splat": ["5", 0], "cameras": ["5", 1], "mode": "predicted cameras", "views": 2,
                                                            "width": 64, "height": 48, "fov": 50.0, "elevation": 15.0, "background": "black"}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }
