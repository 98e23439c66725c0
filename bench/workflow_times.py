"""Wall time of every shipped workflow on a running ComfyUI: as shipped, and with Run Size on the quick try.

What a new user waits for after pressing Run, measured the way the UI runs it: each workflows/*.json the
server has the nodes for is converted to an API prompt as the frontend does (tools/comfy_workflows.ui_to_api),
queued, and timed from POST /prompt to the end of the run in /history. The models are whatever the server
serves (`make serve TINY=1` / `make serve28 TINY=1`: the tiny random models), so the figures are the
overhead a CPU user meets around the real models, not a prediction of them.

    make serve TINY=1 PORT=8311 &           # ComfyUI 0.3.75 (or make serve28 for 0.28)
    python bench/workflow_times.py --port 8311 [--only quick|shipped] [--out bench/results/workflow_times_<ver>]

Before each workflow ComfyUI's model cache is emptied (POST /free) so every run loads its models, as a
first run does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
from machine_info import cpu_model  # noqa: E402

from comfy_workflows import ui_to_api  # noqa: E402

QUICK = {"VIST3ARunSize": {"run": "quick try (CPU)"}}


def _get(url: str):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def _post(url: str, body: dict):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"{}")


def runnable(workflow: dict, object_info: dict) -> bool:
    """Whether the server has every node type the workflow uses (the frontend draws notes, reroutes and
    primitives itself; the same set as comfy_nodes/templates.py, which this script cannot import outside ComfyUI)."""
    kinds = {n["type"] for n in workflow["nodes"]} - {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
    return kinds <= set(object_info)


def run_once(base: str, api: dict, limit_s: float) -> tuple[float, str]:
    """Queue `api`, wait for its end; (seconds from queueing to the end, status)."""
    _post(f"{base}/free", {"unload_models": True, "free_memory": True})
    time.sleep(1.0)
    t0 = time.perf_counter()
    pid = _post(f"{base}/prompt", {"prompt": api, "client_id": f"bench-{uuid.uuid4().hex[:8]}"})["prompt_id"]
    while time.perf_counter() - t0 < limit_s:
        h = _get(f"{base}/history/{pid}").get(pid)
        status = (h or {}).get("status", {})
        if status.get("completed") is not None and status.get("status_str") in ("success", "error"):
            return time.perf_counter() - t0, status["status_str"]
        time.sleep(0.5)
    _post(f"{base}/interrupt", {})
    return time.perf_counter() - t0, "timed out"


def with_overrides(api: dict, overrides: dict) -> dict:
    for node in api.values():
        for k, v in overrides.get(node["class_type"], {}).items():
            if k in node["inputs"]:
                node["inputs"][k] = v
    return api


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--only", choices=["quick", "shipped"], help="time only this setting (default: both)")
    ap.add_argument("--workflow", action="append", help="a workflows/ file name (default: every runnable one)")
    ap.add_argument("--limit", type=float, default=7200.0, help="seconds before a run is interrupted and recorded as timed out")
    ap.add_argument("--out", help="results path without extension (default: bench/results/workflow_times_<ComfyUI version>)")
    args = ap.parse_args(argv)
    base = f"http://127.0.0.1:{args.port}"
    stats = _get(f"{base}/system_stats")["system"]
    info = _get(f"{base}/object_info")
    version = stats["comfyui_version"]
    names = args.workflow or sorted(p.name for p in (REPO / "workflows").glob("*.json"))
    settings = [s for s in ("quick", "shipped") if args.only in (None, s)]
    rows = []
    for name in names:
        ui = json.loads((REPO / "workflows" / name).read_text())
        if not runnable(ui, info):
            print(f"skip {name}: ComfyUI {version} lacks its nodes", flush=True)
            continue
        for setting in settings:
            api = with_overrides(ui_to_api(ui, info), QUICK if setting == "quick" else {})
            load = os.getloadavg()[0]
            seconds, status = run_once(base, api, args.limit)
            rows.append({"workflow": name, "setting": setting, "seconds": round(seconds, 1), "status": status,
                         "load_average_before": round(load, 2)})
            print(f"{name} [{setting}]: {seconds:.1f} s ({status})", flush=True)
    out = Path(args.out) if args.out else REPO / "bench" / "results" / f"workflow_times_{version}"
    result = {"comfyui": version, "cpu": cpu_model(), "cores": os.cpu_count(), "models": "as served (tiny random with TINY=1)",
              "command": f"python bench/workflow_times.py --port N{' --only ' + args.only if args.only else ''}", "runs": rows}
    Path(f"{out}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# Shipped workflows, wall time from Run to done (ComfyUI {version}, {result['cpu']}, {result['cores']} cores)", "",
             f"Command: `{result['command']}` against `make serve{'28' if version.startswith('0.28') else ''} TINY=1` (tiny random "
             "models). Each run starts with ComfyUI's model cache emptied. The 1-minute load average before each run says how "
             "busy the machine was (2 cores: above ~2 other work shared them).", "",
             "| workflow | setting | seconds | load before |", "|---|---|---:|---:|"]
    lines += [f"| {r['workflow'][:-5]} | {'quick try (CPU)' if r['setting'] == 'quick' else 'as shipped'} | "
              f"{r['seconds'] if r['status'] == 'success' else r['status']} | {r['load_average_before']} |" for r in rows]
    Path(f"{out}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.json/.md")
    return 0 if all(r["status"] == "success" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
