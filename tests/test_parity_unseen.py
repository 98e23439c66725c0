"""The parity tool on fixture shapes the public ones do not cover: other seed offsets, more frames than
the DPT chunk of 8, non-square and other sizes. These fixtures come from our own model, so they check
the tool's plumbing; numerical parity itself is tested on the official fixtures."""

import subprocess
import sys

import pytest
import torch
from guards import HANG_S
from safetensors.torch import load_file, save_file

from vist3a import parity

pytestmark = pytest.mark.slow


def _cli(path):
    return subprocess.run([sys.executable, "-m", "vist3a", "parity", str(path)], capture_output=True, text=True, timeout=HANG_S)  # hang guard


def _stitched_inputs(t_vae, side, seed):
    g = torch.Generator().manual_seed(seed)
    frames = (t_vae - 1) * 4 + 1
    z = torch.randn(1, 16, t_vae, side, side, generator=g)
    ctx = (torch.randint(-128, 128, (1, 3, frames, side // 2 * 14, side // 2 * 14), generator=g) / 128).float()
    return {"input/z": z, "input/context_image": ctx}


@pytest.mark.parametrize(
    "inputs, run_config",
    [
        (_stitched_inputs(3, 8, 1), {"seed_offset": 7, "stitching_layer_location": "enc_blocks_2"}),
        ({"input/images": (torch.randint(0, 256, (1, 10, 3, 28, 42), generator=torch.Generator().manual_seed(2)) / 256).float()},
         {"seed_offset": 3}),
    ],
    ids=["stitched-9-frames-offset7", "rgb-10-views-nonsquare-offset3"],
)
def test_unseen_fixture_passes_and_a_perturbation_fails(tmp_path, inputs, run_config):
    path = parity.write_fixture(tmp_path / "fx.safetensors", inputs, run_config)
    proc = _cli(path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("parity: PASS")
    assert "not recognised" not in proc.stdout
    tensors = load_file(str(path))
    tensors["out/pred_context_pose_extrinsic"] = tensors["out/pred_context_pose_extrinsic"] * 1.01
    save_file(tensors, str(path))
    proc = _cli(path)
    assert proc.returncode == 1 and "out/pred_context_pose_extrinsic" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("parity: FAIL")


def test_wrong_seed_offset_is_caught_by_the_checksums(tmp_path):
    path = parity.write_fixture(tmp_path / "fx.safetensors", _stitched_inputs(2, 8, 5), {"seed_offset": 1})
    meta = path.with_suffix(".json")
    meta.write_text(meta.read_text().replace('"seed_offset": 1', '"seed_offset": 2'))
    proc = _cli(path)
    assert proc.returncode == 2 and "fill checksum mismatch" in proc.stderr and "Traceback" not in proc.stderr
