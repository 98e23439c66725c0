#!/usr/bin/env python
"""Every GPU figure of the performance work in one short run, sized to a 15-minute device window.

Parts, each in its own subprocess (own process group) with its own time limit, so a slow or hung
part cannot eat the others; each writes its JSON into OUT as soon as it has figures:

  e2e_1_3b   1.3B side by side, official path vs ours (13 frames, 512^2, 50 steps, ours compiled)
  e2e_14b    14B, ours under a 24 GiB cap (fewer steps; per-step figures)
  decode     the stitched decode alone (13 frames, 448^2 context), official style vs ours
  gpu_tests  the tests marked `gpu` (tests/test_gpu.py)
  render     gsplat vs torch rasteriser: same image within tolerance, both timings

gsplat's one-time kernel build runs in the background after the first part (so it does not load the
CPU while the side by side is timed); the render part, last, waits for it (the wait counts against
its limit), and the gsplat test is left out of `gpu_tests` if the kernels are not built by then.  After every part
OUT/summary.json and OUT/summary.md are rewritten, so a run cut short still says what it took; the
end prints a one-screen summary against the goals.  OUT holds at most 8 files (the device tool's
limit): the five part JSONs, summary.json, summary.md (with each part's table) and logs.txt.

`--cpu-dry-run` runs the same parts at toy sizes on the CPU (tiny models), writing the same files:
CI runs it so this script cannot rot between GPU draws.  Use bench/gpu_check.sh, not this file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

GOALS = (  # (goal, part, field, op, target)
    ("speedup >= 2.2 (1.3B, text -> 3DGS)", "e2e_1_3b", "speedup", ">=", 2.2),
    ("transformer MFU >= 0.55 (1.3B, ours)", "e2e_1_3b", "mfu", ">=", 0.55),
    ("peak VRAM <= 0.7x official (1.3B)", "e2e_1_3b", "peak_ratio", "<=", 0.7),
    ("14B under 24 GiB (ours, peak)", "e2e_14b", "ours_peak_gib", "<=", 24.0),
)
DRY_LIMIT_S = 240.0  # per part in the CPU dry run: generous, CI machines can be loaded (~10-60 s each there)
RENDER_RESERVE_S = 30.0  # of the render part's limit, kept for rendering after waiting for gsplat's build
EXPECTED = ("e2e_1_3b.json", "e2e_14b.json", "decode.json", "render.json", "gpu_tests.json", "summary.json",
            "summary.md", "logs.txt")


@dataclass
class Part:
    name: str
    argv: list
    limit_s: float
    estimate_s: float  # expected wall time on an H100/H200 (bench/README.md says how it was estimated)
    output: str  # JSON file in OUT
    result: dict = field(default_factory=dict)


def parts(dry: bool, out: Path, scratch: Path) -> list[Part]:
    py = sys.executable
    e2e, j = [py, str(BENCH / "e2e.py")], lambda name: str(out / name)
    if dry:
        toy = ["--device", "cpu", "--model", "tiny", "--frames", "5", "--size", "32", "--steps", "2", "--repeats", "1",
               "--warmup", "0", "--render-views", "0"]
        return [
            # --interleave no: official first, then ours, as on a GPU (and its partial write on the way)
            Part("e2e_1_3b", e2e + toy + ["--interleave", "no", "--out", j("e2e_1_3b.json")], DRY_LIMIT_S, 0,
                 "e2e_1_3b.json"),
            Part("e2e_14b", e2e + toy + ["--memory-cap-gib", "24", "--skip-official", "--out", j("e2e_14b.json")],
                 DRY_LIMIT_S, 0, "e2e_14b.json"),
            Part("decode", [py, str(BENCH / "decode.py"), "--device", "cpu", "--model", "tiny", "--frames", "5", "--size",
                            "32", "--repeats", "1", "--warmup", "0", "--out", j("decode.json")], DRY_LIMIT_S, 0,
                 "decode.json"),
            Part("gpu_tests", pytest_argv(scratch), DRY_LIMIT_S, 0, "gpu_tests.json"),
            Part("render", [py, str(BENCH / "render_compare.py"), "--device", "cpu", "--gaussians", "2000", "--views", "2",
                            "--size", "48", "--repeats", "1", "--warmup", "0", "--out", j("render.json")], DRY_LIMIT_S, 0,
                 "render.json"),
        ]
    return [
        Part("e2e_1_3b", e2e + ["--device", "cuda", "--model", "1.3b", "--compile", "--repeats", "2", "--warmup", "1",
                                "--render-views", "0", "--out", j("e2e_1_3b.json")], 180, 125, "e2e_1_3b.json"),
        Part("e2e_14b", e2e + ["--device", "cuda", "--model", "14b", "--memory-cap-gib", "24", "--skip-official",
                               "--steps", "10", "--repeats", "1", "--warmup", "1", "--render-views", "0",
                               "--out", j("e2e_14b.json")], 120, 75, "e2e_14b.json"),
        Part("decode", [py, str(BENCH / "decode.py"), "--device", "cuda", "--frames", "13", "--size", "512",
                        "--repeats", "5", "--warmup", "1", "--out", j("decode.json")], 45, 30, "decode.json"),
        Part("gpu_tests", pytest_argv(scratch), 60, 35, "gpu_tests.json"),
        Part("render", [py, str(BENCH / "render_compare.py"), "--device", "cuda", "--gaussians", "300000", "--views",
                        "8", "--size", "448", "--repeats", "3", "--warmup", "1", "--out", j("render.json")], 75, 25,
             "render.json"),
    ]


def pytest_argv(scratch: Path, deselect_gsplat: bool = False) -> list:
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "-o", "addopts=-ra",
            str(ROOT / "tests" / "test_gpu.py"), f"--junitxml={scratch / 'junit.xml'}"]
    return argv + (["-k", "not gsplat"] if deselect_gsplat else [])


# ------------------------------------------------------------------------------------- subprocesses


class Job:
    """A subprocess in its own process group (so a time limit also ends what it started, e.g. compile
    workers), output appended to `log`."""

    def __init__(self, name: str, argv: list, log: Path, env: dict):
        self.name, self.argv, self.log = name, argv, log
        self.t0 = time.monotonic()
        self._fh = open(log, "ab")
        self._fh.write(f"\n===== {name}: {' '.join(map(str, argv))}\n".encode())
        self._fh.flush()
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self._fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.ended: float | None = None  # when the process exited (a background job is collected later)
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        self.proc.wait()
        self.ended = time.monotonic()

    def wait(self, timeout: float | None) -> dict:
        timed_out = False
        try:
            rc = self.proc.wait(timeout=None if timeout is None else max(0.0, timeout))
        except subprocess.TimeoutExpired:
            timed_out = True
            self.kill()
            rc = self.proc.returncode
        wall = (self.ended or time.monotonic()) - self.t0
        self._fh.write(f"===== {self.name}: rc {rc}{' (time limit)' if timed_out else ''}, {wall:.1f} s\n".encode())
        self._fh.close()
        return {"rc": rc, "timed_out": timed_out, "wall_s": round(wall, 1)}

    def done(self) -> bool:
        return self.proc.poll() is not None

    def kill(self) -> None:
        for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue


def tail(path: Path, lines: int = 15, start: int = 0) -> str:
    """The last `lines` lines of `path` after byte `start` (one part's output in the shared log)."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


# ------------------------------------------------------------------------------------------ reading


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def junit_to_json(xml_path: Path, out_path: Path, meta: dict) -> dict:
    """pytest's junit XML -> {tests: {name: outcome, message}, counts}."""
    from common import write_json

    res = dict(meta, tests={}, counts={"passed": 0, "failed": 0, "skipped": 0, "error": 0})
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError) as e:
        res["error"] = f"no junit report ({type(e).__name__}: {e})"
        write_json(out_path, res)
        return res
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (el.get("message") or "")[:500]
                break
        res["tests"][case.get("name")] = {"outcome": outcome, "time_s": float(case.get("time") or 0), "message": message}
        res["counts"][outcome] += 1
    write_json(out_path, res)
    return res


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def goals(out: Path, judged: bool) -> list[dict]:
    rows = []
    for goal, part, key, op, target in GOALS:
        res = read_json(out / f"{part}.json") or {}
        value = res.get(key) if not res.get("partial") else None
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        rows.append({"goal": goal, "value": value, "target": target, "met": met, "judged": judged})
    return rows


def figures(out: Path) -> dict:
    """The handful of numbers to read first, from each part's JSON (None where missing)."""
    e13, e14 = read_json(out / "e2e_1_3b.json") or {}, read_json(out / "e2e_14b.json") or {}
    dec, ren, tests = (read_json(out / f) or {} for f in ("decode.json", "render.json", "gpu_tests.json"))
    return {
        "e2e_1_3b": {k: e13.get(k) for k in ("partial", "official_s", "ours_s", "speedup", "official_transformer_step_ms",
                                             "transformer_step_ms", "official_mfu", "mfu", "official_peak_gib",
                                             "ours_peak_gib", "peak_ratio", "official_decode_ms", "decode_ms",
                                             "official_splat_decode_ms", "splat_decode_ms", "compile_s",
                                             "denoise_host_syncs", "max_rel_diff_latent")}
        | {"attention": _get(e13, "ours", "plan", "attention"), "offload": _get(e13, "ours", "plan", "offload")},
        "e2e_14b": {k: e14.get(k) for k in ("partial", "ours_s", "transformer_step_ms", "mfu", "ours_peak_gib",
                                            "denoise_host_syncs")}
        | {"steps": _get(e14, "settings", "steps"), "offload": _get(e14, "ours", "plan", "offload"),
           "streamed_blocks": _get(e14, "ours", "plan", "streamed_blocks")},
        "decode": {"partial": dec.get("partial"), "official_ms": _get(dec, "official", "ms", "median"),
                   "ours_ms": _get(dec, "ours", "ms", "median"), "speedup": dec.get("speedup"),
                   "official_host_syncs": _get(dec, "official", "host_syncs"),
                   "ours_host_syncs": _get(dec, "ours", "host_syncs"), "ours_peak_gib": _get(dec, "ours", "peak_gib")},
        "render": {"torch_ms": _get(ren, "torch", "ms", "median"), "gsplat_ms": _get(ren, "gsplat", "ms", "median"),
                   "speedup": ren.get("speedup"), "psnr_db": _get(ren, "agreement", "psnr_db"),
                   "within_tolerance": _get(ren, "agreement", "within_tolerance"),
                   "gsplat_unavailable": ren.get("gsplat_unavailable")},
        "gpu_tests": {"counts": tests.get("counts"),
                      "failed": [n for n, t in (tests.get("tests") or {}).items() if t["outcome"] in ("failed", "error")]},
    }


# ------------------------------------------------------------------------------------------ summary


def _f(v, digits=2, unit=""):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return f"{v:.{digits}f}{unit}"
    return str(v)


def screen(summary: dict) -> str:
    """The one-screen summary (also the head of summary.md)."""
    dry = summary["mode"] == "cpu-dry-run"
    fig = summary["figures"]
    lines = [f"# GPU check ({summary['mode']}): {summary['device']}",
             f"wall {summary['wall_s']:.0f} s of a {summary['budget_s']:.0f} s budget; {summary['created']}"
             + ("; TOY SIZES ON CPU: plumbing only, not goal figures" if dry else ""), "",
             "| part | status | wall s | limit s | est. GPU s |", "|---|---|---:|---:|---:|"]
    for name, p in summary["parts"].items():
        lines.append(f"| {name} | {p['status']} | {_f(p.get('wall_s'), 0)} | {_f(p.get('limit_s'), 0)} | "
                     f"{_f(p.get('estimate_s'), 0)} |")
    b = summary.get("gsplat_build") or {}
    lines.append(f"| gsplat build (background) | {b.get('status', '-')} | {_f(b.get('wall_s'), 0)} | "
                 f"{_f(b.get('limit_s'), 0)} | |")
    lines += ["", "| goal | value | met |", "|---|---:|---|"]
    for g in summary["goals"]:
        verdict = "-" if g["met"] is None else ("met" if g["met"] else "NOT met")
        note = " (dry run)" if dry and g["met"] is not None else ""
        lines.append(f"| {g['goal']} | {_f(g['value'], 3)} | {verdict}{note} |")
    e, f14, d, r = fig["e2e_1_3b"], fig["e2e_14b"], fig["decode"], fig["render"]
    t = fig["gpu_tests"]
    lines += [
        "",
        f"1.3B: official {_f(e['official_s'], 2)} s / ours {_f(e['ours_s'], 2)} s; "
        f"CFG step {_f(e['official_transformer_step_ms'], 1)} / {_f(e['transformer_step_ms'], 1)} ms; MFU {_f(e['official_mfu'], 3)} / {_f(e['mfu'], 3)}; peak "
        f"{_f(e['official_peak_gib'])} / {_f(e['ours_peak_gib'])} GiB; VAE {_f(e['official_decode_ms'], 0)} / "
        f"{_f(e['decode_ms'], 0)} ms; splats {_f(e['official_splat_decode_ms'], 0)} / {_f(e['splat_decode_ms'], 0)} ms",
        f"      attention {e['attention']}, offload {e['offload']}, compile {_f(e['compile_s'], 0, ' s')}, "
        f"host syncs in loop: {e['denoise_host_syncs']}, max_rel_diff_latent {_f(e['max_rel_diff_latent'], 4)}"
        + (f"  [{e['partial']}]" if e.get("partial") else ""),
        f"14B:  {f14['steps']} steps, CFG step {_f(f14['transformer_step_ms'], 1)} ms, MFU {_f(f14['mfu'], 3)}, peak "
        f"{_f(f14['ours_peak_gib'])} GiB, offload {f14['offload']} ({f14['streamed_blocks']} blocks streamed), "
        f"host syncs: {f14['denoise_host_syncs']}",
        f"decode: official {_f(d['official_ms'], 0)} ms / ours {_f(d['ours_ms'], 0)} ms ({_f(d['speedup'], 2, 'x')}); "
        f"host syncs {d['official_host_syncs']} / {d['ours_host_syncs']}; peak {_f(d['ours_peak_gib'])} GiB",
        f"render: torch {_f(r['torch_ms'], 0)} ms, gsplat {_f(r['gsplat_ms'], 0)} ms ({_f(r['speedup'], 1, 'x')}); "
        + (f"PSNR {_f(r['psnr_db'], 1)} dB, within tolerance: {_f(r['within_tolerance'])}" if r["psnr_db"] is not None
           else f"gsplat: {r['gsplat_unavailable'] or 'not measured'}"),
        f"gpu tests: {t['counts']}" + (f"; failed: {', '.join(t['failed'])}" if t["failed"] else ""),
    ]
    return "\n".join(lines)


def write_summary(summary: dict, out: Path, tables: list[str]) -> None:
    from common import write_json

    from vist3a.atomic import atomic_write

    summary["figures"] = figures(out)
    summary["goals"] = goals(out, judged=summary["mode"] == "gpu")
    write_json(out / "summary.json", summary)
    with atomic_write(out / "summary.md", "w", encoding="utf-8") as f:
        f.write(screen(summary) + "\n\n" + "\n\n".join(tables) + "\n")


# ---------------------------------------------------------------------------------------------- main


def describe_machine(dry: bool) -> str:
    if not dry and shutil.which("nvidia-smi"):
        try:
            r = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)
            if r.stdout.strip():
                return r.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    import platform

    return f"{'cpu' if dry else 'no nvidia-smi'}: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the JSON files (the device tool's $OUT)")
    p.add_argument("--cpu-dry-run", action="store_true", help="toy sizes on the CPU, same files")
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall-time budget of all parts together (default 480 on a GPU, 900 for the dry run)")
    p.add_argument("--only", default=None, help="comma-separated part names to run (default: all)")
    p.add_argument("--gsplat-build-limit-s", type=float, default=300.0)
    args = p.parse_args(argv)

    dry = args.cpu_dry_run
    budget = args.budget_s or (900.0 if dry else 480.0)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="vist3a_gpu_check_"))
    log = out / "logs.txt"
    t_start = time.monotonic()
    deadline = t_start + budget
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(ROOT), env.get("PYTHONPATH")) if x)
    if dry:
        env.setdefault("OMP_NUM_THREADS", "1")
        env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run never touches a GPU, even on a machine that has one
    selected = set(args.only.split(",")) if args.only else None
    plan = [q for q in parts(dry, out, scratch) if selected is None or q.name in selected]
    summary = {"schema": 1, "mode": "cpu-dry-run" if dry else "gpu", "device": describe_machine(dry),
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_s": budget, "wall_s": 0.0,
               "command": " ".join(["bench/gpu_check.sh", *(["--cpu-dry-run", str(out)] if dry else [])]),
               "parts": {q.name: {"status": "pending", "limit_s": q.limit_s, "estimate_s": q.estimate_s or None}
                         for q in plan}}
    tables: list[str] = []
    print(f"gpu_check ({summary['mode']}) on {summary['device']}: {len(plan)} parts, budget {budget:.0f} s, "
          f"results in {out}", flush=True)
    write_summary(summary, out, tables)

    build: Job | None = None
    build_env = dict(env, MAX_JOBS=env.get("MAX_JOBS", "12"))  # of 16 cores; the parts need one or two

    def start_build():
        nonlocal build
        if build is None and any(q.name in ("render", "gpu_tests") for q in plan):
            argv = [sys.executable, str(BENCH / "render_compare.py"), "--build-gsplat"]
            if shutil.which("nice"):
                argv = ["nice", "-n", "10", *argv]
            build = Job("gsplat_build", argv, scratch / "gsplat_build.log", build_env)
            summary["gsplat_build"] = {"status": "running", "limit_s": args.gsplat_build_limit_s}

    def finish_build(wait_s: float, stop: str | None = None) -> None:
        """Collect the build if it is done (waiting up to `wait_s`); `stop`: end it now, saying why."""
        b = summary.get("gsplat_build")
        if build is None or b is None or b["status"] != "running":
            return
        left = 0.0 if stop else args.gsplat_build_limit_s - (time.monotonic() - build.t0)
        if not stop and not build.done() and wait_s < left:
            try:
                build.proc.wait(timeout=max(0.0, wait_s))
            except subprocess.TimeoutExpired:
                return  # still building: look again later
        r = build.wait(timeout=max(0.0, left))
        status = "ok" if r["rc"] == 0 else ("unavailable" if not r["timed_out"] else
                                            f"stopped: {stop}" if stop else "timed out")
        b.update(r, status=status, message=tail(build.log, 3)[-2000:])  # a failed build's error: logs.txt has all
        with open(log, "a", encoding="utf-8") as f:
            f.write(build.log.read_text(errors="replace"))

    for i, part in enumerate(plan):
        info = summary["parts"][part.name]
        waited = 0.0
        if i == 0 and part.name in ("render", "gpu_tests"):  # (--only) nothing to overlap the build with
            start_build()
        if part.name == "render":  # waiting for gsplat's kernels counts against this part's limit
            t_wait = time.monotonic()
            finish_build(wait_s=max(0.0, min(part.limit_s - RENDER_RESERVE_S, deadline - t_wait - RENDER_RESERVE_S)))
            finish_build(wait_s=0.0, stop="not done when the render part started")  # it would load the CPU
            waited = time.monotonic() - t_wait
            info["waited_for_gsplat_build_s"] = round(waited, 1)
            status = (summary.get("gsplat_build") or {}).get("status")
            if status not in (None, "ok"):  # importing gsplat would start another build
                part.argv = part.argv + ["--no-gsplat", f"gsplat build: {status}"]
        if part.name == "gpu_tests":
            finish_build(wait_s=0.0)
            status = (summary.get("gsplat_build") or {}).get("status")
            if status not in (None, "ok"):
                # importing gsplat while its build runs (or after it failed) would start another build
                part.argv = pytest_argv(scratch, deselect_gsplat=True)
                info["note"] = (f"gsplat test deselected (gsplat build: {status}); the render part compares "
                                "gsplat with the torch rasteriser if the build finishes")
        left = deadline - time.monotonic()
        limit = min(part.limit_s - waited, left)
        if limit < 5:
            info.update(status="skipped (no time left in the budget)")
            write_summary(summary, out, tables)
            continue
        print(f"[{time.monotonic() - t_start:5.0f} s] {part.name}: limit {limit:.0f} s ...", flush=True)
        log_start = log.stat().st_size if log.exists() else 0
        r = Job(part.name, part.argv, log, env).wait(timeout=limit)
        status = "ok" if r["rc"] == 0 else ("timed out" if r["timed_out"] else f"failed (rc {r['rc']})")
        if part.name == "gpu_tests":
            res = junit_to_json(scratch / "junit.xml", out / part.output,
                                {"schema": 1, "command": " ".join(map(str, part.argv)), "rc": r["rc"]})
            if r["rc"] == 5:
                status = "no test collected"
            elif res["counts"]["passed"] + res["counts"]["failed"] == 0 and not dry:
                status += "; no test ran"
        got = read_json(out / part.output)
        if got is None:
            status += "; no JSON"
        elif got.get("partial"):
            status += f"; partial: {got['partial']}"
        info.update(r, status=status, limit_s=round(limit, 1))
        md = (out / part.output).with_suffix(".md")
        if md.exists():  # keep OUT within 8 files: each part's table goes into summary.md
            tables.append(md.read_text())
            md.unlink()
        if r["rc"] != 0:
            info["log_tail"] = tail(log, 25, start=log_start)
            tables.append(f"## {part.name}: {status}\n\n```\n{info['log_tail']}\n```")
        print(f"[{time.monotonic() - t_start:5.0f} s] {part.name}: {status} in {r['wall_s']:.0f} s", flush=True)
        summary["wall_s"] = time.monotonic() - t_start
        if i == 0:
            start_build()
        write_summary(summary, out, tables)

    finish_build(wait_s=0.0, stop="the run ended first")
    summary["wall_s"] = time.monotonic() - t_start
    write_summary(summary, out, tables)
    shutil.rmtree(scratch, ignore_errors=True)
    print("\n" + screen(summary), flush=True)
    missing = [f for f in EXPECTED if not (out / f).exists()]
    if missing:
        print(f"missing in {out}: {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
