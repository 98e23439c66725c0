"""Splat file read/write speed against numpy moving the same bytes (issue: within 3x of it).

    python bench/splat_io.py --label after [--views 13 --size 448 --repeats 5]

For .ply, .spz and .splat: write (our writer) and read (our reader) of one pixel-aligned scene (2.6M
Gaussians, SH degree 4 by default; .spz keeps 3, .splat 0), each the median of --repeats runs, next to
numpy reading the file's bytes (`fromfile`) and writing them (`tofile`) into a new file each time, also +
fsync, which is what our atomic writers do (a save always creates a new temporary file; numpy rewriting
one existing file is several times faster on ext4 and is recorded too, `numpy_overwrite_s`). For .spz
also the gzip step alone, as the writer and reader run it (the floor any .spz writer pays). Results go
into bench/results/splat_io.json under --label, so a "before" and an "after" run sit side by side.
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


def timed(fn, repeats: int, before=None, after=None) -> tuple[float, list[float]]:
    """Median seconds of ``fn``; ``before`` / ``after`` run outside the timing (deleting files is not writing)."""
    times = []
    for _ in range(repeats):
        if before:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if after:
            after()
    return statistics.median(times), times


def _tofile_fsync(raw: np.ndarray, path: Path) -> None:
    """numpy writing the bytes durably, like our atomic writers (which fsync before the rename)."""
    with open(path, "wb") as f:
        raw.tofile(f)
        f.flush()
        os.fsync(f.fileno())


def _gzip_steps():
    """The gzip (de)compression our .spz writer/reader use (older trees: the standard library at level 6)."""
    try:
        from vist3a.splat_formats import gzip_compress, gzip_decompress
    except ImportError:
        return (lambda parts: gzip.compress(b"".join(parts), compresslevel=6, mtime=0)), gzip.decompress
    return gzip_compress, gzip_decompress


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--views", type=int, default=13)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--degree", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--formats", default="ply,spz,splat")
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "splat_io.json"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

    from vist3a.convert import read_splats, write_splats

    g = pixel_aligned_scene(args.views, args.size, args.degree)
    figures = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for fmt_name in args.formats.split(","):
            path = Path(tmp) / f"scene.{fmt_name}"
            # every write creates a new file, ours and numpy's alike; deleting the last one is not timed
            write_s, write_all = timed(lambda: write_splats(g, path, sh_degree=None), args.repeats,
                                       before=lambda: path.unlink(missing_ok=True))
            read_s, read_all = timed(lambda: read_splats(path), args.repeats)
            raw = np.fromfile(path, np.uint8)
            np_read, _ = timed(lambda: np.fromfile(path, np.uint8), args.repeats)
            fresh = Path(tmp) / "numpy_new.bin"
            gone = lambda: fresh.unlink(missing_ok=True)  # noqa: E731
            np_write, _ = timed(lambda: raw.tofile(fresh), args.repeats, before=gone, after=gone)
            np_write_sync, _ = timed(lambda: _tofile_fsync(raw, fresh), args.repeats, before=gone, after=gone)
            np_overwrite, _ = timed(lambda: raw.tofile(Path(tmp) / "numpy.bin"), args.repeats)
            row = {"bytes": int(raw.size), "write_s": write_s, "read_s": read_s, "write_runs": write_all, "read_runs": read_all,
                   "numpy_write_s": np_write, "numpy_write_fsync_s": np_write_sync, "numpy_overwrite_s": np_overwrite,
                   "numpy_read_s": np_read, "write_vs_numpy": write_s / np_write, "write_vs_numpy_fsync": write_s / np_write_sync,
                   "read_vs_numpy": read_s / np_read}
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
        "threads": torch.get_num_threads(), "cpu": os.uname().machine, "torch": torch.__version__, "numpy": np.__version__,
        "figures": figures,
    }
    lines = ["# Splat file I/O (median seconds; x = our time / numpy moving the same bytes)", ""]
    for label, run in results["runs"].items():
        lines += [f"## {label}: {run['gaussians']:,} Gaussians, SH {run['sh_degree']}, {run['threads']} threads, {run['date']}",
                  f"`{run['command']}`", "", "| format | MB | write s | x numpy | x numpy+fsync | read s | x numpy | gzip alone w / r s |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in run["figures"].items():
            gz = f"{fmt(r['gzip_compress_s'], 2)} / {fmt(r['gzip_decompress_s'], 2)}" if "gzip_compress_s" in r else ""
            lines.append(f"| {name} | {r['bytes'] / 1e6:.1f} | {fmt(r['write_s'], 2)} | {fmt(r['write_vs_numpy'], 1)} | {fmt(r.get('write_vs_numpy_fsync'), 1)} | "
                         f"{fmt(r['read_s'], 2)} | {fmt(r['read_vs_numpy'], 1)} | {gz} |")
        lines += ["", run["note"]] if run.get("note") else []
        lines.append("")
    write_results(out, results, "\n".join(lines))


if __name__ == "__main__":
    main()
