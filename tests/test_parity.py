"""Parity with the official code on the shipped fixtures (full-size architecture, CPU, fp32)."""

import json
import subprocess
import sys

import pytest
import torch
from guards import HANG_S
from safetensors.torch import load_file, save_file

from vist3a import parity

pytestmark = pytest.mark.slow


def _run(fixture_path):
    ref, meta = parity.load_fixture(fixture_path)
    inputs = {k: v for k, v in ref.items() if k.startswith("input/")}
    model = parity.build_model(meta, inputs)
    parity.fill_model(model, "A", 0, meta["fill_checksums_rule_A"])
    named = parity.run_model(model, inputs)
    del model
    return ref, named


@pytest.fixture(scope="module", params=["stitched", "anysplat", "anysplat_conf"])
def fixture_run(request, fixtures_dir):
    name = request.param if request.param.endswith("_conf") else f"{request.param}_small"
    path = fixtures_dir / f"parity_{name}.safetensors"
    ref, named = _run(path)
    return request.param, ref, named


# Bound for "as close as fp32 on another CPU gets". Measured worst relative error per fixture
# (bench/parity_spread.py, bench/results/parity_spread_*.json): 0 on the Intel Xeon (AMX) the fixtures
# were first matched on; 4.6e-6 .. 6.0e-6 on AMD EPYC (AVX512) with 1 or 2 threads and with oneDNN/MKL
# forced to AVX2/SSE4.1 kernels, always in the raw Gaussian-head density channel. 5e-5 keeps ~8x margin
# over that spread, stays 2x inside the 1e-4 contract, and is 200x below the 1% perturbations that
# the next test requires to fail.
CROSS_CPU_BOUND = 5e-5


def test_fixture_passes_tightly(fixture_run):
    name, ref, named = fixture_run
    report = parity.compare(named, ref, tol=CROSS_CPU_BOUND)
    assert report.passed, [l for l in report.lines if not l.ok]
    # The conf fixture (made with 1 thread) carries the official code's own 1-vs-2-thread noise too (2.2e-6).
    assert report.worst.rel < CROSS_CPU_BOUND
    assert len(report.lines) >= {"stitched": 35, "anysplat": 30, "anysplat_conf": 23}[name]
    assert not report.skipped


def test_every_compared_tensor_fails_when_perturbed_by_one_percent(fixture_run):
    _, ref, named = fixture_run
    baseline = parity.compare(named, ref)
    checked = 0
    for key, value in ref.items():
        if key.startswith(("input/", "ruleB/")) or key.endswith("_index") or key == "vox/num_gaussians":
            continue
        if key.startswith("stats/"):
            bumped = value.clone()
            bumped[2:4] *= 1.01  # abs_sum and l2
        else:
            bumped = value * 1.01
        indices = {k: v for k, v in ref.items() if k.endswith("_index")}
        if key.startswith("vox/gaussians_subset/"):  # voxel rows are matched on the reference means
            indices.update({k: v for k, v in ref.items() if k.startswith("vox/gaussians_subset/")})
        report = parity.compare(named, {**indices, key: bumped})
        failed = {l.name for l in report.lines if not l.ok}
        assert failed, f"perturbing {key} by 1% went unnoticed"
        checked += 1
    assert baseline.passed and checked >= 20


def test_conf_fixture_exercises_render_conf_and_opacity_conf(fixture_run, fixtures_dir):
    name, ref, named = fixture_run
    if name != "anysplat_conf":
        pytest.skip("only the conf fixture has render_conf/opacity_conf on")
    meta = json.loads((fixtures_dir / "parity_anysplat_conf.json").read_text())
    enc = meta["run_config"]["encoder_cfg"]
    assert enc["render_conf"] and enc["opacity_conf"] and not enc["voxelize"] and 0 < enc["conf_threshold"] < 0.5
    # The official run kept the pixels above the conf_threshold quantile of the depth confidence; so did ours.
    assert named["out/gaussians/means"].shape[1] == meta["num_gaussians"] < meta["pixels"]


def test_cli_passes_on_stitched_fixture_including_rule_b(fixtures_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "vist3a", "parity", str(fixtures_dir / "parity_stitched_small.safetensors")],
        capture_output=True, text=True, timeout=HANG_S,  # a hang guard: a loaded 2-core machine needs ~15 min
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rule B: filled 1377 tensors, 1377 checksums verified" in proc.stdout
    assert "ruleB/out/depth" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("parity: PASS")


def test_cli_fails_on_a_perturbed_fixture(fixtures_dir, tmp_path):
    src = fixtures_dir / "parity_anysplat_small.safetensors"
    tensors = load_file(str(src))
    tensors["out/depth"] = tensors["out/depth"] * 1.01
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    (tmp_path / "bad.json").write_text(src.with_suffix(".json").read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "vist3a", "parity", str(tmp_path / "bad.safetensors")],
        capture_output=True, text=True, timeout=HANG_S,  # a hang guard: a loaded 2-core machine needs ~15 min
    )
    assert proc.returncode == 1
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("parity: FAIL") and "out/depth" in proc.stdout


def test_wrong_fill_checksum_is_reported(fixtures_dir):
    meta = json.loads((fixtures_dir / "parity_anysplat_small.json").read_text())
    rows = [list(r) for r in meta["fill_checksums_rule_A"]]
    rows[5][2] += 1.0
    model = parity.AnySplat(parity.AnySplatConfig())
    with pytest.raises(parity.ParityError, match="checksum mismatch for " + rows[5][0]):
        parity.fill_model(model, "A", 0, rows)


def test_missing_metadata_is_a_clear_cli_error(tmp_path):
    save_file({"input/images": torch.zeros(1)}, str(tmp_path / "lonely.safetensors"))
    proc = subprocess.run(
        [sys.executable, "-m", "vist3a", "parity", str(tmp_path / "lonely.safetensors")],
        capture_output=True, text=True, timeout=HANG_S,
    )
    assert proc.returncode == 2
    assert "lonely.json" in proc.stderr and "Traceback" not in proc.stderr
