"""The evaluation as the official code ran it, against fixtures made by running that code
(tests/fixtures/make_official_runs.py -> tests/fixtures/official_runs/): frame decoding, the metrics-only NVS
mode (calculate_metric.py), DPG-bench (dpg_evaluation.py); plus the precision settings, the unindexed test
sequences, UnifiedReward's all-frames-failed stop and the results file names."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_helpers import OFFICIAL_RUNS, TINY_AESTHETIC_ARCH, tiny_aesthetic, tiny_clip, vgg_file
from PIL import Image

from vist3a.errors import VIST3AError
from vist3a.evaluation import gen, gen_metrics, nvs
from vist3a.evaluation.dpg import DpgBench, read_questions

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
from guards import HANG_S
from make_official_runs import dpg_fake_answer  # noqa: E402


def test_frames_decode_like_the_official_opencv_reader():
    """The official sample_video_frames (OpenCV seek + read, BGR -> RGB) and our imageio reader give the same
    pixels on the mp4s our batch writes."""
    want = np.load(OFFICIAL_RUNS / "decode.npz")
    for name in ("small", "long"):
        got = np.stack([np.asarray(f) for f in gen.sample_frames(OFFICIAL_RUNS / f"decode_{name}.mp4")])
        assert got.shape == want[name].shape and np.array_equal(got, want[name]), name


def _official_csv(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    keys = lines[0].split(",")
    return [dict(zip(keys, line.split(","))) for line in lines[1:]]


def test_metrics_only_mode_matches_official_calculate_metric(tmp_path):
    lpips = pytest.importorskip("lpips")
    from vist3a.evaluation.image_metrics import load_lpips

    out = tmp_path / "run"
    shutil.copytree(OFFICIAL_RUNS / "nvs_metrics" / "images", out / "images")
    torch.manual_seed(0)
    ref = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    res = nvs.score_image_folders(out, lpips_model=load_lpips(vgg_file(tmp_path / "vgg.pth", ref)), log=lambda m: None)
    official = {r["seq"]: r for r in _official_csv(OFFICIAL_RUNS / "nvs_metrics" / "_all_samples.csv")}
    assert [r["seq"] for r in res["per_sequence"]] == sorted(official)
    for row in res["per_sequence"]:
        want = official[row["seq"]]
        assert row["PSNR"] == pytest.approx(float(want["PSNR"]), abs=2e-5)  # official: float32 per image
        assert row["SSIM"] == pytest.approx(float(want["SSIM"]), abs=2e-5)
        folder = out / "images" / row["seq"]
        load = lambda p: torch.from_numpy(np.asarray(Image.open(p))).permute(2, 0, 1).float() / 255  # noqa: E731
        n = len(list((folder / "gt").iterdir()))
        with torch.no_grad():
            lp = [float(ref(load(folder / "pred" / f"{i:06d}.png")[None], load(folder / "gt" / f"{i:06d}.png")[None],
                            normalize=True)) for i in range(n)]
        assert row["LPIPS"] == pytest.approx(float(np.mean(lp)), rel=1e-4, abs=1e-6)
    overall = _official_csv(OFFICIAL_RUNS / "nvs_metrics" / "overall-metric.csv")[0]
    assert res["overall"]["PSNR"] == pytest.approx(float(overall["PSNR"]), abs=2e-5)
    assert res["overall"]["SSIM"] == pytest.approx(float(overall["SSIM"]), abs=2e-5)
    assert (out / "overall-metric.csv").read_text().splitlines()[0] == "PSNR,SSIM,LPIPS"


def _cli(*args, timeout=HANG_S):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "vist3a", "eval", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_metrics_only_cli_and_its_errors(tmp_path):
    shutil.copytree(OFFICIAL_RUNS / "nvs_metrics" / "images", tmp_path / "images")
    proc = _cli("nvs", "--metrics-only", "-o", tmp_path, "--no-lpips")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NVS metrics of 2 sequences" in proc.stdout
    assert json.loads((tmp_path / "nvs_results.json").read_text())["overall"]["LPIPS"] is None
    proc = _cli("nvs", "--metrics-only", "-o", tmp_path / "empty", "--no-lpips")
    assert proc.returncode == 2 and "images does not exist" in proc.stderr and "Traceback" not in proc.stderr
    proc = _cli("nvs", "-o", tmp_path / "x", "--no-lpips")
    assert proc.returncode == 2 and "--index" in proc.stderr and "Traceback" not in proc.stderr


def _parse_official_dpg(text: str) -> dict:
    out, section = {"l1": {}, "l2": {}}, None
    for line in text.splitlines():
        if line.startswith("L1 category"):
            section = "l1"
        elif line.startswith("L2 category"):
            section = "l2"
        elif line.startswith("\t"):
            k, v = line.strip().rsplit(": ", 1)
            out[section][k] = float(v)
        elif line.startswith("DPG-Bench score:"):
            out["score"] = float(line.split(":")[1])
    return out


def test_dpg_bench_matches_the_official_script(tmp_path):
    official = _parse_official_dpg((OFFICIAL_RUNS / "dpg" / "dpg_bench_results.txt").read_text())
    logs = []
    bench = DpgBench(read_questions(OFFICIAL_RUNS / "dpg" / "questions.csv"), dpg_fake_answer, log=logs.append)
    res = gen.run_gen_eval(OFFICIAL_RUNS / "dpg" / "batch", {"dpg": bench}, tmp_path, log=lambda m: None)
    assert res["dpg"]["score"] == pytest.approx(official["score"], abs=1e-9)
    assert res["dpg"]["l1"] == pytest.approx(official["l1"]) and res["dpg"]["l2"] == pytest.approx(official["l2"])
    assert list(res["dpg"]["l2"]) == list(official["l2"])  # sorted, as officially
    rows = {r["folder"]: r["dpg_score"] for r in res["eval_results"]}
    assert rows["p2"] is None and rows["p3"] is None  # no question set; a dependency on a missing question
    assert any("no question set" in m for m in logs) and any("KeyError" in m for m in logs)
    report = _parse_official_dpg((tmp_path / "dpg_bench_results.txt").read_text())
    assert report == official  # values printed and parsed the same way


def test_dpg_question_csv_errors(tmp_path):
    with pytest.raises(VIST3AError, match="--dpg-csv .* does not exist"):
        read_questions(tmp_path / "none.csv")
    (tmp_path / "q.csv").write_text("item_id,text\n1,a\n")
    with pytest.raises(VIST3AError, match="no column 'proposition_id'"):
        read_questions(tmp_path / "q.csv")


def test_unified_reward_failing_on_every_frame_stops_naming_the_sample(tmp_path):
    class Never(gen_metrics.UnifiedReward):
        def answer(self, image, prompt):
            return "I cannot rate this."

    ur = Never(None, None, None)
    with pytest.raises(VIST3AError, match=r"sample p0: none of the 8 frames gave a parsable UnifiedReward answer"):
        gen.run_gen_eval(OFFICIAL_RUNS / "dpg" / "batch", {"unified_reward": ur}, tmp_path, log=lambda m: None)


def test_clip_score_model_is_pinned_to_fp32(tmp_path):
    model, proc = tiny_clip()
    model.half().save_pretrained(tmp_path / "openai-clip-fp16")
    proc.save_pretrained(tmp_path / "openai-clip-fp16")
    score = gen.load_clip_score(str(tmp_path / "openai-clip-fp16"), "clip_score", "--clip")
    assert {p.dtype for p in score.model.parameters()} == {torch.float32}


def test_aesthetic_clip_in_fp16_as_clip_load_makes_it(tmp_path):
    tiny = tiny_aesthetic(tmp_path)
    full = gen.load_aesthetic(str(tiny.clip), str(tiny.head), arch=TINY_AESTHETIC_ARCH)
    half = gen.load_aesthetic(str(tiny.clip), str(tiny.head), arch=TINY_AESTHETIC_ARCH, half=True)
    assert full.dtype == torch.float32 and half.dtype == torch.float16  # CPU default fp32, as clip.load on the CPU
    lin = [m for m in half.clip_model.modules() if isinstance(m, torch.nn.Linear)]
    norms = [m for m in half.clip_model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert lin and all(m.weight.dtype == torch.float16 for m in lin)
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)  # OpenAI's fp16 CLIP keeps fp32 norms
    frames = gen.sample_frames(OFFICIAL_RUNS / "decode_small.mp4")
    a, b = full(frames)["aesthetic_avg"], half(frames)["aesthetic_avg"]
    assert a == pytest.approx(b, abs=5e-3) and a != b


# ------------------------------------------------------------------------------------------------------ NVS


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from vist3a.evaluation.re10k import write_synthetic_re10k

    return write_synthetic_re10k(tmp_path_factory.mktemp("re10k") / "data", sequences=1)


def test_sequences_missing_from_the_index_map_are_skipped(synthetic, tmp_path):
    from vist3a.evaluation.re10k import Re10KTest

    data, index, seqs = synthetic
    (tmp_path / "more.txt").write_text("177ff3969577b8de\n" + seqs.read_text())
    ds = Re10KTest(data, index, tmp_path / "more.txt")
    assert ds.skipped == ["177ff3969577b8de"] and ds.sequences == seqs.read_text().split()
    (tmp_path / "none.txt").write_text("177ff3969577b8de\n")
    with pytest.raises(VIST3AError, match="none of the listed sequences"):
        Re10KTest(data, index, tmp_path / "none.txt")


def test_official_fp16_precision_casts_like_cast_to_bfloat16_and_runs():
    from vist3a.tiny import build_tiny_decoder
    from vist3a.wan.tiny import build_tiny_wan

    net = build_tiny_decoder(seed=0).eval()
    vae = build_tiny_wan(seed=0).vae.eval()
    ref = nvs.NVSModel("stitched", build_tiny_decoder(seed=0).eval(), vae=build_tiny_wan(seed=0).vae.eval())
    model = nvs.prepare_precision(nvs.NVSModel("stitched", net, vae=vae), "fp16")
    for name, m in list(net.named_modules()) + list(vae.named_modules()):
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            assert m.weight.dtype == (torch.float32 if "head" in name.lower() else torch.bfloat16), name
        elif isinstance(m, (torch.nn.Conv3d, torch.nn.LayerNorm)) and m.weight is not None:
            assert m.weight.dtype == torch.float32, name
    g = torch.Generator().manual_seed(0)
    ctx, v = torch.rand(1, 5, 3, 28, 28, generator=g), torch.rand(1, 5, 3, 32, 32, generator=g)
    out, want = model.predict(ctx, v), ref.predict(ctx, v)  # CPU autocast in fp16: the same code path as on CUDA
    assert out.extrinsics.dtype == torch.float32 and torch.isfinite(out.extrinsics).all()
    assert torch.allclose(out.extrinsics, want.extrinsics, atol=0.1)
    with pytest.raises(ValueError, match="fp16, bf16 or fp32"):
        nvs.prepare_precision(ref, "fp8")


def test_gen_results_written_under_the_official_and_the_old_name(tmp_path):
    bench = DpgBench(read_questions(OFFICIAL_RUNS / "dpg" / "questions.csv"), dpg_fake_answer, log=lambda m: None)
    gen.run_gen_eval(OFFICIAL_RUNS / "dpg" / "batch", {"dpg": bench}, tmp_path, log=lambda m: None)
    official = json.loads((tmp_path / "eval_results.json").read_text())
    assert set(official) >= {"all_average", "eval_results"}
    assert official == json.loads((tmp_path / "gen_results.json").read_text())
    assert re.search(r"DPG-Bench score: 31\.5625", (tmp_path / "dpg_bench_results.txt").read_text())
