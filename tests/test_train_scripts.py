"""The three training scripts end to end on 2 CPU ranks (gloo, fp32, tiny models, synthetic data):
torchrun and the deepspeed launcher, ZeRO-2/3 against a single process, SIGKILL + resume, and the
exports loaded back by the core library."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
from guards import HANG_S
from train_helpers import BIN, REPO, TINY, logged_losses, run_ok, torchrun_cmd, train_env

pytestmark = pytest.mark.slow

ZERO_ARGS = ["--max-steps", "3", "--set", "models.layer_search=none", "--set", "stitch.view_counts=[5]"]


# ------------------------------------------------------------------------------ the Done-means chain


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    d = tmp_path_factory.mktemp("chain")
    logs = {}
    logs["find_layer"] = run_ok(torchrun_cmd("find_layer", d, "--max-steps", "2", "--save-every", "1"))
    logs["find_layer_resume"] = run_ok(torchrun_cmd("find_layer", d))  # config max_steps 4: resumes at 2
    logs["stitch"] = run_ok(torchrun_cmd("stitch", d))
    logs["align"] = run_ok(torchrun_cmd("align", d))
    logs["align_resume"] = run_ok(torchrun_cmd("align", d, "--max-steps", "4"))
    return d, logs


def test_find_layer_result(chain):
    d, logs = chain
    result = json.loads((d / "layer_search.json").read_text())
    mse = result["mse_per_layer"]
    assert set(mse) == {f"enc_blocks_{k}" for k in range(1, 5)}  # every DINO block of the tiny AnySplat
    assert result["chosen_layer"] == min(mse, key=mse.get) and result["chosen_cut"] == int(result["chosen_layer"][-1])
    from safetensors.torch import load_file

    w = load_file(str(d / "stitching_layer.safetensors"))
    assert w["weight"].shape == (64, 16, 5, 3, 3) and w["bias"].shape == (64,)
    assert "rank 0 of 2" in logs["find_layer"] and "resumed from step 2" in logs["find_layer_resume"]
    assert result["steps"] == 4 and result["num_rows"] == 4 * 2 * 9 * 4 * 4  # steps x clips x views x tokens


def test_stitched_export_loads_in_both_formats(chain, tmp_path):
    from vist3a import weights as wt
    from vist3a.decoders import load_stitched_decoder

    d, logs = chain
    folder = d / "export" / "stitched_decoder"
    manifest = wt.read_manifest(folder)
    assert manifest["format"] == "vist3a.stitched" and manifest["files"]["checkpoint"] == "anysplat_stitched.pth"
    merged = load_stitched_decoder(folder)
    pth = wt.safe_torch_load(folder / "anysplat_stitched.pth")
    assert list(pth) == list(wt.STITCHED_PTH_TOP_KEYS)
    expected = wt.expected_lora_keys(merged.state_dict(), rank=64)
    assert list(pth["lora"]) == list(expected) and all(tuple(pth["lora"][k].shape) == s for k, s in expected.items())
    assert all(pth["lora"][k].dtype == torch.float32 for k in pth["lora"] if "lora_" in k)
    # the official .pth alone (no manifest) on top of the AnySplat base gives the same decoder
    lone = tmp_path / "anysplat_stitched.pth"
    shutil.copy(folder / "anysplat_stitched.pth", lone)
    official = load_stitched_decoder(lone, anysplat=d / "export" / "anysplat_base")
    a, b = merged.state_dict(), official.state_dict()
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    # the fine-tune changed it: LoRA deltas and trained biases/tokens differ from the tiny base decoder
    from vist3a.tiny import build_tiny_anysplat

    base = wt.stitched_from_anysplat(build_tiny_anysplat(0).state_dict(), 2)
    assert sum(not torch.equal(a[k], base[k]) for k in base) > 100


def test_lora_export_loads_and_drives_generation(chain):
    from vist3a.decoders import load_stitched_decoder
    from vist3a.wan import apply_vist3a_lora, decode_latents, encode_prompt, load_vist3a_lora, sample_latents
    from vist3a.wan.tiny import build_tiny_wan

    d, logs = chain
    for name in ("vist3a_lora_ema", "vist3a_lora"):
        folder = d / "export" / name
        assert (folder / "adapter_config.json").is_file() and (folder / "vist3a_manifest.json").is_file()
        lora = load_vist3a_lora(folder)
        assert lora.rank == 8 and lora.alpha == 16 and lora.num_blocks == 2
        assert all(k.startswith("blocks.") for k in lora.state_dict)
    wan = build_tiny_wan(0)
    apply_vist3a_lora(wan.transformer, d / "export" / "vist3a_lora_ema")
    emb = encode_prompt(wan, ["a red car"], max_sequence_length=32)
    z = sample_latents(wan, emb, None, num_frames=5, height=64, width=64, steps=2, cfg=1.0, seed=0)
    frames = decode_latents(wan, z)
    decoder = load_stitched_decoder(d / "export" / "stitched_decoder")
    hw = decoder.cfg.context_size(tuple(z.shape[-2:]))
    ctx = torch.nn.functional.interpolate(frames, size=(frames.shape[2], *hw), mode="trilinear", align_corners=True)
    with torch.no_grad():
        out = decoder.forward_with_latent(z, ctx)
    assert torch.isfinite(out.gaussians[0].means).all() and out.extrinsics.shape == (1, 5, 4, 4)


def test_align_resumes_with_more_steps(chain):
    d, logs = chain
    assert "resumed from step 3" in logs["align_resume"]
    assert [s for s, _ in logged_losses(d, "align")] == [1, 2, 3, 4]
    kept = sorted(p.name for p in (d / "checkpoints" / "align").iterdir())
    assert kept == ["step-00000003", "step-00000004"]  # keep_checkpoints: 2
    events = list((d / "tensorboard").rglob("events.out.tfevents.*"))
    assert {p.parent.name for p in events} >= {"find_layer", "stitch", "align"}


# ------------------------------------------------------------------------- ZeRO vs single process


@pytest.fixture(scope="module")
def zero_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("zero")
    single, z2, z3 = root / "single", root / "zero2", root / "zero3"
    run_ok([sys.executable, "vist3a_train/stitch.py", "--config", TINY, "--output-dir", str(single), "--engine", "torch",
          *ZERO_ARGS])
    run_ok(torchrun_cmd("stitch", z2, *ZERO_ARGS, "--deepspeed-config", "zero2.json"))
    # ZeRO-3 also with gradient checkpointing (blocks and heads recomputed): still the same trajectory
    run_ok(torchrun_cmd("stitch", z3, *ZERO_ARGS, "--deepspeed-config", "zero3.json", "--set", "run.gradient_checkpointing=true"))
    return single, z2, z3


def test_zero2_and_zero3_follow_the_single_process_trajectory(zero_runs):
    from safetensors.torch import load_file

    single, z2, z3 = zero_runs
    ref = logged_losses(single, "stitch")
    assert [s for s, _ in ref] == [1, 2, 3]
    for run in (z2, z3):
        got = logged_losses(run, "stitch")
        assert [s for s, _ in got] == [1, 2, 3]
        for (_, a), (_, b) in zip(ref, got):
            assert b == pytest.approx(a, rel=1e-4), (run.name, ref, got)
    w = [load_file(str(r / "export" / "stitched_decoder" / "model.safetensors")) for r in zero_runs]
    for other in w[1:]:
        assert max(float((w[0][k] - other[k]).abs().max()) for k in w[0]) < 1e-4
    assert (z3 / "checkpoints" / "stitch" / "step-00000003" / "engine" / "deepspeed").is_dir()


# ------------------------------------------------------------------------------- SIGKILL + resume


def test_sigkill_during_checkpoint_then_resume(zero_runs, tmp_path):
    from vist3a_train.common.checkpoint import CheckpointManager

    out = tmp_path / "killed"
    cmd = torchrun_cmd("stitch", out, *ZERO_ARGS, "--save-every", "1", "--deepspeed-config", "zero2.json")
    proc = subprocess.Popen(cmd, cwd=REPO, env=train_env(VIST3A_TRAIN_FAULT="hang_in_save:2"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen, workers = [], []
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)], daemon=True).start()
    deadline = time.time() + HANG_S
    try:
        while len(workers) < 2:
            try:
                line = lines.get(timeout=max(1.0, deadline - time.time()))
            except queue.Empty:
                pytest.fail(f"no fault within {HANG_S:.0f} s:\n" + "".join(seen[-80:]))
            if line is None:
                pytest.fail("the run ended without reaching the fault:\n" + "".join(seen[-80:]))
            seen.append(line)
            workers += [int(pid) for pid in re.findall(r"pid (\d+) hanging inside the checkpoint save of step 2", line)]
        for pid in workers:  # both ranks (each in its own session under torchrun), mid-save
            os.kill(pid, signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)  # and the launcher
        proc.wait(timeout=HANG_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    root = out / "checkpoints" / "stitch"
    assert (root / ".tmp-step-00000002").is_dir()  # the half-written checkpoint is still there ...
    assert [s for s, _ in CheckpointManager(root).complete_checkpoints()] == [1]  # ... and never picked
    log = run_ok(cmd)
    assert "resumed from step 1" in log
    assert not (root / ".tmp-step-00000002").exists()
    got = logged_losses(out, "stitch")
    assert [s for s, _ in got] == [1, 2, 3]
    uninterrupted = logged_losses(zero_runs[1], "stitch")  # same config, never killed
    for (_, a), (_, b) in zip(uninterrupted, got):
        assert b == pytest.approx(a, rel=1e-5)
    assert (out / "export" / "stitched_decoder" / "model.safetensors").is_file()


# ---------------------------------------------------------------------------- the deepspeed launcher


def test_deepspeed_launcher(chain, tmp_path):
    if not (BIN / "deepspeed").exists():
        pytest.skip("the deepspeed launcher is not installed in this environment")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ds"
    log = run_ok([str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(port), "vist3a_train/find_layer.py",
                "--config", TINY, "--output-dir", str(out)], DS_ACCELERATOR="cpu")
    assert "rank 0 of 2" in log
    a = json.loads((out / "layer_search.json").read_text())["mse_per_layer"]
    b = json.loads((chain[0] / "layer_search.json").read_text())["mse_per_layer"]
    assert a == pytest.approx(b, rel=1e-6)  # same statistics whichever launcher, resumed (chain) or not
