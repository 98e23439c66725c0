"""`python -m vist3a batch`: official folder layout, sharding, resume after a killed rank (torchrun, 2 CPU ranks)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from guards import HANG_S

from vist3a import batch

ROOT = Path(__file__).resolve().parents[1]
GENERATE = ["--tiny", "--steps", "2", "--size", "64", "--frames", "5", "--sh-degree", "0", "--seed-mode", "official"]
TINY = [*GENERATE, "--trajectory-interp", "2"]
PROMPTS = ["a red chair", "a blue/green vase", "a wooden boat on a lake", "a stone tower"]


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _torchrun(args, **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "vist3a", "batch", *map(str, args)]
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)


def _workers(parent: int) -> dict[int, int]:
    """rank -> pid of torchrun's worker processes."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            env = dict(kv.split("=", 1) for kv in (d / "environ").read_bytes().decode(errors="replace").split("\0") if "=" in kv)
        except (OSError, ValueError):
            continue
        if "RANK" in env:
            found[int(env["RANK"])] = int(d.name)
    return found


# ----------------------------------------------------------------------------------------------- units


def test_folder_names_are_official_and_unique():
    long = "x" * 150
    names = batch.folder_names(["a/b c", long, "a/b c", "///", "ab c"])
    assert names == ["ab c", "x" * 100, "ab c (2)", "_", "ab c (3)"]


def test_shard_matches_official_slicing():
    items = list(range(11))
    shards = [batch.shard(items, r, 4) for r in range(4)]
    assert shards[1] == items[1::4]
    assert sorted(sum(shards, [])) == items


def test_read_prompts_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="one prompt per line"):
        batch.read_prompts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="no prompts"):
        batch.read_prompts(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="not UTF-8"):
        batch.read_prompts(tmp_path / "bin.txt")


def test_folder_of_another_prompt_is_refused(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "prompt.txt").write_text("y")
    with pytest.raises(ValueError, match="another prompt"):
        batch.is_done(tmp_path / "x", "x")


def test_prompt_folder_also_holds_other_formats_and_the_cameras(tmp_path):
    """--also .spz / .html: gaussians.EXT beside gaussians.ply; the page starts from the predicted cameras."""
    from types import SimpleNamespace

    from helpers import random_gaussians

    from vist3a.mesh import load_cameras
    from vist3a.render import orbit_cameras

    c2w, K = orbit_cameras(torch.zeros(3), 6.0, 3, 15.0, 50.0, 32, 32)
    scene = SimpleNamespace(gaussians=random_gaussians(200, sh_degree=1), c2w=c2w, intrinsics=K / 32, depth=torch.ones(3, 32, 32),
                            frames=torch.rand(3, 32, 32, 3), image_size=(32, 32))
    from vist3a.pipeline import GenerateSettings

    batch._write_prompt_folder(tmp_path, "a red chair", scene, pipe=None, settings=GenerateSettings(), sh_degree=None,
                               trajectory_t=1, video_ext="webp", seconds=1.0, info=batch.DistInfo(), also=(".spz", ".html"))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["cameras.json", "depth.webp", "frames.png", "gaussians.html", "gaussians.ply", "gaussians.spz",
                     "gs.webp", "info.json", "prompt.txt"]
    torch.testing.assert_close(load_cameras(tmp_path / "cameras.json").c2w, c2w)
    page = (tmp_path / "gaussians.html").read_text()
    assert "<title>a red chair</title>" in page and '"up_source": "cameras"' in page


def test_stale_temp_matching_is_exact(tmp_path):
    for name in (".a.abcd1234.tmp", ".a.b.abcd1234.tmp", ".a.abcd1234.old", "a", ".ab.abcd1234.tmp"):
        (tmp_path / name).mkdir()
    assert sorted(p.name for p in batch._stale_temp(tmp_path, "a")) == [".a.abcd1234.old", ".a.abcd1234.tmp"]


def test_settings_for_gives_official_prompts_their_shard_position():
    from vist3a.pipeline import GenerateSettings

    portable = GenerateSettings(seed=3)
    assert batch.settings_for(portable, 4) is portable  # one seed for every prompt
    official = GenerateSettings(seed_mode="official", seed=12413)
    assert [batch.settings_for(official, k).prompt_index for k in range(3)] == [0, 1, 2]
    assert batch.settings_for(official, 2).seed == 12413 and official.prompt_index == 0  # a copy, not changed


def _rot(axis_angle):
    a = torch.tensor(axis_angle, dtype=torch.float64)
    theta = a.norm()
    k = a / theta
    K = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(theta) * K + (1 - math.cos(theta)) * K @ K


# ----------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_official_seed_mode_gives_the_kth_prompt_of_each_rank_the_kth_draw(tmp_path):
    """inference_t23d.py seeds each rank once; its k-th prompt takes the k-th draw. Each folder of a 2-rank batch
    is bit-identical to generating that prompt alone with prompt_index k, also for a prompt redone on resume."""
    from dataclasses import replace

    from vist3a.formats import save_ply
    from vist3a.pipeline import GenerateSettings, VIST3APipeline
    from vist3a.wan.seeding import OFFICIAL_SEED

    prompts = ["a red chair", "a blue vase", "a wooden boat", "a stone tower", "a green lamp"]
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n")
    out = tmp_path / "out"
    pipe = VIST3APipeline.load(tiny=True, device="cpu")
    settings = GenerateSettings(frames=5, height=64, width=64, steps=2, seed=OFFICIAL_SEED, seed_mode="official")
    run = dict(load_pipeline=lambda: pipe, settings=settings, sh_degree=0, trajectory_t=0, log=lambda line: None)
    for rank in (0, 1):
        batch.run_batch(path, out, info=batch.DistInfo(rank, 2), **run)

    def alone(prompt, k):
        scene, _ = pipe.generate(prompt, replace(settings, prompt_index=k))
        return save_ply(scene.gaussians, tmp_path / "alone.ply", sh_degree=0).read_bytes()

    expected = {}
    for j, (prompt, name) in enumerate(zip(prompts, batch.folder_names(prompts))):
        k = j // 2  # position in its rank's shard prompts[rank::2]
        expected[name] = alone(prompt, k)
        assert (out / name / "gaussians.ply").read_bytes() == expected[name], (j, k)
        info = json.loads((out / name / "info.json").read_text())
        assert info["settings"]["prompt_index"] == k and info["rank"] == j % 2
    # the draws differ: the third prompt (rank 0, k = 1) generated with the first draw is another scene
    assert alone(prompts[2], 0) != expected[batch.folder_names(prompts)[2]]

    # resume: a prompt whose folder is missing is redone with the draw of its position, not the first one
    redo = batch.folder_names(prompts)[4]  # rank 0, k = 2
    shutil.rmtree(out / redo)
    results = batch.run_batch(path, out, info=batch.DistInfo(0, 2), **run)
    assert [r.status for r in results] == ["skipped", "skipped", "done"]
    assert (out / redo / "gaussians.ply").read_bytes() == expected[redo]


@pytest.mark.slow
def test_batch_two_ranks_kill_and_resume(tmp_path):
    """Two torchrun ranks in the official seed mode; rank 1 killed after the first folder, then resumed."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "out"
    names = batch.folder_names(PROMPTS)

    # 1. start, kill rank 1 as soon as the first prompt folder is complete
    proc = _torchrun([prompts, "-o", out, *TINY])
    deadline = time.monotonic() + 240
    killed = False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and any((out / n).is_dir() for n in names):
                workers = _workers(proc.pid)
                if 1 in workers:
                    os.kill(workers[1], signal.SIGKILL)
                    killed = True
                    break
            time.sleep(0.05)
        log1, _ = proc.communicate(timeout=HANG_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert killed, log1
    assert proc.returncode != 0, log1
    done1 = {n: (out / n / "gaussians.ply").stat() for n in names if (out / n).is_dir()}
    assert 1 <= len(done1) < len(PROMPTS), log1
    assert not (out / "summary.json").exists()
    for n in done1:  # finished folders are complete
        assert sorted(p.name for p in (out / n).iterdir()) == ["cameras.json", "depth.mp4", "frames.png", "gaussians.ply",
                                                             "gs.mp4", "info.json", "prompt.txt"]
    # a temporary folder as a kill during writing leaves it
    todo = [n for n in names if n not in done1]
    stale = out / f".{todo[0]}.abcd1234.tmp"
    stale.mkdir()
    (stale / "gaussians.ply").write_bytes(b"partial")

    # 2. resume: finished prompts untouched, the rest done, leftovers removed, summary written
    proc = _torchrun([prompts, "-o", out, *TINY])
    log2, _ = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 0, log2
    for n, st in done1.items():
        assert (out / n / "gaussians.ply").stat().st_mtime_ns == st.st_mtime_ns
    assert log2.count("already done, skipped") == len(done1), log2
    assert "ETA" in log2
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == summary["total"] == len(PROMPTS) and summary["missing"] == []
    assert summary["world_size"] == 2
    for i, (prompt, name) in enumerate(zip(PROMPTS, names)):
        assert (out / name / "prompt.txt").read_text() == prompt
        info = json.loads((out / name / "info.json").read_text())
        assert info["rank"] == i % 2 and info["world_size"] == 2
        assert summary["prompts"][i]["gaussians"] == info["gaussians"] > 0
    # official seeding across ranks and a resume: the second prompt of each rank is `generate --prompt-index 1`
    for j in (2, 3):
        alone = tmp_path / f"alone{j}.ply"
        proc = subprocess.run([sys.executable, "-m", "vist3a", "generate", PROMPTS[j], "-o", alone, *GENERATE,
                               "--prompt-index", "1"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=HANG_S)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (out / names[j] / "gaussians.ply").read_bytes() == alone.read_bytes(), j
    # the videos hold the interpolated trajectory: (views - 1) * (t + 1) frames (AnySplat's
    # save_interpolated_video appends the last camera after rendering, so it is never drawn)
    frames = _read_mp4(out / names[0] / "gs.mp4")
    views = 5  # tiny decoder: one view per video frame
    assert len(frames) == (views - 1) * 3


def _read_mp4(path):
    import imageio.v2 as imageio

    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        return [f for f in reader]
    finally:
        reader.close()


def test_batch_cli_errors(tmp_path):
    env = _env()
    proc = subprocess.run([sys.executable, "-m", "vist3a", "batch", tmp_path / "nope.txt", "-o", tmp_path / "o", "--tiny"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "prompt file" in proc.stderr and "does not exist" in proc.stderr
    (tmp_path / "p.txt").write_text("a chair\n")
    proc = subprocess.run([sys.executable, "-m", "vist3a", "batch", tmp_path / "p.txt", "-o", tmp_path / "o", "--tiny",
                           "--seed-mode", "official", "--prompt-index", "2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--prompt-index" in proc.stderr
    assert not (tmp_path / "o").exists()
