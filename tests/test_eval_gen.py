"""`python -m vist3a eval gen`: each metric against its reference implementation on tiny random-weight models and
synthetic frames; UnifiedReward's question and parsing with a stub model; the CLI on a batch-layout folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_helpers import TINY_AESTHETIC_ARCH, tiny_aesthetic, tiny_clip
from guards import HANG_S
from PIL import Image

from vist3a.evaluation import gen, gen_metrics
from vist3a.render.media import save_orbit_video

ROOT = Path(__file__).resolve().parents[1]
LONG_PROMPT = "a very long caption " * 8  # > 77 tokens with the character-level tiny tokenizer



@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models") / "openai-clip-tiny"  # torchmetrics only accepts names with "openai"
    model, proc = tiny_clip()
    model.save_pretrained(d)
    proc.save_pretrained(d)
    return d


def _frames(n=12, h=40, w=48, seed=0):
    g = np.random.default_rng(seed)
    base = g.random((n, 4, 4, 3))
    return torch.from_numpy(np.stack([np.asarray(Image.fromarray((b * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC))
                                      for b in base])).float() / 255


@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    for i, prompt in enumerate(["a red chair", LONG_PROMPT]):
        d = root / f"p{i}"
        d.mkdir()
        (d / "prompt.txt").write_text(prompt)
        save_orbit_video(_frames(seed=i), d / "gs.mp4", fps=20)
    (root / "unfinished").mkdir()
    (root / "unfinished" / "prompt.txt").write_text("no video")
    return root


def test_frames_sampled_like_official(batch_dir):
    frames = gen.read_video(batch_dir / "p0" / "gs.mp4")
    assert len(frames) == 12
    picked = gen.sample_frames(batch_dir / "p0" / "gs.mp4")
    assert len(picked) == 8
    for i, img in enumerate(picked):
        assert np.array_equal(np.asarray(img), frames[int(i * 12 / 8)])
    samples = gen.find_samples(batch_dir)
    assert [s.folder for s in samples] == ["p0", "p1"] and samples[0].prompt == "a red chair"


def test_clip_score_matches_torchmetrics(clip_dir, batch_dir):
    tm = pytest.importorskip("torchmetrics.multimodal.clip_score")
    from transformers import CLIPModel, CLIPProcessor

    model, proc = CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)

    class Tensors(torch.nn.Module):  # torchmetrics 1.9 expects transformers 4's tensor outputs
        def __init__(self, m):
            super().__init__()
            self.m, self.config = m, m.config

        def get_image_features(self, *a, **k):
            return gen_metrics._features(self.m.get_image_features(*a, **k))

        def get_text_features(self, *a, **k):
            return gen_metrics._features(self.m.get_text_features(*a, **k))

    ref = tm.CLIPScore(model_name_or_path=lambda: (Tensors(model), proc))
    mine = gen.load_clip_score(str(clip_dir), "clip_score", "--clip")
    for folder, prompt in (("p0", "a red chair"), ("p1", LONG_PROMPT)):
        frames = gen.sample_frames(batch_dir / folder / "gs.mp4")
        want = np.mean([float(ref(torch.from_numpy(np.asarray(f).copy()).permute(2, 0, 1)[None], prompt)) for f in frames])
        got = mine(frames, prompt)["clip_score"]
        assert got == pytest.approx(want, rel=1e-5, abs=1e-5)
    assert len(proc(text=[LONG_PROMPT])["input_ids"][0]) > 77  # the truncation path was exercised



def test_aesthetic_matches_laion_definition(tmp_path, batch_dir):
    tiny = tiny_aesthetic(tmp_path)
    ref_model, head, open_clip = tiny.model, tiny.head_module, tiny.open_clip
    mine = gen.load_aesthetic(str(tiny.clip), str(tiny.head), arch=TINY_AESTHETIC_ARCH)
    frames = gen.sample_frames(batch_dir / "p0" / "gs.mp4")
    # reference: open_clip's own eval preprocessing (OpenAI mean/std), normalised embedding, LAION head, / 10
    pre = open_clip.image_transform(224, is_train=False)
    with torch.no_grad():
        feats = ref_model.encode_image(torch.stack([pre(f) for f in frames]))
        want = (head(torch.nn.functional.normalize(feats, dim=-1)) / 10).mean()
    assert mine(frames)["aesthetic_avg"] == pytest.approx(float(want), rel=1e-4, abs=1e-6)


def test_musiq_preprocessing_and_scale():
    seen = []

    def model(x):
        seen.append(tuple(x.shape[-2:]))
        return torch.tensor([[50.0 + x.mean()]])

    m = gen_metrics.Musiq(model)
    big = Image.fromarray(np.full((700, 600, 3), 255, np.uint8))
    small = Image.fromarray(np.zeros((300, 400, 3), np.uint8))
    out = m([big, small])["imaging_avg"]
    assert seen == [(int(512 / 600 * 700), 512), (300, 400)]  # shorter side above 512 brought to 512
    assert out == pytest.approx((51.0 + 50.0) / 2 / 100)


ANSWER = """Word-wise Scores: [["a", 1.0], ["[No_mistakes]", 2.0]]

Alignment Score (1-5): 3.62
Coherence Score (1-5): 4
Style Score (1-5): 2.5e0
"""


@pytest.mark.parametrize("text, want", [
    (ANSWER, {"alignment": 3.62, "coherence": 4.0, "style": 2.5}),
    ("alignment: 3.5\nCOHERENCE SCOR - 2\nstyle score: 1", {"alignment": 3.5, "coherence": 2.0, "style": 1.0}),
    ("Alignment is about 4.5 overall\nCoherence Score: 3\nStyle Score: 2", {"alignment": 4.5, "coherence": 3.0, "style": 2.0}),
    ("Alignment Score (1-5): X\nCoherence Score: 3\nStyle Score: 2", {"alignment": 1.0, "coherence": 3.0, "style": 2.0}),
    ("Alignment Score: 3\nStyle Score: 2", None),
])
def test_unified_reward_parsing_is_official(text, want):
    assert gen_metrics.parse_unified_reward(text) == want


def test_unified_reward_with_stub_model():
    answers = iter([ANSWER, "I cannot rate this.", ANSWER.replace("3.62", "1.62")])
    asked = []

    class Inputs(dict):
        def __getattr__(self, k):
            return self[k]

        def to(self, device):
            return self

    class Processor:
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert tokenize is False and add_generation_prompt is True
            asked.append(messages)
            return "CHAT:" + messages[0]["content"][1]["text"]

        def __call__(self, text, images, videos, return_tensors, padding):
            return Inputs(input_ids=torch.zeros(1, 5, dtype=torch.long))

        def batch_decode(self, ids, skip_special_tokens):
            assert ids[0].tolist() == [7, 7]  # the prompt tokens were cut off
            return [next(answers)]

    class Model:
        def generate(self, input_ids, max_new_tokens, use_cache):
            assert max_new_tokens == 4096 and use_cache
            return torch.cat([input_ids, torch.full((1, 2), 7)], 1)

    vision = lambda messages: ([messages[0]["content"][0]["image"]], None)  # noqa: E731
    ur = gen_metrics.UnifiedReward(Model(), Processor(), vision)
    imgs = [Image.new("RGB", (8, 8))] * 3
    out = ur(imgs, "a red chair")
    assert out == {"unified_reward_alignment_score": pytest.approx((3.62 + 1.62) / 2),
                   "unified_reward_coherence_score": 4.0, "unified_reward_style_score": 2.5}
    q = asked[0][0]["content"][1]["text"]
    assert q.startswith("You are presented with a generated image and its associated text caption.")
    assert q.endswith("Your task is provided as follows:\nText Caption: [a red chair]\nASSISTANT:\n")
    assert "Alignment Score (1-5): X\nCoherence Score (1-5): Y\nStyle Score (1-5): Z\n\n" in q
    assert asked[0][0]["content"][0] == {"type": "image", "image": imgs[0]}


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "vist3a", "eval", "gen", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=HANG_S)


def test_eval_gen_cli(batch_dir, clip_dir, tmp_path):
    out = tmp_path / "res"
    cfg = tmp_path / "eval.json"
    cfg.write_text(json.dumps({"clip": str(clip_dir)}))
    proc = _run(batch_dir, "--config", cfg, "-o", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skipping unfinished" in proc.stdout
    res = json.loads((out / "eval_results.json").read_text())  # the official name; gen_results.json kept too
    assert res == json.loads((out / "gen_results.json").read_text())
    assert res["samples"] == 2 and list(res["all_average"]) == ["clip_score"]
    direct = gen.load_clip_score(str(clip_dir), "clip_score", "--clip")
    scores = [direct(gen.sample_frames(batch_dir / f / "gs.mp4"), p)["clip_score"] for f, p in (("p0", "a red chair"), ("p1", LONG_PROMPT))]
    assert res["all_average"]["clip_score"] == pytest.approx(np.mean(scores), rel=1e-5)
    assert "| clip_score |" in (out / "gen_results.md").read_text()
    assert Image.open(out / "gen_metrics.png").size[0] > 100


@pytest.mark.parametrize("args, needle", [
    ([], "--clip PATH"),
    (["--metrics", "aesthetic"], "--aesthetic-clip is not set"),
    (["--metrics", "clip", "--clip", "/nonexistent/clip"], "--clip /nonexistent/clip does not exist"),
    (["--metrics", "bogus", "--clip", "x"], "unknown metric 'bogus'"),
])
def test_eval_gen_errors_are_one_line(batch_dir, args, needle):
    proc = _run(batch_dir, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
