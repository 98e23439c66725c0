"""A real ComfyUI server with this repository in custom_nodes/, on every tested version (0.3.75 and
0.28.0, see conftest.COMFY_VERSIONS): the extension imports, every node is listed, every shipped workflow
runs to completion on tiny weights, Cancel and errors behave; on 0.28 our SPLAT sockets connect to
ComfyUI's native splat nodes in both directions."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from guards import HANG_S

from comfy_harness import NODE_IDS, api_graph, import_problems
from comfy_workflows import NATIVE_SPECS, SPECS, TEMPLATE_SUMMARIES, WORKFLOWS, build_ui, template_summaries

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

TIMINGS: dict[str, dict[str, float]] = {}
NATIVE = "0.28.0"  # the first tested ComfyUI with the native SPLAT type and splat nodes


@pytest.fixture(scope="module")
def server(comfy_server):
    """The session's server of one version (conftest.comfy_server), timings reported per version."""
    times = TIMINGS.setdefault(comfy_server.version, {"server_start_s": round(comfy_server.startup_s, 1)})
    yield comfy_server
    print(f"\nComfyUI {comfy_server.version} timings (CPU, tiny weights):", json.dumps(times))


def _needs_native(server):
    if server.version != NATIVE:
        pytest.skip(f"ComfyUI {server.version} has no native SPLAT nodes (they came with {NATIVE})")


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
    assert info["VIST3ADecodeSplats"]["output"] == ["SPLAT", "CAMERAS", "IMAGE"]
    assert info["VIST3ARenderViews"]["output"] == ["IMAGE"]
    assert info["VIST3ASavePLY"]["input"]["required"]["sh_degree"][1]["default"] == "3"  # what common viewers read
    # every SPLAT producer outputs SH degree 3 unless asked for all of it (ComfyUI's Spark viewers read at most 3)
    for node in ("VIST3ADecodeSplats", "VIST3AImagesToSplats", "VIST3ALoadPLY"):
        spec = info[node]["input"]["optional"]["sh_degree"]  # optional: API prompts from before it still validate
        assert spec[1]["default"] == "3" and "full" in spec[1]["options"] and "Preview Splat" in spec[1]["tooltip"], (node, spec)
    assert info["VIST3AViewerCamera"]["output"] == ["LOAD3D_CAMERA"]
    # the models/vist3a folder is registered and lists the tiny files
    decoders = info["VIST3ALoadStitchedDecoder"]["input"]["required"]["decoder"][1]["options"]
    assert {"anysplat_stitched.pth", "vist3a_stitched_export/", "anysplat/"} <= set(decoders)


def test_shipped_workflows_are_current_and_listed_as_templates(server):
    info = dict(server.object_info())
    info.setdefault("MarkdownNote", {"input": {"required": {}}, "output": [], "output_name": []})
    # each workflow is generated against the ComfyUI it needs: the plain ones on 0.3.75, the native ones on 0.28
    for name, spec in (NATIVE_SPECS if server.version == NATIVE else SPECS).items():
        committed = json.loads((WORKFLOWS / name).read_text())
        assert committed == build_ui(spec(info), info), f"workflows/{name} is stale: python tools/comfy_workflows.py --port N"
    templates = server.get("/workflow_templates")
    assert server.get("/api/workflow_templates") == templates  # the frontends' route
    pack, ours = next((k, v) for k, v in templates.items() if "VIST3A" in k)
    # listed only where they run: the native-splat workflow needs 0.28's nodes (0.3.75 opened it with missing nodes)
    assert sorted(ours) == sorted(Path(n).stem for n in [*SPECS, *(NATIVE_SPECS if server.version == NATIVE else [])])
    # the card subtitles our web extension shows (tools/comfy_workflows.py writes them with the workflows)
    assert json.loads(TEMPLATE_SUMMARIES.read_text()) == template_summaries()
    assert server.get(f"/extensions/{urllib.parse.quote(pack)}/templates.json") == template_summaries()
    for stem in ours:  # the template browser's card picture (tools/thumbnails.py)
        url = f"{server.url}/api/workflow_templates/{urllib.parse.quote(pack)}/{urllib.parse.quote(stem)}.jpg"
        with urllib.request.urlopen(url, timeout=HANG_S) as r:  # the file names are the titles: spaces, parentheses
            assert r.status == 200 and r.read(3) == b"\xff\xd8\xff", stem


def _check_outputs(server, history) -> dict:
    from PIL import Image

    from vist3a.formats import load_ply
    from vist3a.formats.spz import load_spz

    seen = {"ply": 0, "spz": 0, "splat": 0, "images": 0, "preview": 0, "native_ply": 0}
    for node_out in history["outputs"].values():
        result = node_out.get("result") or []
        if result and isinstance(result[0], str) and result[0].endswith(".ply"):  # native Save/Preview Splat
            sub, _, name = result[0].rpartition("/")
            kind = "temp" if name.startswith("preview_splat_") else "output"
            assert load_ply(server.output_path({"filename": name, "subfolder": sub, "type": kind})).num > 0
            seen["native_ply"] += 1
        for item in node_out.get("vist3a_files", []):
            path = server.output_path(item)
            assert path.is_file(), path
            ext = path.suffix[1:]
            seen[ext] += 1
            if ext == "ply":
                g = load_ply(path)
                assert g.num > 0 and g.sh_degree <= 3  # shipped workflows write viewer-safe PLYs
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


@pytest.mark.parametrize("workflow", ["VIST3A text to 3D splats - Wan 1.3B.json", "VIST3A video to 3D splats - AnySplat.json"])
def test_quick_try_runs_as_shipped(server, workflow):
    """The shipped workflow with only Run Size switched to the quick try: the sizes reach the nodes and it runs."""
    api = server.api_from_workflow(WORKFLOWS / workflow, overrides={"VIST3ARunSize": {"run": "quick try (CPU)"}})
    history, seconds = server.run(api)
    assert history["status"]["status_str"] == "success", json.dumps(history["status"], indent=1)[:3000]
    TIMINGS[server.version]["quick " + workflow] = round(seconds, 1)
    seen = _check_outputs(server, history)
    assert seen["ply"] >= 1 and seen["preview"] >= 1, seen
    if "1.3B" in workflow:
        webp = next(o for o in history["outputs"].values() if "images" in o and o["images"][0]["filename"].endswith(".webp"))
        from PIL import Image

        with Image.open(server.output_path(webp["images"][0])) as im:
            assert im.size == (256, 256) and im.n_frames == 8  # the quick try's 8 views at 256²


@pytest.mark.parametrize("workflow", sorted(SPECS) + sorted(NATIVE_SPECS))
def test_shipped_workflow_runs(server, workflow):
    if workflow in NATIVE_SPECS:
        _needs_native(server)
    api = server.api_from_workflow(WORKFLOWS / workflow)
    history, seconds = server.run(api)
    assert history["status"]["status_str"] == "success", json.dumps(history["status"], indent=1)[:3000]
    TIMINGS[server.version][workflow] = round(seconds, 1)
    seen = _check_outputs(server, history)
    if workflow in NATIVE_SPECS:  # native preview/save: a .ply written by ComfyUI that our reader loads
        assert seen["native_ply"] >= 1, seen
    else:
        assert seen["ply"] >= 1 and seen["preview"] >= 1, seen
    assert seen["images"] >= 1 or workflow in NATIVE_SPECS, seen


def test_diffusers_folder_export_and_load_ply(server):
    history, _ = server.run(api_graph())
    assert history["status"]["status_str"] == "success", json.dumps(history["status"])[:3000]
    # Load Wan goes through vist3a.wan.load_wan: the text-encoder file brings its embedded tokenizer (tests/test_wan.py)
    log = server.log_path.read_text(errors="replace")
    assert re.search(r"Load Wan 2\.1: .*text encoder from \S*umt5_xxl_fp8_e4m3fn_scaled\.safetensors; "
                     r"tokenizer from \S*umt5_xxl_fp8_e4m3fn_scaled\.safetensors \(spiece_model\)", log), log[-3000:]
    seen = _check_outputs(server, history)
    assert seen["ply"] == seen["spz"] == seen["splat"] == 1 and seen["images"] == 5  # one view per predicted camera
    item = history["outputs"]["6"]["vist3a_files"][0]
    load = {
        "1": {"class_type": "VIST3ALoadPLY", "inputs": {"file": f"{item['subfolder']}/{item['filename']} [output]", "path": ""}},
        "2": {"class_type": "VIST3APreviewSplats", "inputs": {"splat": ["1", 0], "max_splats": 1000}},
        "3": {"class_type": "VIST3ARenderViews", "inputs": {"splat": ["1", 0], "mode": "orbit", "views": 2, "width": 32, "height": 32,
                                                            "fov": 50.0, "elevation": 15.0, "background": "white"}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    server._object_info = None  # the new file shows up in Load PLY's list on the next /object_info
    history, _ = server.run(load)
    assert history["status"]["status_str"] == "success", json.dumps(history["status"])[:3000]
    assert history["outputs"]["2"]["vist3a_splats"][0]["count"] <= 1000


def test_load_ply_reads_official_layout(server):
    """A PLY written the official way (DC only, opacity stored linear) loads with its opacities as they are:
    Save PLY writes them back (as logits) and they come back equal, not squashed through a sigmoid."""
    import torch
    from helpers import QUANTISABLE_SH, random_gaussians, write_official_ply

    from vist3a.formats import load_ply

    scene = random_gaussians(300, 0, 5, **QUANTISABLE_SH)
    path = server.base / "input" / "official_gaussians.ply"  # Load PLY reads only inside ComfyUI's folders
    write_official_ply(path, scene)
    first = server.object_info()["VIST3ALoadPLY"]["input"]["required"]["file"][1]["options"][0]
    graph = {
        "1": {"class_type": "VIST3ALoadPLY", "inputs": {"file": first, "path": str(path), "opacity": "auto"}},
        "2": {"class_type": "VIST3ASavePLY", "inputs": {"splat": ["1", 0], "filename_prefix": "tests/official", "sh_degree": "0",
                                                       "also_splat": False, "also_spz": False}},
    }
    history, _ = server.run(graph)
    assert history["status"]["status_str"] == "success", json.dumps(history["status"])[:3000]
    saved = load_ply(server.output_path(history["outputs"]["2"]["vist3a_files"][0]), opacity="logit")
    torch.testing.assert_close(saved.opacities, scene.opacities, atol=1e-5, rtol=0)


def test_save_ply_writes_glb_and_load_ply_reads_it_back(server):
    """Save PLY's also_glb writes the glTF splats next to the PLY; Load PLY reads that .glb (in ComfyUI's output
    folder) and Save PLY writes the same scene again; a .glb that holds a mesh is refused in one sentence."""
    import torch
    from helpers import IN_FRONT_OF_CAMERA, random_gaussians, triangle_glb_doc, write_glb

    from vist3a.formats import load_glb, load_ply, save_ply

    scene = random_gaussians(200, 3, 8, **IN_FRONT_OF_CAMERA)
    path = save_ply(scene, server.base / "input" / "glb_source.ply")
    first = server.object_info()["VIST3ALoadPLY"]["input"]["required"]["file"][1]["options"][0]
    save = {"filename_prefix": "tests/glb", "sh_degree": "full", "also_splat": False, "also_spz": False}
    history, _ = server.run({
        "1": {"class_type": "VIST3ALoadPLY", "inputs": {"file": first, "path": str(path), "opacity": "auto"}},
        "2": {"class_type": "VIST3ASavePLY", "inputs": {"splat": ["1", 0], **save, "also_glb": ".glb"}},
    })
    assert history["status"]["status_str"] == "success", json.dumps(history["status"])[:3000]
    files = history["outputs"]["2"]["vist3a_files"]
    assert [f["filename"][-4:] for f in files] == [".ply", ".glb"], files
    torch.testing.assert_close(load_glb(server.output_path(files[1])).sh, scene.sh, rtol=0, atol=0)
    in_output = server.base / "output" / files[1]["subfolder"] / files[1]["filename"]  # where the server wrote it
    history, _ = server.run({
        "1": {"class_type": "VIST3ALoadPLY", "inputs": {"file": first, "path": str(in_output), "opacity": "auto"}},
        "2": {"class_type": "VIST3ASavePLY", "inputs": {"splat": ["1", 0], **save}},
    })
    assert history["status"]["status_str"] == "success", json.dumps(history["status"])[:3000]
    again = load_ply(server.output_path(history["outputs"]["2"]["vist3a_files"][0]))
    for name in ("means", "scales", "opacities", "sh"):
        torch.testing.assert_close(getattr(again, name), getattr(scene, name), rtol=0, atol=1e-6)
    mesh = write_glb(server.base / "input" / "a_mesh.glb", *triangle_glb_doc())
    history, _ = server.run({"1": {"class_type": "VIST3ALoadPLY", "inputs": {"file": first, "path": str(mesh), "opacity": "auto"}},
                             "2": {"class_type": "VIST3ASavePLY", "inputs": {"splat": ["1", 0], **save}}})
    assert history["status"]["status_str"] == "error"
    msg = _error(history)["exception_message"].strip()
    assert "\n" not in msg and "KHR_gaussian_splatting" in msg and "a_mesh.glb" in msg, msg


def test_splat_outputs_sh_degree_3_unless_full_is_asked(server):
    """A degree-4 PLY (what AnySplat predicts) through Load PLY: SPLAT carries degree 3 by default, all 4 with
    sh_degree full (Save PLY 'full' writes what the SPLAT carries)."""
    from helpers import QUANTISABLE_SH, random_gaussians

    from vist3a.formats import load_ply, save_ply

    save_ply(random_gaussians(200, 4, 3, **QUANTISABLE_SH), server.base / "input" / "degree4.ply")
    server._object_info = None  # the new file shows up in Load PLY's list
    first = server.object_info()["VIST3ALoadPLY"]["input"]["required"]["file"][1]["options"][0]
    degrees = {}
    for choice in ("3", "full"):
        graph = {"1": {"class_type": "VIST3ALoadPLY", "inputs": {"file": first, "path": "degree4.ply", "sh_degree": choice}},
                 "2": {"class_type": "VIST3ASavePLY", "inputs": {"splat": ["1", 0], "filename_prefix": "tests/degree", "sh_degree": "full",
                                                                "also_splat": False, "also_spz": False}}}
        history, _ = server.run(graph)
        assert history["status"]["status_str"] == "success", json.dumps(history["status"])[:3000]
        degrees[choice] = load_ply(server.output_path(history["outputs"]["2"]["vist3a_files"][0])).sh_degree
    assert degrees == {"3": 3, "full": 4}, degrees


def _error(history) -> dict:
    return next(m[1] for m in history["status"]["messages"] if m[0] == "execution_error")


def test_save_nodes_refuse_a_prefix_outside_the_output_folder(server):
    """Save PLY numbers its files by ComfyUI's saver rules (model_files.output_folder, shared with Splats to Mesh):
    a prefix that climbs out of output/ is refused in one sentence naming the prefix, and nothing is written."""
    from helpers import IN_FRONT_OF_CAMERA, random_gaussians

    from vist3a.formats import save_ply

    path = save_ply(random_gaussians(100, 1, 9, **IN_FRONT_OF_CAMERA), server.base / "input" / "prefix_source.ply")
    first = server.object_info()["VIST3ALoadPLY"]["input"]["required"]["file"][1]["options"][0]
    save = {"class_type": "VIST3ASavePLY", "inputs": {"splat": ["1", 0], "filename_prefix": "../../escaped", "sh_degree": "3",
                                                      "also_splat": False, "also_spz": False}}
    history, _ = server.run({"1": {"class_type": "VIST3ALoadPLY", "inputs": {"file": first, "path": str(path), "opacity": "auto"}},
                             "2": save})
    err = _error(history)
    msg = err["exception_message"].strip()
    assert err["node_type"] == "VIST3ASavePLY" and "'../../escaped'" in msg and "output folder" in msg and "\n" not in msg, msg
    assert not list(server.base.glob("escaped*")) and not list(server.base.parent.glob("escaped*"))


def test_failing_prompt_then_good_prompt(server):
    # the official .pth without its AnySplat base: a one-sentence error naming what to do
    history, _ = server.run(api_graph(decoder="anysplat_stitched.pth", anysplat="(none)"))
    assert history["status"]["status_str"] == "error"
    err = _error(history)
    assert err["node_type"] == "VIST3ALoadStitchedDecoder"
    msg = err["exception_message"].strip()
    assert "\n" not in msg and "AnySplat" in msg and msg.endswith("."), msg
    # a file that is not in models/vist3a: refused naming the file (0.28 checks V3 combo values when the
    # prompt is queued; 0.3.75 does not, so there the loader says it while running, with what to do)
    status, body = server.post("/prompt", {"prompt": api_graph(decoder="nope.pth"), "client_id": "vist3a-tests"})
    if server.version == NATIVE:
        assert status == 400 and "nope.pth" in json.dumps(body.get("node_errors")), body
    else:
        assert status == 200, body
        msg = _error(server.wait(body["prompt_id"]))["exception_message"].strip()
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

    pid, _ = server.queue_and_wait_for(graph, sampling, timeout=HANG_S)
    t0 = time.time()
    assert server.post("/interrupt", {})[0] == 200
    history = server.wait(pid, timeout=HANG_S)
    stopped = time.time() - t0
    kinds = [m[0] for m in history["status"]["messages"]]
    assert "execution_interrupted" in kinds, kinds
    interrupted = next(m[1] for m in history["status"]["messages"] if m[0] == "execution_interrupted")
    assert interrupted["node_type"] == "VIST3ASample"
    # How fast is recorded, not asserted (machine load decides it); that it stopped at all is asserted above.
    TIMINGS[server.version]["cancel_s"] = round(stopped, 2)
    # and the next prompt runs normally
    history, _ = server.run(api_graph(steps=2))
    assert history["status"]["status_str"] == "success"


# ------------------------------------------------------------------------------------ Cancel in every stage
# Each case makes one stage long on purpose, presses Cancel once the stage has reported some progress, and
# requires the run to end interrupted at that node with the stage's progress below its end: it stopped before
# the stage would have finished, counted in the stage's own work units (frames, blocks, views), not seconds.
# Text encoding has the same hooks but takes under a second with the tiny UMT5 (tests/test_block_hooks.py).

def _loaders() -> dict:
    return {
        "1": {"class_type": "VIST3ALoadWan", "inputs": {"model": "Wan2.1-T2V-1.3B-Diffusers/", "text_encoder": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                                        "vae": "(from the diffusers folder)", "dtype": "fp32", "device": "cpu", "offload": "none"}},
        "4": {"class_type": "VIST3ALoadStitchedDecoder", "inputs": {"decoder": "vist3a_stitched_export/", "anysplat": "(none)",
                                                                    "precision": "fp32", "device": "auto"}},
    }


def _decode_graph(frames: int, size: int, native_vae: bool = False, seed: int = 0) -> dict:
    """An empty Wan latent of `frames` frames at `size`² -> Decode Splats -> Save PLY (no sampling to wait for)."""
    g = _loaders()
    g["2"] = {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": size, "height": size, "length": frames, "batch_size": 1}}
    vae = ["1", 0]
    if native_vae:
        g["8"] = {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}}
        vae = ["8", 0]
    g["5"] = {"class_type": "VIST3ADecodeSplats", "inputs": {"latent": ["2", 0], "vae": vae, "decoder": ["4", 0], "voxelize": "off",
                                                           "min_opacity": 0.001 * (1 + seed)}}  # seed: not cached
    g["6"] = {"class_type": "VIST3ASavePLY", "inputs": {"splat": ["5", 0], "filename_prefix": "tests/cancel", "sh_degree": "0",
                                                       "also_splat": False, "also_spz": False}}
    return g


def _render_graph(mode: str, views: int, size: int, frames: int, seed: int) -> dict:
    g = _decode_graph(frames, 64, seed=seed)
    g["7"] = {"class_type": "VIST3ARenderViews", "inputs": {"splat": ["5", 0], "cameras": ["5", 1], "mode": mode, "views": views,
                                                           "width": size, "height": size, "fov": 50.0, "elevation": 15.0, "background": "black"}}
    g["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}}
    return g


def _images_graph(size: int, seed: int) -> dict:
    return {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "vist3a_example_orbit.mp4"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "VIST3ALoadAnySplat", "inputs": {"anysplat": "anysplat/", "precision": "fp32", "device": "auto"}},
        "5": {"class_type": "VIST3AImagesToSplats", "inputs": {"anysplat": ["3", 0], "images": ["2", 0], "max_views": 9, "size": size,
                                                             "resize": "crop square", "voxelize": "off", "min_opacity": 0.001 * (1 + seed)}},
        "6": {"class_type": "VIST3ASavePLY", "inputs": {"splat": ["5", 0], "filename_prefix": "tests/cancel", "sh_degree": "0",
                                                       "also_splat": False, "also_spz": False}},
    }


# case: (graph, node, cancel once its progress is >= this, the stage ends at this progress value)
CANCEL_CASES = {
    # 11 latent frames at 256²: the bar moves 0 -> 30 over the frames; Cancel after the second frame started
    "VAE decode": (lambda: _decode_graph(41, 256, seed=1), "5", 5, 30),
    "VAE decode, ComfyUI's VAE": (lambda: _decode_graph(41, 256, native_vae=True, seed=2), "5", 5, 30),
    # the stitched decoder on 41 frames: its blocks move the bar 30 -> 100; Cancel after the first block
    "stitched decode": (lambda: _decode_graph(41, 256, seed=3), "5", 31, 100),
    # plain AnySplat on 9 views at 896²: 0 -> 100 over its blocks
    "Images to Splats": (lambda: _images_graph(896, seed=4), "5", 1, 100),
    "Render Views orbit": (lambda: _render_graph("orbit", 400, 256, 5, seed=5), "7", 8, 400),
    "Render Views trajectory": (lambda: _render_graph("trajectory", 1, 384, 21, seed=6), "7", 20, 1000),
}


@pytest.mark.parametrize("case", list(CANCEL_CASES))
def test_cancel_stops_every_long_stage_before_it_ends(server, case):
    graph, node, started_at, end = CANCEL_CASES[case]
    run = server.watch(graph(), cancel_when=lambda kind, d: kind == "progress" and d.get("node") == node and d["value"] >= started_at)
    values = run["progress"].get(node, [])
    assert run["end"] == "execution_interrupted", (case, run["end"], json.dumps(run["end_data"])[:2000], values[-5:])
    assert run["end_data"]["node_id"] == node, run["end_data"]
    assert max(values) >= started_at and max(values) < end, (case, values)  # stopped inside the stage, before its end
    TIMINGS[server.version][f"cancel_s {case}"] = round(run["after_s"], 2)  # recorded, not asserted (load decides it)
    history, _ = server.run(api_graph(steps=2))  # and the server goes on
    assert history["status"]["status_str"] == "success"


def test_non_finite_inputs_are_refused(server):
    """ComfyUI checks a FLOAT only against its min/max, which NaN passes, and the API's JSON may carry NaN or
    Infinity: the node refuses it with one sentence naming the input."""
    for name, value in (("cfg", float("nan")), ("shift", float("inf"))):
        graph = api_graph(steps=2)
        graph["3"]["inputs"][name] = value
        status, body = server.post("/prompt", {"prompt": graph, "client_id": "vist3a-tests"})
        if status != 200:  # a ComfyUI that validates finiteness itself is fine too, as long as it names the input
            assert name in json.dumps(body), body
            continue
        err = _error(server.wait(body["prompt_id"]))
        msg = err["exception_message"].strip()
        assert err["node_type"] == "VIST3ASample" and f"'{name}'" in msg and "finite number" in msg and "\n" not in msg, msg


def test_nodes_say_what_they_are_doing(server):
    """Every long node shows what it is doing and the time left as progress text, where the user looks; an empty
    prompt is said on Text Encode."""
    graph = api_graph(steps=3)
    graph["2"]["inputs"]["prompt"] = "  "
    graph["3"]["inputs"]["seed"] = 4242
    run = server.watch(graph)
    assert run["end"] == "execution_success", run["end_data"]
    texts = run["texts"]
    assert texts.get("2") and texts["2"][0].startswith("The prompt is empty"), texts.get("2")
    assert any("\nPrompt: layer" in t for t in texts["2"]), texts["2"]  # below the note, which stays on top
    assert "Sampling: step 0 of 3" in texts["3"][0] and "Sampling: step 3 of 3" in texts["3"][-1], texts["3"]
    assert any("VAE decode: latent frame" in t for t in texts["5"]) and "Decoding splats: block" in texts["5"][-1], texts["5"]
    assert "Rendering: view 5 of 5" in texts["7"][-1], texts["7"]
    assert "The prompt is empty" in server.log()


def test_cpu_estimate_on_the_node_names_only_what_is_above_the_quick_try(server):
    """At 2048² with 5 frames (already the quick try's) the estimate shows on Sample and advises only the size."""
    graph = api_graph(steps=10)
    graph["3"]["inputs"].update(frames=5, width=2048, height=2048, seed=777)
    run = server.watch(graph, cancel_when=lambda kind, d: kind == "progress_text" and d["node"] == "3")
    estimate = run["texts"]["3"][0]
    assert estimate.startswith("Sample on the CPU: about"), run["texts"]
    assert "lower width/height to 256" in estimate and "frames to" not in estimate and "steps to" not in estimate, estimate
    assert "Run Size" in estimate, estimate
    assert run["end"] == "execution_interrupted", run["end"]


def test_free_releases_cached_models(server):
    """POST /free drops ComfyUI's output cache, which held our loaded models; the next run reloads them."""
    assert server.post("/free", {"unload_models": True, "free_memory": True})[0] == 200
    history, _ = server.run(api_graph(steps=2))
    assert history["status"]["status_str"] == "success"


def test_splats_to_mesh_feeds_preview_3d_and_save_3d_model(server):
    """Decode Splats -> Splats to Mesh (with the predicted cameras) -> ComfyUI's own Preview 3D (the path under
    output/) and Save 3D Model (the MESH); Save PLY's .html option beside it. On both ComfyUI versions."""
    import trimesh

    g = api_graph()
    del g["7"], g["8"]
    g["6"]["inputs"].update(also_splat=False, also_spz=False, also_html=True, cameras=["5", 1])
    g.update({
        "9": {"class_type": "VIST3ASplatsToMesh", "inputs": {"splat": ["5", 0], "cameras": ["5", 1], "format": "glb", "views": "auto",
                                                            "resolution": 32, "image_size": 64, "orbit_views": 6, "min_component": 0.0,
                                                            "filename_prefix": "tests/mesh"}},
        "10": {"class_type": "Preview3D", "inputs": {"model_file": ["9", 0]}},
        "11": {"class_type": "SaveGLB", "inputs": {"mesh": ["9", 1], "filename_prefix": "tests/native_mesh"}},
    })
    history, seconds = server.run(g)
    assert history["status"]["status_str"] == "success", json.dumps(history["status"])[:3000]
    TIMINGS[server.version]["splats_to_mesh_graph"] = round(seconds, 1)
    out = history["outputs"]
    ours = out["9"]["vist3a_files"][0]
    path = server.output_path(ours)
    assert out["10"]["result"][0] == f"{ours['subfolder']}/{ours['filename']}"  # what Preview 3D loads from output/
    mesh = trimesh.load(path, force="mesh", process=False)
    assert len(mesh.faces) > 0 and path.suffix == ".glb"
    native = server.output_path(out["11"]["3d"][0])  # Save 3D Model wrote the MESH output as its own .glb
    assert len(trimesh.load(native, force="mesh", process=False).faces) == len(mesh.faces)
    html = [f for f in out["6"]["vist3a_files"] if f["filename"].endswith(".html")]
    assert len(html) == 1 and server.output_path(html[0]).read_bytes().startswith(b"<!doctype html>")


def _native_graph(prefix: str) -> dict:
    """Decode Splats -> native Create 3D File -> Preview Splat / Save Splat; the native file back through
    Get Splat -> our Render Views, Preview Splats and Save PLY; Transform Splat + Merge Splats -> our Save PLY."""
    g = api_graph()
    g["6"]["inputs"].update(filename_prefix=f"{prefix}/ours", sh_degree="full", also_splat=False, also_spz=False)
    del g["7"], g["8"]
    view = {"viewport_state": {}, "width": 64, "height": 64}
    g.update({
        "10": {"class_type": "SplatToFile3D", "inputs": {"splat": ["5", 0], "format": "ply"}},
        "11": {"class_type": "PreviewGaussianSplat", "inputs": {"model_3d": ["10", 0], **view}},
        "12": {"class_type": "SaveGaussianSplat", "inputs": {"model_3d": ["10", 0], "filename_prefix": f"{prefix}/native", **view}},
        "13": {"class_type": "File3DToSplat", "inputs": {"model_3d": ["10", 0]}},
        "14": {"class_type": "VIST3ARenderViews", "inputs": {"splat": ["13", 0], "mode": "orbit", "views": 2, "width": 32, "height": 32,
                                                             "fov": 50.0, "elevation": 15.0, "background": "white"}},
        "15": {"class_type": "PreviewImage", "inputs": {"images": ["14", 0]}},
        "16": {"class_type": "VIST3ASavePLY", "inputs": {"splat": ["13", 0], "filename_prefix": f"{prefix}/reread", "sh_degree": "full",
                                                         "also_splat": False, "also_spz": False}},
        "17": {"class_type": "TransformSplat", "inputs": {"splat": ["5", 0], "translate_x": 1.0, "translate_y": 0.0, "translate_z": 0.0,
                                                          "rotate_x": 180.0, "rotate_y": 0.0, "rotate_z": 0.0, "scale_x": 2.0, "scale_y": 2.0, "scale_z": 2.0}},
        "18": {"class_type": "MergeSplat", "inputs": {"splats.splat0": ["5", 0], "splats.splat1": ["17", 0]}},
        "19": {"class_type": "VIST3ASavePLY", "inputs": {"splat": ["18", 0], "filename_prefix": f"{prefix}/merged", "sh_degree": "full",
                                                         "also_splat": False, "also_spz": False}},
        "20": {"class_type": "GetSplatCount", "inputs": {"splat": ["5", 0]}},
        "21": {"class_type": "VIST3APreviewSplats", "inputs": {"splat": ["13", 0], "max_splats": 100000}},
    })
    return g


def test_native_splat_nodes_connect_both_ways(server):
    import torch

    from vist3a.formats import load_ply

    _needs_native(server)
    history, seconds = server.run(_native_graph("tests/native"))
    assert history["status"]["status_str"] == "success", json.dumps(history["status"])[:3000]
    TIMINGS[server.version]["native_splat_graph"] = round(seconds, 1)
    out = history["outputs"]

    def local(node, i=0):
        return server.output_path(out[node]["vist3a_files"][i])

    ours = load_ply(local("6"))
    # the native Save Splat wrote a file; our Load PLY reads it back, through the server, inside output/
    saved = out["12"]["result"][0]
    assert saved.endswith(".ply"), saved
    native = load_ply(server.output_path({"filename": saved.rpartition("/")[2], "subfolder": saved.rpartition("/")[0], "type": "output"}))
    assert ours.sh_degree == native.sh_degree == 3  # Decode Splats' default: what Preview Splat's Spark reads
    # native writer vs ours, and native reader -> our writer: the same splats
    reread = load_ply(local("16"))
    for other in (native, reread):
        assert other.num == ours.num
        torch.testing.assert_close(other.means, ours.means)
        torch.testing.assert_close(other.sh, ours.sh)
        torch.testing.assert_close(other.scales, ours.scales, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(other.opacities, ours.opacities, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(other.rotations.abs(), ours.rotations.abs(), rtol=1e-5, atol=1e-6)
    assert len(out["15"]["images"]) == 2  # Get Splat -> our Render Views and Preview Splats
    assert out["21"]["vist3a_splats"][0]["count"] == ours.num
    # Transform Splat -> Merge Splat (one scene: ours, then the transformed copy) -> our Save PLY
    merged, n = load_ply(local("19")), ours.num
    assert merged.num == 2 * n
    torch.testing.assert_close(merged.means[:n], ours.means)
    torch.testing.assert_close(merged.scales[n:], ours.scales * 2, rtol=1e-5, atol=1e-7)
    load = {"1": {"class_type": "VIST3ALoadPLY", "inputs": {"file": f"{saved} [output]", "path": ""}},
            "2": {"class_type": "VIST3APreviewSplats", "inputs": {"splat": ["1", 0], "max_splats": 100000}}}
    history, _ = server.run(load)
    assert history["status"]["status_str"] == "success", json.dumps(history["status"])[:3000]
    assert history["outputs"]["2"]["vist3a_splats"][0]["count"] == ours.num


def test_load_ply_refuses_paths_outside_comfyui_folders(server, tmp_path):
    import torch

    from vist3a.formats import save_ply
    from vist3a.gaussians import Gaussians

    outside = tmp_path / "secret.ply"
    save_ply(Gaussians(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([[1.0, 0, 0, 0]] * 2), torch.full((2,), 0.5),
                       torch.zeros(2, 3, 1)), outside)
    inp = server.base / "input"
    link = inp / "link_out.ply"
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    server._object_info = None
    # an absolute path outside, ../ traversal (absolute and relative to input/), the listed symlink pointing out
    for path in (str(outside), f"{inp}/../../{outside.relative_to(outside.anchor)}", "../" * 12 + str(outside.relative_to(outside.anchor)), ""):
        graph = {"1": {"class_type": "VIST3ALoadPLY", "inputs": {"file": "link_out.ply", "path": path}},
                 "2": {"class_type": "VIST3APreviewSplats", "inputs": {"splat": ["1", 0], "max_splats": 1000}}}
        history, _ = server.run(graph)
        assert history["status"]["status_str"] == "error", path
        msg = _error(history)["exception_message"].strip()
        if not path and server.version == NATIVE:  # 0.28's folder_paths refuses a listed file that resolves outside itself
            assert "Invalid file path" in msg and "\n" not in msg, msg
            continue
        # what to do first, in one short line; the card's headline is the pack's error, not our module path
        assert msg.startswith(f"Copy secret.ply into {inp.resolve()} ") and "\n" not in msg and len(msg) < 600, msg
        assert "VIST3A_EXTRA_READ_ROOTS" in msg and _error(history)["exception_type"] == "VIST3A.NodeError", _error(history)
