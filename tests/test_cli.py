"""`python -m vist3a`: the tiny end-to-end run and every error path (exit 2, one line, no file)."""

import subprocess
import sys

import pytest
import torch
from guards import HANG_S
from safetensors.torch import save_file

from vist3a import decoders, tiny
from vist3a.formats import load_ply


def run(*args, timeout=HANG_S):
    return subprocess.run([sys.executable, "-m", "vist3a", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def assert_clean_error(proc, *needles):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    proc = run("generate", "a small red barn", "-o", out / "barn.ply", "--tiny", "--frames", 5, "--size", 64,
               "--steps", 3, "--views", out / "views")  # default --sh-degree: 3
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc


def test_generate_tiny_writes_ply_and_views(generated):
    out, proc = generated
    g = load_ply(out / "barn.ply")
    assert g.num > 1000 and g.sh_degree == 3  # the tiny decoder predicts degree 4
    for name in ("predicted_views.png", "orbit.png", "orbit.webp", "context_frames.png", "trajectory.webp", "trajectory_depth.webp"):
        assert (out / "views" / name).stat().st_size > 0
    assert "decoder: tiny random stitched decoder" in proc.stdout


def test_generate_is_reproducible_for_a_seed(generated, tmp_path):
    out, _ = generated
    proc = run("generate", "a small red barn", "-o", tmp_path / "again.ply", "--tiny", "--frames", 5, "--size", 64,
               "--steps", 3)
    assert proc.returncode == 0
    assert torch.equal(load_ply(out / "barn.ply").means, load_ply(tmp_path / "again.ply").means)


def test_empty_prompt_is_said_on_stderr(tmp_path):
    proc = run("generate", "  ", "-o", tmp_path / "o.ply", "--tiny", "--frames", 5, "--size", 64, "--steps", 1)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "note: The prompt is empty: the scene comes from the camera template alone" in proc.stderr


def test_generate_with_exported_decoder(tmp_path):
    decoders.save_stitched_export(tiny.build_tiny_decoder(seed=9), tmp_path / "dec")
    proc = run("generate", "x", "-o", tmp_path / "o.ply", "--tiny", "--decoder", tmp_path / "dec", "--frames", 5,
               "--size", 64, "--steps", 2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"decoder: {tmp_path / 'dec'}" in proc.stdout


def test_info_on_ply_and_exports(generated, tmp_path):
    out, _ = generated
    proc = run("info", out / "barn.ply")
    assert proc.returncode == 0 and "3DGS PLY" in proc.stdout and "SH degree 3" in proc.stdout
    decoders.save_stitched_export(tiny.build_tiny_decoder(), tmp_path / "dec")
    proc = run("info", tmp_path / "dec")
    assert proc.returncode == 0 and "valid stitched decoder (cut enc_blocks_2" in proc.stdout


def test_render_any_ply(generated, tmp_path):
    out, _ = generated
    proc = run("render", out / "barn.ply", "-o", tmp_path / "r.png", "--orbit", 3, "--size", 48, "--video", tmp_path / "r.webp")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r.png").stat().st_size > 0 and (tmp_path / "r.webp").stat().st_size > 0


# Small jobs, so the free-memory check (which depends on what else the machine is doing) never fires before
# the check a case is about.
SMALL = ["--frames", "5", "--size", "64"]


@pytest.mark.parametrize(
    "args, needles",
    [
        (["generate", "x", "-o", "{t}/missing/o.ply", "--tiny"], ["does not exist", "missing"]),
        (["generate", "x", "-o", "{t}/o.obj", "--tiny"], [".ply or .spz or .splat"]),
        (["generate", "x", "-o", "{t}/o.ply"], ["--tiny"]),
        (["generate", "x", "-o", "{t}/o.ply", "--tiny", "--frames", "14", "--size", "64"], ["14"]),
        (["generate", "x", "-o", "{t}/o.ply", "--tiny", "--size", "100", "--frames", "5"], ["100"]),
        (["generate", "x", "-o", "{t}/o.ply", "--tiny", *SMALL, "--sh-degree", "7"], ["--sh-degree"]),
        (["generate", "x", "-o", "{t}/o.ply", "--tiny", *SMALL, "--decoder", "{t}/nope.pth"], ["nope.pth", "does not exist"]),
        (["generate", "x", "-o", "{t}/o.ply", "--tiny", *SMALL, "--decoder", "{t}/wan.safetensors"], ["wan.safetensors", "not a stitched decoder"]),
        (["generate", "x", "-o", "{t}/o.ply", "--tiny", *SMALL, "--decoder", "{t}/garbage.pth"], ["garbage.pth"]),
        (["info", "{t}/garbage.pth"], ["garbage.pth"]),
        (["info", "{t}/nope"], ["nope", "does not exist"]),
        (["render", "{t}/garbage.ply", "-o", "{t}/r.png"], ["garbage.ply"]),
        (["render", "{t}/empty.ply", "-o", "{t}/r.png"], ["empty.ply"]),
        (["render", "{t}/nope.ply", "-o", "{t}/r.png"], ["nope.ply"]),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, needles):
    save_file({"blocks.0.self_attn.q.weight": torch.zeros(4, 4)}, str(tmp_path / "wan.safetensors"))
    (tmp_path / "garbage.pth").write_bytes(b"\x80\x04not a real pickle at all" * 10)
    (tmp_path / "garbage.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nend_header\n\x00")
    (tmp_path / "empty.ply").write_bytes(b"")
    args = [a.format(t=tmp_path) for a in args]
    proc = run(*args)
    assert_clean_error(proc, *[n.format(t=tmp_path) for n in needles])
    for name in ("o.ply", "r.png", "o.obj"):
        assert not (tmp_path / name).exists()
