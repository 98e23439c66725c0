"""`make serve`'s script as a user runs it: the banner (URL, input/output folders, models and whether
they are tiny), no IMPORT FAILED from ComfyUI's own nodes, and Ctrl-C stops it cleanly (exit 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from guards import HANG_S

from comfy_harness import REPO
from comfyui_env import COMFY, free_port

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]


def test_serve_prints_the_banner_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "comfyui_env.py"), "serve", "--port", str(port), "--tiny"],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            t0 = time.time()
            while "stop with Ctrl-C" not in log.read_text(errors="replace"):
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.time() - t0 < HANG_S, log.read_text()[-3000:]
                time.sleep(0.5)
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends to the foreground group
            code = proc.wait(timeout=HANG_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = log.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert f"http://127.0.0.1:{port}" in text
    assert f"input folder  (put .ply / .spz / videos here): {COMFY / 'input'}" in text
    assert str(COMFY / "output") in text
    assert "TINY RANDOM models" in text and "wan2.1_t2v_1.3B_fp16.safetensors (tiny)" in text
    assert "IMPORT FAILED" not in text, [l for l in text.splitlines() if "IMPORT FAILED" in l]
    assert "Traceback" not in text.split("stop with Ctrl-C")[-1], text[-3000:]
