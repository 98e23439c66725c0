"""`python -m vist3a batch PROMPTS.txt -o DIR`: one folder per prompt, sharded over every rank of a torchrun job.

Why: benchmark prompt sets (T3Bench, SceneBench, DPG-bench) have hundreds of prompts; the evaluation reads
one folder per prompt in the layout of the official `inference_t23d.py`:

    DIR/<prompt[:100] without '/'>/prompt.txt  gaussians.ply  gs.mp4  depth.mp4     (official)
                                    frames.png  info.json  cameras.json              (ours)
                                    gaussians.glb / .html ...                        (with --also EXT)

Ranks take `prompts[rank::world_size]` as the official script does (RANK / WORLD_SIZE from torchrun,
gloo for the end-of-run barrier). Each folder is written under a temporary name and renamed when complete,
so a killed rank loses only the prompt it was working on; rerunning skips finished folders, removes the
temporary leftovers and redoes the rest. Rank 0 writes `summary.json` once every rank is done.

Noise: in the portable seed mode every prompt uses the same `--seed`, so a result does not depend on which
rank made it. In the official mode each rank seeds once and its k-th prompt (0-based, counted in its shard)
takes the k-th draw of the stream, as `inference_t23d.py` does; `official_noise` replays the stream up to
that draw, so a prompt redone on resume gets the noise it would have had in one uninterrupted run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Callable, Optional

import torch.distributed as dist

from .atomic import atomic_dir, atomic_write
from .batch_media import save_trajectory_videos
from .formats import save_ply, write_splats
from .mesh.views import save_cameras
from .render.media import save_png_grid
from .render.trajectory import depth_colormap_name
from .scene_view import CameraSet
from .share_html import save_html

NAME_LIMIT = 100  # characters of the prompt used as the folder name (official)
REQUIRED_FILES = ("prompt.txt", "gaussians.ply")


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line, stripped; blank lines are skipped."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompt file {p} does not exist; give a text file with one prompt per line")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"prompt file {p} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"prompt file {p} has no prompts; write one prompt per line")
    return prompts


def folder_names(prompts: list[str]) -> list[str]:
    """Official folder names (`prompt[:100]` without '/'); repeats get ' (2)', ' (3)', ... in file order."""
    names, seen = [], {}
    for prompt in prompts:
        base = prompt[:NAME_LIMIT].replace("/", "").replace("\0", "")
        if base in ("", ".", ".."):
            base = "_"
        n = seen.get(base, 0) + 1
        seen[base] = n
        names.append(base if n == 1 else f"{base} ({n})")
    return names


def shard(items: list, rank: int, world_size: int) -> list:
    return items[rank::world_size]


def _stale_temp(out: Path, name: str) -> list[Path]:
    # atomic_dir's temporary folders: ".<name>.<8 random chars>.tmp" (and ".old" while swapping)
    pattern = re.compile(r"^\." + re.escape(name) + r"\.[a-z0-9_]{8}\.(tmp|old)$")
    return [p for p in out.iterdir() if pattern.match(p.name)] if out.is_dir() else []


def is_done(folder: Path, prompt: str) -> bool:
    """A folder exists only once complete (renamed into place); check it is this prompt's."""
    if not folder.is_dir():
        return False
    try:
        stored = (folder / "prompt.txt").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{folder} exists but has no prompt.txt; it was not written by `batch`: move it or use another -o") from None
    if stored != prompt:
        raise ValueError(f"{folder} holds another prompt ({stored[:60]!r}); prompts sharing their first "
                         f"{NAME_LIMIT} characters need separate output folders: use another -o")
    return True


def settings_for(settings, position: int):
    """The settings of the prompt at ``position`` in this rank's shard: in the official seed mode its noise is
    draw ``position`` of the rank's stream (``prompt_index``); the portable mode uses the settings as given."""
    if getattr(settings, "seed_mode", "portable") != "official":
        return settings
    return replace(settings, prompt_index=position)


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def dist_from_env() -> DistInfo:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun (or any launcher setting them) provides."""
    def env(name: str, default: int) -> int:
        value = os.environ.get(name)
        try:
            return default if value is None else int(value)
        except ValueError:
            raise ValueError(f"environment variable {name}={value!r} is not an integer") from None

    info = DistInfo(env("RANK", 0), env("WORLD_SIZE", 1), env("LOCAL_RANK", 0))
    if not 0 <= info.rank < info.world_size:
        raise ValueError(f"RANK={info.rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={info.world_size})")
    return info


def init_process_group(info: DistInfo) -> bool:
    """gloo group for the final barrier (works on CPU and GPU nodes alike); long timeout, since ranks finish
    their last prompt at different times."""
    if info.world_size <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=info.rank, world_size=info.world_size, timeout=timedelta(hours=48))
    return True


@dataclass
class PromptResult:
    prompt: str
    folder: str
    status: str  # "done" | "skipped" | "failed"
    seconds: float = 0.0
    gaussians: Optional[int] = None
    error: Optional[str] = None


def _write_prompt_folder(tmp: Path, prompt: str, scene, *, pipe, settings, sh_degree, trajectory_t, video_ext,
                         seconds: float, info: DistInfo, also: tuple = ()) -> None:
    mask = os.umask(0)
    os.umask(mask)
    tmp.chmod(0o777 & ~mask)  # mkdtemp makes it 0700; the finished folder gets the usual permissions
    (tmp / "prompt.txt").write_text(prompt, encoding="utf-8")
    save_ply(scene.gaussians, tmp / "gaussians.ply", sh_degree=sh_degree)
    save_cameras(tmp / "cameras.json", scene.c2w, scene.intrinsics, scene.image_size)
    for ext in also:  # the same scene in other formats (capped at what each holds); the page starts from the cameras
        if ext == ".html":
            cams = CameraSet(scene.c2w, scene.intrinsics, scene.image_size)
            save_html(scene.gaussians, tmp / "gaussians.html", sh_degree=sh_degree, cameras=cams, title=prompt[:80])
        else:
            write_splats(scene.gaussians, tmp / f"gaussians{ext}", sh_degree=sh_degree)
    save_trajectory_videos(scene, tmp, t=trajectory_t, ext=video_ext)
    save_png_grid(scene.frames, tmp / "frames.png")
    meta = {
        "prompt": prompt,
        "gaussians": scene.gaussians.num,
        "generate_seconds": round(seconds, 3),
        "stage_seconds": {k: round(v, 3) for k, v in getattr(pipe, "last_timings", {}).items()},
        "settings": asdict(settings),
        "sh_degree": sh_degree,
        "trajectory_interpolation": trajectory_t,
        "depth_colormap": depth_colormap_name(),
        "models": getattr(pipe, "described", {}),
        "rank": info.rank,
        "world_size": info.world_size,
    }
    (tmp / "info.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def run_batch(
    prompts_file: str | Path,
    out_dir: str | Path,
    *,
    load_pipeline: Callable[[], object],
    settings,
    sh_degree: Optional[int] = None,
    trajectory_t: int = 10,
    video_ext: str = "mp4",
    also: tuple = (),
    info: Optional[DistInfo] = None,
    log: Callable[[str], None] = lambda line: print(line, flush=True),
) -> list[PromptResult]:
    """Generate this rank's share of the prompts into `out_dir`; returns one result per prompt of the shard.

    `load_pipeline` is called only when this rank has work left (a finished run loads nothing).
    """
    info = info or DistInfo()
    prompts = read_prompts(prompts_file)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = folder_names(prompts)
    mine = shard(list(zip(prompts, names)), info.rank, info.world_size)
    tag = f"[rank {info.rank}/{info.world_size}]" if info.world_size > 1 else "[batch]"
    todo = [(p, n) for p, n in mine if not is_done(out / n, p)]
    log(f"{tag} {len(mine)} of {len(prompts)} prompts on this rank, {len(mine) - len(todo)} already done")
    pipe = load_pipeline() if todo else None
    if todo and depth_colormap_name() != "matplotlib turbo":
        log(f"{tag} note: matplotlib is not installed, so depth.{video_ext} is coloured by a polynomial fit of "
            f"turbo (up to 26/255 off the official colours; gs.{video_ext} is unaffected): pip install matplotlib")
    results: list[PromptResult] = []
    spent, generated = 0.0, 0
    for i, (prompt, name) in enumerate(mine, 1):
        folder = out / name
        prompt_settings = settings_for(settings, i - 1)
        short = prompt if len(prompt) <= 50 else prompt[:47] + "..."
        if (prompt, name) not in todo:
            results.append(PromptResult(prompt, name, "skipped"))
            log(f"{tag} {i}/{len(mine)} {short!r}: already done, skipped")
            continue
        for stale in _stale_temp(out, name):  # left by a rank killed while writing this prompt
            shutil.rmtree(stale, ignore_errors=True)
        t0 = time.perf_counter()
        try:
            scene, _ = pipe.generate(prompt, prompt_settings)
            with atomic_dir(folder) as tmp:
                _write_prompt_folder(tmp, prompt, scene, pipe=pipe, settings=prompt_settings, sh_degree=sh_degree,
                                     trajectory_t=trajectory_t, video_ext=video_ext,
                                     seconds=time.perf_counter() - t0, info=info, also=also)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad prompt (e.g. out of memory) must not stop the shard
            dt = time.perf_counter() - t0
            results.append(PromptResult(prompt, name, "failed", round(dt, 3), error=f"{type(exc).__name__}: {exc}"))
            log(f"{tag} {i}/{len(mine)} {short!r}: FAILED after {dt:.1f} s: {type(exc).__name__}: {exc}")
            continue
        dt = time.perf_counter() - t0
        spent, generated = spent + dt, generated + 1
        remaining = sum(1 for p, n in mine[i:] if (p, n) in todo)
        eta = spent / generated * remaining
        results.append(PromptResult(prompt, name, "done", round(dt, 3), scene.gaussians.num))
        log(f"{tag} {i}/{len(mine)} {short!r}: {dt:.1f} s, {scene.gaussians.num} Gaussians; "
            f"avg {spent / generated:.1f} s, ETA {_fmt_seconds(eta)}")
    return results


def collect_summary(prompts_file: str | Path, out_dir: str | Path, *, world_size: int, seconds: float,
                    failures: Optional[list[PromptResult]] = None) -> dict:
    """Summary of the whole output folder (all ranks), read back from the prompt folders."""
    prompts = read_prompts(prompts_file)
    out = Path(out_dir)
    failed = {r.prompt: r.error for r in failures or []}
    rows, done = [], 0
    for i, (prompt, name) in enumerate(zip(prompts, folder_names(prompts))):
        folder = out / name
        row = {"index": i, "prompt": prompt, "folder": name, "rank": i % world_size}
        meta_path = folder / "info.json"
        if folder.is_dir() and all((folder / f).is_file() for f in REQUIRED_FILES):
            done += 1
            row["done"] = True
            if meta_path.is_file():
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                row.update(seconds=meta.get("generate_seconds"), gaussians=meta.get("gaussians"))
        else:
            row["done"] = False
            if prompt in failed:
                row["error"] = failed[prompt]
        rows.append(row)
    times = [r["seconds"] for r in rows if r.get("seconds") is not None]
    return {
        "prompts_file": str(prompts_file),
        "total": len(prompts),
        "done": done,
        "missing": [r["folder"] for r in rows if not r["done"]],
        "world_size": world_size,
        "wall_seconds_this_run": round(seconds, 3),
        "mean_generate_seconds": round(sum(times) / len(times), 3) if times else None,
        "prompts": rows,
    }


def write_summary(out_dir: str | Path, summary: dict) -> Path:
    path = Path(out_dir) / "summary.json"
    with atomic_write(path, "w") as f:
        json.dump(summary, f, indent=2)
    return path


def gather_failures(results: list[PromptResult], distributed: bool) -> list[PromptResult]:
    """Every rank's failed prompts on rank 0 (after the barrier implied by the collective)."""
    failures = [r for r in results if r.status == "failed"]
    if not distributed:
        return failures
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, [asdict(r) for r in failures])
    return [PromptResult(**row) for part in gathered for row in (part or [])]


def batch_main(args, load_pipeline: Callable[[object], object], settings) -> int:
    """CLI driver: sharding from the environment, barrier, summary on rank 0. Exit 1 if a prompt failed."""
    info = dist_from_env()
    distributed = init_process_group(info)
    t0 = time.perf_counter()
    try:
        results = run_batch(args.prompts, args.output, load_pipeline=lambda: load_pipeline(info), settings=settings,
                            sh_degree=args.sh_degree, trajectory_t=args.trajectory_interp, video_ext=args.video_ext,
                            also=tuple(getattr(args, "also", ())), info=info)
        failures = gather_failures(results, distributed)
        if info.rank == 0:
            summary = collect_summary(args.prompts, args.output, world_size=info.world_size,
                                      seconds=time.perf_counter() - t0, failures=failures)
            path = write_summary(args.output, summary)
            print(f"{summary['done']}/{summary['total']} prompts done; wrote {path}", flush=True)
            if summary["missing"]:
                print(f"missing: {len(summary['missing'])} (rerun the same command to redo them)", file=sys.stderr)
        if distributed:  # tear gloo down together: a rank that left while another still used the group
            dist.barrier()  # aborted at exit ("terminate called without an active exception")
        return 1 if failures else 0
    finally:
        if distributed:
            dist.destroy_process_group()
