"""`python -m vist3a eval nvs`: metrics against their reference implementations, the official image preparation,
view split and pose-scale alignment, and the tiny end-to-end run on a synthetic RealEstate10K-layout set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_helpers import vgg_file
from guards import HANG_S
from PIL import Image

from vist3a.evaluation import nvs
from vist3a.evaluation.image_metrics import load_lpips, psnr, quantize_like_official, ssim
from vist3a.evaluation.re10k import Re10KTest, official_resize_crop, write_synthetic_re10k

ROOT = Path(__file__).resolve().parents[1]


def test_ssim_matches_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(0)
    for H, W in [(11, 11), (23, 31), (40, 64)]:
        a = torch.rand(2, 3, H, W, generator=g)
        a[1] = 0.5 + 0.02 * a[1]  # low variance: the covariance normalisation matters here
        b = (a + 0.02 * torch.randn(a.shape, generator=g)).clip(0, 1)
        ref = [skm.structural_similarity(x.numpy(), y.numpy(), win_size=11, gaussian_weights=True, channel_axis=0,
                                         data_range=1.0) for x, y in zip(a, b)]
        assert np.allclose(ssim(a, b).numpy(), ref, atol=2e-5)  # scikit-image computes in float32, we in float64


def test_psnr_definition():
    a = torch.zeros(1, 3, 4, 4)
    b = torch.full((1, 3, 4, 4), 0.1)
    assert torch.allclose(psnr(a, b), torch.tensor([20.0]), atol=1e-4)
    assert torch.allclose(psnr(a, b + 5), psnr(a, torch.ones_like(a)))  # clipped to [0, 1]



def test_lpips_matches_reference_package(tmp_path):
    lpips = pytest.importorskip("lpips")
    torch.manual_seed(0)
    ref = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()  # random VGG, shipped lin
    mine = load_lpips(vgg_file(tmp_path / "vgg16.pth", ref))
    a, b = torch.rand(2, 3, 48, 40), torch.rand(2, 3, 48, 40)
    with torch.no_grad():
        want = ref(a, b, normalize=True).flatten()
    assert torch.allclose(mine(a, b), want, rtol=1e-4, atol=1e-6)


def test_lpips_missing_weights_name_the_flag(tmp_path):
    from vist3a.errors import VIST3AError

    with pytest.raises(VIST3AError, match="--lpips-vgg"):
        load_lpips(None)
    (tmp_path / "bad.pth").write_bytes(b"nope")
    with pytest.raises(VIST3AError, match="--lpips-vgg .*bad.pth"):
        load_lpips(tmp_path / "bad.pth", tmp_path / "bad.pth")


def test_quantisation_truncates_like_official_png_writer():
    x = torch.tensor([0.0, 0.5, 1.0, 2 / 255 + 0.002, 1.5])  # 2.51 levels: truncated to 2, not rounded to 3
    assert (quantize_like_official(x) * 255).round().tolist() == [0, 127, 255, 2, 255]


def test_official_resize_crop_swaps_aspect():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 80, 3), dtype=np.uint8))
    ctx, vae = official_resize_crop(img, 64, 56)
    assert vae.size == (64, 64) and ctx.size == (56, 56)
    # the official code reads (width, height) as (H, W): 80x45 is resized to width 64, height 114, then cropped
    first = img.resize((64, 114), resample=Image.Resampling.LANCZOS).crop((0, 25, 64, 89))
    assert np.array_equal(np.asarray(vae), np.asarray(first))
    assert np.array_equal(np.asarray(ctx), np.asarray(first.resize((56, 56), resample=Image.Resampling.LANCZOS)))


def test_split_views_is_official():
    assert nvs.split_views(12) == (list(range(8)), [11, 10, 9, 8])


def test_target_poses_scaled_into_context_frame(monkeypatch):
    """Call 2 predicts translations twice as large: targets are rendered at half their translation."""
    from types import SimpleNamespace

    from vist3a.models.gaussian_adapter import RawGaussians

    calls = []

    class Stub:
        kind = "stub"

        def predict(self, ctx, vae):
            S = ctx.shape[1]
            calls.append(S)
            ext = torch.eye(4).repeat(1, S, 1, 1)
            ext[0, :, 0, 3] = torch.arange(1, S + 1).float() * (1.0 if len(calls) == 1 else 2.0)
            K = torch.tensor([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]]).repeat(1, S, 1, 1)
            n = 4
            raw = RawGaussians(means=torch.zeros(n, 3) + torch.tensor([0, 0, 3.0]), scales=torch.full((n, 3), 0.1),
                               rotations=torch.tensor([[0, 0, 0, 1.0]]).repeat(n, 1), opacities=torch.full((n,), 0.5),
                               harmonics=torch.zeros(n, 3, 1), covariances=None)
            return SimpleNamespace(extrinsics=ext, intrinsics=K, gaussians=[raw])

    seen = {}

    def fake_render(g, c2w, K, W, H, **kw):
        seen["c2w"], seen["kw"] = c2w, kw
        return torch.zeros(c2w.shape[0], H, W, 3), None, None

    monkeypatch.setattr(nvs, "render_gaussians", fake_render)
    views = SimpleNamespace(context=torch.rand(12, 3, 14, 14), vae=torch.rand(12, 3, 16, 16))
    pred, gt, scale = nvs.render_targets(Stub(), views)
    assert calls == [9, 13]
    # call 1: translations 1..9 (mean 5 / 3 per component incl. zeros); call 2: context 2..18
    assert scale == pytest.approx(0.5)
    assert torch.allclose(seen["c2w"][:, 0, 3], torch.arange(10, 14).float() * 2 * 0.5)
    # the official decoder's settings, not the near 0.01 / far 100 nvs_eval.py passes to it (ignored there)
    assert seen["kw"] == dict(near=1e-10, far=1e10, radius_clip=0.1, background=1.0)
    assert torch.equal(gt, views.context[[11, 10, 9, 8]])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("re10k")
    return write_synthetic_re10k(root / "data", sequences=1)


def test_dataset_errors_are_one_line(synthetic, tmp_path):
    from vist3a.errors import VIST3AError

    data, index, seqs = synthetic
    with pytest.raises(VIST3AError, match="--index"):
        Re10KTest(data, tmp_path / "none.json")
    (tmp_path / "more.txt").write_text(seqs.read_text() + "ffffffffffffffff\n")
    assert Re10KTest(data, index, tmp_path / "more.txt").skipped == ["ffffffffffffffff"]  # as officially: not scored
    assert len(Re10KTest(data, index, seqs)) == 1


@pytest.mark.slow
@pytest.mark.parametrize("model", ["stitched", "anysplat"])
def test_eval_nvs_tiny_end_to_end(synthetic, tmp_path, model):
    lpips = pytest.importorskip("lpips")
    from skimage.metrics import structural_similarity

    data, index, seqs = synthetic
    torch.manual_seed(1)
    ref = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    vgg = vgg_file(tmp_path / "vgg16.pth", ref)
    out = tmp_path / "out"
    listed = tmp_path / "listed.txt"  # one more name than the index map has, like the official 1719 vs 1715
    listed.write_text(seqs.read_text() + "177ff3969577b8de\n")
    cmd = [sys.executable, "-m", "vist3a", "eval", "nvs", data, "--index", index, "--seq-file", listed, "-o", out,
           "--tiny", "--model", model, "--lpips-vgg", vgg]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(list(map(str, cmd)), cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 listed sequences have no entry in" in proc.stdout and "177ff3969577b8de" in proc.stdout
    res = json.loads((out / "nvs_results.json").read_text())
    assert res["precision"] == "fp32"  # the CPU default
    seq = seqs.read_text().split()[0]
    assert res["model"] == model and res["sequences"] == 1
    # the metrics recomputed from the written PNGs with the reference implementations
    load = lambda p: torch.from_numpy(np.asarray(Image.open(p))).permute(2, 0, 1).float() / 255  # noqa: E731
    gt = torch.stack([load(out / "images" / seq / "gt" / f"{j:06d}.png") for j in range(4)])
    pred = torch.stack([load(out / "images" / seq / "pred" / f"{j:06d}.png") for j in range(4)])
    assert gt.shape == (4, 3, 56, 56)
    mse = ((gt - pred) ** 2).flatten(1).mean(1)
    assert res["overall"]["PSNR"] == pytest.approx(float((-10 * mse.log10()).mean()), abs=1e-4)
    want_ssim = np.mean([structural_similarity(a.numpy(), b.numpy(), win_size=11, gaussian_weights=True, channel_axis=0,
                                               data_range=1.0) for a, b in zip(gt, pred)])
    assert res["overall"]["SSIM"] == pytest.approx(float(want_ssim), abs=2e-5)
    with torch.no_grad():
        want_lpips = ref(gt, pred, normalize=True).mean()
    assert res["overall"]["LPIPS"] == pytest.approx(float(want_lpips), rel=1e-4, abs=1e-6)
    assert (out / "overall-metric.csv").read_text().splitlines()[0] == "PSNR,SSIM,LPIPS"
    assert (out / "_all_samples.csv").read_text().splitlines()[1].startswith(seq + ",")
    assert "| mean |" in (out / "nvs_results.md").read_text()
    assert Image.open(out / "nvs_psnr.png").size[0] > 100
    if model != "stitched":
        return
    # resume: a finished sequence is reused, not recomputed
    mtime = (out / "images" / seq / "pred" / "000000.png").stat().st_mtime_ns
    proc = subprocess.run(list(map(str, cmd)), cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0 and "[nvs] 1/1" not in proc.stdout
    assert (out / "images" / seq / "pred" / "000000.png").stat().st_mtime_ns == mtime
