"""Splat file read/write speed against numpy moving the same bytes.

    python bench/splat_io.py --label after [--views 13 --size 448 --repeats 7]

For .ply, .spz, .splat, .glb and .spz.glb: write (our writer) and read (our reader) of one pixel-aligned
scene (2.6M Gaussians, SH degree 4 by default; .spz and the .glb files keep 3, .splat 0), each the median
of --repeats runs, next to
numpy reading the file's bytes (`fromfile`) and writing them (`tofile`) into a new file, plain and +
fsync, which is what our atomic writers do (a save always creates a new temporary file; numpy rewriting
one existing file is recorded too, `numpy_overwrite_s`).

Writes are timed in rounds, ours and numpy's one after the other, each after `os.sync()` and a short
pause (outside the timing) so that no write pays for the previous one's dirty pages; file deletions are
outside the timing too. Disk speed on a shared VM varies run to run, hence medians of several rounds.

The compact formats are also set against numpy moving the full-precision scene, i.e. the PLY's bytes
(`x_ply_bytes`: what "close to disk speed" means for a file that must be inflated or unpacked; numpy
moving the compressed file's own bytes is a floor no gzip reader can approach). For .spz the gzip step
alone is recorded as well (the floor any .spz reader and writer pays). Peak memory: the anonymous
memory (RssAnon, sampled every 2 ms) one write and one read take beyond what the process held before,
next to the scene's own size (a read's result is one scene; a mapped file's pages are page cache, not
counted). Results go into
bench/results/splat_io.json under --label, so a "before" and an "after" run sit side by side.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scenes import pixel_aligned_scene  # noqa: E402

from common import ROOT, command_line, fmt, now, write_results  # noqa: E402  (puts the repo on sys.path)

SETTLE_S = 0.5


def _rss_anon() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_extra_bytes(fn) -> int:
    """Most anonymous memory ``fn`` held at once beyond the process's before it ran (sampled every 2 ms;
    0 where /proc is missing). What ``fn`` returns is dropped afterwards."""
    import ctypes
    import threading

    try:  # hand freed heap memory back first, or its reuse would hide part of what fn takes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    base, peak, done = _rss_anon(), [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_anon())
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = fn()
    finally:
        done.set()
        watcher.join()
    peak[0] = max(peak[0], _rss_anon())
    del result
    return max(0, peak[0] - base)


def settle() -> None:
    """Flush every dirty page and let the disk go quiet, so the next write starts from the same state."""
    os.sync()
    time.sleep(SETTLE_S)


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    """Median seconds of ``fn`` (reads: the file is in the page cache after the first run)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def timed_writes(writers: dict, path_of: dict, repeats: int) -> dict:
    """Median seconds of each writer, in interleaved rounds; each write creates a new file after settle()."""
    runs = {name: [] for name in writers}
    for _ in range(repeats):
        for name, write in writers.items():
            path_of[name].unlink(missing_ok=True)
            settle()
            t0 = time.perf_counter()
            write()
            runs[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(times), times) for name, times in runs.items()}


def _tofile_fsync(raw: np.ndarray, path: Path) -> None:
    """numpy writing the bytes durably, like our atomic writers (which fsync before the rename)."""
    with open(path, "wb") as f:
        raw.tofile(f)
        f.flush()
        os.fsync(f.fileno())


def _gzip_steps():
    """The gzip (de)compression our .spz writer/reader use (older trees: the standard library at level 6)."""
    try:
        from vist3a.formats.spz import gzip_compress, gzip_decompress
    except ImportError:
        try:  # trees before vist3a/formats/
            from vist3a.splat_formats import gzip_compress, gzip_decompress
        except ImportError:
            return (lambda parts: gzip.compress(b"".join(parts), compresslevel=6, mtime=0)), gzip.decompress
    return gzip_compress, gzip_decompress


def _spread(row: dict, what: str) -> str:
    """Median, and the fastest and slowest run: disk and memory timings here vary run to run."""
    runs = row.get(f"{what}_runs") or []
    extent = f" ({min(runs):.2f}-{max(runs):.2f})" if runs else ""
    return f"{fmt(row[f'{what}_s'], 2)}{extent}"


def markdown(results: dict) -> str:
    """The results table, one section per label."""
    lines = ["# Splat file I/O (median seconds; x = our time / numpy moving the same bytes)", "",
             "x PLY bytes: our time / numpy moving the full-precision scene (the PLY's bytes), for the compact formats. "
             "extra MB: anonymous memory one write / one read held beyond the process's before (the scene itself: "
             "see each heading).", ""]
    for label, run in results["runs"].items():
        scene = f", scene {run['scene_bytes'] / 1e6:.0f} MB in memory" if "scene_bytes" in run else ""
        lines += [f"## {label}: {run['gaussians']:,} Gaussians, SH {run['sh_degree']}{scene}, {run['threads']} threads, {run['date']}",
                  f"`{run['command']}`", "",
                  "| format | MB | write s (runs) | x numpy | x numpy+fsync | x PLY bytes | read s (runs) | x numpy | x PLY bytes | "
                  "gzip alone w / r s | extra MB w / r |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in run["figures"].items():
            gz = f"{fmt(r['gzip_compress_s'], 2)} / {fmt(r['gzip_decompress_s'], 2)}" if "gzip_compress_s" in r else ""
            vs_ply = r.get("x_ply_bytes") or {}
            extra = (f"{r['write_peak_extra_bytes'] / 1e6:.0f} / {r['read_peak_extra_bytes'] / 1e6:.0f}"
                     if "write_peak_extra_bytes" in r else "")
            lines.append(f"| {name} | {r['bytes'] / 1e6:.1f} | {_spread(r, 'write')} | {fmt(r['write_vs_numpy'], 1)} | "
                         f"{fmt(r.get('write_vs_numpy_fsync'), 1)} | {fmt(vs_ply.get('write_vs_numpy_fsync'), 1)} | "
                         f"{_spread(r, 'read')} | {fmt(r['read_vs_numpy'], 1)} | {fmt(vs_ply.get('read_vs_numpy'), 1)} | {gz} | {extra} |")
        lines += ["", run["note"]] if run.get("note") else []
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--views", type=int, default=13)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--degree", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--formats", default="ply,spz,splat,glb,spz.glb")
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    ap.add_argument("--note", default="", help="what was measured (tree, machine state); printed under the table")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "splat_io.json"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

    try:
        from vist3a.formats import read_splats, write_splats
    except ImportError:  # trees before vist3a/formats/
        from vist3a.convert import read_splats, write_splats

    g = pixel_aligned_scene(args.views, args.size, args.degree)
    figures, ply_numpy = {}, None
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for fmt_name in args.formats.split(","):
            path, fresh = Path(tmp) / f"scene.{fmt_name}", Path(tmp) / "numpy_new.bin"
            write_splats(g, path, sh_degree=None)
            raw = np.fromfile(path, np.uint8)
            writes = timed_writes({"ours": lambda: write_splats(g, path, sh_degree=None),
                                   "numpy": lambda: raw.tofile(fresh),
                                   "numpy_fsync": lambda: _tofile_fsync(raw, fresh)},
                                  {"ours": path, "numpy": fresh, "numpy_fsync": fresh}, args.repeats)
            fresh.unlink(missing_ok=True)
            (write_s, write_all), (np_write, _), (np_write_sync, _) = writes["ours"], writes["numpy"], writes["numpy_fsync"]
            read_s, read_all = timed(lambda: read_splats(path), args.repeats)
            np_read, _ = timed(lambda: np.fromfile(path, np.uint8), args.repeats)
            np_overwrite, _ = timed(lambda: raw.tofile(Path(tmp) / "numpy.bin"), args.repeats)
            row = {"bytes": int(raw.size), "write_s": write_s, "read_s": read_s, "write_runs": write_all, "read_runs": read_all,
                   "numpy_write_s": np_write, "numpy_write_fsync_s": np_write_sync, "numpy_overwrite_s": np_overwrite,
                   "numpy_read_s": np_read, "write_vs_numpy": write_s / np_write, "write_vs_numpy_fsync": write_s / np_write_sync,
                   "read_vs_numpy": read_s / np_read}
            row["write_peak_extra_bytes"] = peak_extra_bytes(lambda: write_splats(g, path, sh_degree=None))
            row["read_peak_extra_bytes"] = peak_extra_bytes(lambda: read_splats(path))
            if fmt_name == "ply":
                ply_numpy = {"write_fsync_s": np_write_sync, "read_s": np_read}
            if ply_numpy is not None and fmt_name != "ply":  # against numpy moving the full-precision scene
                row["x_ply_bytes"] = {"write_vs_numpy_fsync": write_s / ply_numpy["write_fsync_s"],
                                      "read_vs_numpy": read_s / ply_numpy["read_s"]}
            if fmt_name == "spz":
                compress, decompress = _gzip_steps()
                payload = decompress(raw.tobytes())
                row["gzip_compress_s"], _ = timed(lambda: compress([payload]), args.repeats)
                row["gzip_decompress_s"], _ = timed(lambda: decompress(raw.tobytes()), args.repeats)
            figures[fmt_name] = row
            print(fmt_name, json.dumps({k: v for k, v in row.items() if not k.endswith("runs")}), flush=True)
            raw = None  # free the bytes before the next format
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    results["runs"][args.label] = {
        "command": command_line(), "date": now(), "gaussians": g.num, "sh_degree": args.degree,
        "scene_bytes": sum(t.numel() * t.element_size() for t in (g.means, g.scales, g.rotations, g.opacities, g.sh)),
        "threads": torch.get_num_threads(), "cpu": os.uname().machine, "torch": torch.__version__, "numpy": np.__version__,
        "figures": figures, **({"note": args.note} if args.note else {}),
    }
    write_results(out, results, markdown(results))


if __name__ == "__main__":
    main()
