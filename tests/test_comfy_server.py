"""A real ComfyUI 0.3.75 server with this repository in custom_nodes/: the extension imports, every
node is listed, every shipped workflow runs to completion on tiny weights, Cancel and errors behave."""

from __future__ import annotations

import json
import urllib.request
import time
from pathlib import Path

import pytest

from comfy_harness import FAST, NODE_IDS, ComfyServer, api_graph, import_problems
from comfy_workflows import SPECS, WORKFLOWS, build_ui

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from comfyui_env import write_example_video
    from vist3a.tiny_release import write_tiny_release

    base = tmp_path_factory.mktemp("comfy")
    models = base / "models"
    write_tiny_release(models)
    write_example_video(base / "input" / "vist3a_example_orbit.mp4")
    srv = ComfyServer(base, models).start()
    TIMINGS["server_start_s"] = round(srv.startup_s, 1)
    yield srv
    srv.stop()
    print("\nComfyUI timings (CPU, tiny weights):", json.dumps(TIMINGS))


def test_extension_imports_without_error(server):
    log = server.log()
    assert "ComfyUI-VIST3A" in log, "ComfyUI did not try to load the extension:\n" + log[-3000:]
    assert not import_problems(log), "\n".join(import_problems(log))
    ours = [e for e in server.get("/extensions") if e.startswith("/extensions/ComfyUI-VIST3A/")]
    assert sorted(ours) == ["/extensions/ComfyUI-VIST3A/splat_viewer.js", "/extensions/ComfyUI-VIST3A/vendor/spark_three.js",
                            "/extensions/ComfyUI-VIST3A/vist3a.js"], ours


def test_object_info_lists_every_node_with_tooltips(server):
    info = server.object_info()
    missing = [n for n in NODE_IDS if n not in info]
    assert not missing, missing
    for name in NODE_IDS:
        node = info[name]
        assert node["category"].startswith("VIST3A"), name
        assert node["display_name"] and node["description"], name
        for group in ("required", "optional"):
            for inp, spec in node["input"].get(group, {}).items():
                opts = spec[1] if len(spec) > 1 else {}
                assert opts.get("tooltip"), f"{name}.{inp} has no tooltip"
    assert info["VIST3APreviewSplats"]["output_node"] and info["VIST3ASavePLY"]["output_node"]
    assert info["VIST3ASample"]["output"] == ["LATENT"]
    assert info["VIST3ADecodeSplats"]["input"]["required"]["vae"][0] == "VAE,VIST3A_WAN"
    assert info["VIST3ADecodeSplats"]["output"] == ["GAUSSIANS", "CAMERAS", "IMAGE"]
    assert info["VIST3ARenderViews"]["output"] == ["IMAGE"]
    # the models/vist3a folder is registered and lists the tiny files
    decoders = info["VIST3ALoadStitchedDecoder"]["input"]["required"]["decoder"][1]["options"]
    assert {"anysplat_stitched.pth", "vist3a_stitched_export/", "anysplat/"} <= set(decoders)


def test_shipped_workflows_are_current_and_listed_as_templates(server):
    info = dict(server.object_info())
    info.setdefault("MarkdownNote", {"input": {"required": {}}, "output": [], "output_name": []})
    for name, spec in SPECS.items():
        committed = json.loads((WORKFLOWS / name).read_text())
        assert committed == build_ui(spec(info), info), f"workflows/{name} is stale: python tests/comfy_workflows.py --port N"
    templates = server.get("/workflow_templates")
    pack, ours = next((k, v) for k, v in templates.items() if "VIST3A" in k)
    assert sorted(ours) == sorted(Path(n).stem for n in SPECS)
    for stem in ours:  # the template browser's card picture (tools/thumbnails.py)
        with urllib.request.urlopen(f"{server.url}/api/workflow_templates/{pack}/{stem}.jpg", timeout=30) as r:
            assert r.status == 200 and r.read(3) == b"\xff\xd8\xff", stem


def _check_outputs(server, history) -> dict:
    from PIL import Image

    from vist3a.gaussians import load_ply
    from vist3a.splat_formats import load_spz

    seen = {"ply": 0, "spz": 0, "splat": 0, "images": 0, "preview": 0}
    for node_out in history["outputs"].values():
        for item in node_out.get("vist3a_files", []):
            path = server.output_path(item)
            assert path.is_file(), path
            ext = path.suffix[1:]
            seen[ext] += 1
            if ext == "ply":
                g = load_ply(path)
                assert g.num > 0
            elif ext == "spz":
                assert load_spz(path).num > 0
            else:
                assert path.stat().st_size % 32 == 0 and path.stat().st_size > 0
        for item in node_out.get("vist3a_splats", []):
            path = server.output_path(item)  # .spz with SH up to degree 3 for the Spark viewer
            assert item["format"] == "spz" and load_spz(path).num == item["count"] > 0
            assert item["up_source"] in ("cameras", "points") and len(item["up"]) == 3 and item["radius"] > 0
            seen["preview"] += 1
        for item in node_out.get("images", []):
            path = server.output_path(item)
            with Image.open(path) as im:
                im.load()
                assert im.width > 0 and im.height > 0
                colors = im.convert("RGB").getcolors(1 << 20)  # None: more colours than that
                assert colors is None or len(colors) > 1, f"{path} is a flat image"
            seen["images"] += 1
    return seen


@pytest.mark.parametrize("workflow", sorted(SPECS))
def test_shipped_workflow_runs(server, workflow):
    api = server.api_from_workflow(WORKFLOWS / workflow)
    history, seconds = server.run(api)
    assert history["status"]["status_str"] == "success", json.dumps(history["status"], indent=1)[:3000]
    TIMINGS[workflow] = round(seconds, 1)
    seen = _check_outputs(server, history)
    assert seen["ply"] >= 1 and seen["preview"] >= 1, seen
    assert seen["images"] >= 1, seen


def test_diffusers_folder_export_and_load_ply(server):
    history, _ = server.run(api_graph())
    assert history["status"]["status_str"] == "success", json.dumps(history["status"])[:3000]
    seen = _check_outputs(server, history)
    assert seen["ply"] == seen["spz"] == seen["splat"] == 1 and seen["images"] == 5  # one view per predicted camera
    item = history["outputs"]["6"]["vist3a_files"][0]
    load = {
        "1": {"class_type": "VIST3ALoadPLY", "inputs": {"file": f"{item['subfolder']}/{item['filename']} [output]", "path": ""}},
        "2": {"class_type": "VIST3APreviewSplats", "inputs": {"gaussians": ["1", 0], "max_splats": 1000}},
        "3": {"class_type": "VIST3ARenderViews", "inputs": {"gaussians": ["1", 0], "mode": "orbit", "views": 2, "width": 32, "height": 32,
                                                            "fov": 50.0, "elevation": 15.0, "background": "white"}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    server._object_info = None  # the new file shows up in Load PLY's list on the next /object_info
    history, _ = server.run(load)
    assert history["status"]["status_str"] == "success", json.dumps(history["status"])[:3000]
    assert history["outputs"]["2"]["vist3a_splats"][0]["count"] <= 1000


def _error(history) -> dict:
    return next(m[1] for m in history["status"]["messages"] if m[0] == "execution_error")


def test_failing_prompt_then_good_prompt(server):
    # the official .pth without its AnySplat base: a one-sentence error naming what to do
    history, _ = server.run(api_graph(decoder="anysplat_stitched.pth", anysplat="(none)"))
    assert history["status"]["status_str"] == "error"
    err = _error(history)
    assert err["node_type"] == "VIST3ALoadStitchedDecoder"
    msg = err["exception_message"].strip()
    assert "\n" not in msg and "AnySplat" in msg and msg.endswith("."), msg
    # a file that is not in models/vist3a: refused (ComfyUI 0.3.75 does not check V3 combo values up
    # front, so the loader says it while running), naming the file and what to do
    history, _ = server.run(api_graph(decoder="nope.pth"))
    msg = _error(history)["exception_message"].strip()
    assert "nope.pth" in msg and "models/vist3a" in msg and "\n" not in msg, msg
    # the server is fine afterwards
    history, _ = server.run(api_graph(decoder="anysplat_stitched.pth", anysplat="anysplat/"))
    assert history["status"]["status_str"] == "success", json.dumps(history["status"])[:3000]


def test_cancel_stops_sampling_promptly(server):
    graph = api_graph(steps=1000)
    graph["3"]["inputs"]["seed"] = 12345  # not cached

    def sampling(msg):
        d = msg.get("data", {})
        return msg.get("type") == "progress" and d.get("node") == "3" and d.get("value", 0) >= 2

    pid, _ = server.queue_and_wait_for(graph, sampling, timeout=180)
    t0 = time.time()
    assert server.post("/interrupt", {})[0] == 200
    history = server.wait(pid, timeout=60)
    stopped = time.time() - t0
    kinds = [m[0] for m in history["status"]["messages"]]
    assert "execution_interrupted" in kinds, kinds
    interrupted = next(m[1] for m in history["status"]["messages"] if m[0] == "execution_interrupted")
    assert interrupted["node_type"] == "VIST3ASample"
    assert stopped < 15, f"Cancel took {stopped:.1f} s"
    TIMINGS["cancel_s"] = round(stopped, 2)
    # and the next prompt runs normally
    history, _ = server.run(api_graph(steps=2))
    assert history["status"]["status_str"] == "success"


def test_free_releases_cached_models(server):
    """POST /free drops ComfyUI's output cache, which held our loaded models; the next run reloads them."""
    assert server.post("/free", {"unload_models": True, "free_memory": True})[0] == 200
    history, _ = server.run(api_graph(steps=2))
    assert history["status"]["status_str"] == "success"
