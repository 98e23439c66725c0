"""Training details against the official code run on the CPU (tests/fixtures/make_official_runs.py ->
tests/fixtures/official_runs/): stitch-data resize, camera prompts, caption and frame sampling, the layer
search's ridge fit and MSE; plus the reward's decoded frame and the one source of the stitch schedule."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "tests" / "fixtures" / "official_runs"
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
from make_official_runs import _dl3dv_tree  # noqa: E402


def test_stitch_resize_is_the_official_non_antialiased_one():
    from safetensors.torch import load_file

    from vist3a_train.common.data.base import resize_shorter_crop
    from vist3a_train.common.data.real import _frames

    t = load_file(str(RUNS / "resize.safetensors"))
    for i in range(4):
        size, ctx = t[f"size{i}"].tolist()
        got = resize_shorter_crop(t[f"in{i}"], size)
        assert torch.equal(got, t[f"out{i}"]), i  # same kernel, same call: bit-identical
        item = _frames(t[f"in{i}"].clamp(0, 1), size, ctx)  # the loaders' whole path, context included
        assert torch.allclose((item["context"].permute(1, 0, 2, 3) + 1) / 2, t[f"ctx{i}"].clamp(0, 1), atol=1e-6), i
    big = t["in2"]  # 60x90 -> 24: antialiasing would change it a lot
    smooth = F.interpolate(big, size=(24, 36), mode="bilinear", align_corners=False, antialias=True)[..., 6:30]
    assert (smooth - t["out2"]).abs().max() > 0.1


def test_camera_prompts_are_the_official_text():
    from vist3a.wan.text_clean import clean_prompt
    from vist3a_train.common.prompts import augment_camera_prompt

    data = json.loads((RUNS / "camera_prompts.json").read_text(encoding="utf-8"))
    templates = _official_templates()
    assert len(templates) == 82
    for row in data["rows"]:
        prompt = data["prompts"][row["prompt_index"]]
        text = augment_camera_prompt(prompt, random.Random(row["seed"]), templates)
        assert text == row["text"], row
        assert clean_prompt(text) == row["cleaned"]
    assert any(r["text"] == "base" for r in data["rows"])  # the literal entry, as trained
    clean = augment_camera_prompt(data["prompts"][0], random.Random(0), templates, "clean")
    assert clean == data["rows"][0]["text"].replace("`['a cozy wooden cabin in a snowy pine forest']`",
                                                    "`a cozy wooden cabin in a snowy pine forest`")


def _official_templates():
    """The 82 templates, rebuilt from the fixture itself: each row's text with the inserted prompt put back
    as the placeholder (so the test needs no copy of train_vdm.py)."""
    from vist3a_train.common.prompts import LITERAL_BASE

    data = json.loads((RUNS / "camera_prompts.json").read_text(encoding="utf-8"))
    by_index: dict[int, str] = {}
    for row in data["rows"]:
        idx = random.Random(row["seed"]).randrange(82)
        inserted = f"`{[data['prompts'][row['prompt_index']]]}`"
        tpl = LITERAL_BASE if row["text"] == "base" else row["text"].replace("{", "{{").replace("}", "}}").replace(
            inserted.replace("{", "{{").replace("}", "}}"), "{p}")
        assert by_index.setdefault(idx, tpl) == tpl  # one template per drawn index, across prompts
    return tuple(by_index.get(i, f"unseen {i}: {{p}}") for i in range(82))


def _green(video: torch.Tensor) -> list[int]:
    return ((video[1, :, 8, 8] + 1) / 2 * 255).round().int().tolist()


def test_captions_scene_uniform_then_one_caption_as_officially(tmp_path):
    from vist3a_train.common.data import DL3DV, DL3DVCaptioned

    root = tmp_path / "dl3dv"
    _dl3dv_tree(root)
    data = json.loads((RUNS / "captions.json").read_text())
    ds = DL3DVCaptioned(root, root / "captions.json", num_views=5, video_size=16)
    assert [s.name for s, _ in ds.items] == data["captioned_scenes"] == ["s0", "s2"]
    for row in data["captioned"]:
        item = ds.load(row["index"], random.Random(row["seed"]))
        assert item["caption"] == row["caption"] and _green(item["video"]) == row["frames"], row
    # the distribution: scenes uniform (via the stream), then the scene's captions uniform
    counts: dict[str, int] = {}
    for s in range(600):
        cap = ds.load(0, random.Random(1000 + s))["caption"]
        counts[cap] = counts.get(cap, 0) + 1
    assert set(counts) == {"a long walk", "the start", "two frames"} and min(counts.values()) > 150
    st = DL3DV(root, num_views=5, video_size=16, context_size=14, window=9, load_cameras=False)
    for row in data["stitching"]:
        assert _green(st.load(row["index"], random.Random(row["seed"]))["video"]) == row["frames"], row


def test_layer_search_tokens_are_the_block_outputs_the_official_hooks_keep():
    """find_layer_for_stitching.py:171-203 hooks every patch_embed block of AnySplat during its whole forward
    (`inference` on (context + 1) / 2, b v c h w), rearranges '(b v) l d -> b v l d' and keeps [:, :, 5:]: the
    5 prefix tokens (1 class + 4 registers) dropped, named enc_blocks_{k} after block k-1. Those hooks, run on our
    model's full forward, against `find_layer.dino_tokens`, which stops after the last wanted block."""
    from vist3a.tiny import build_tiny_anysplat
    from vist3a_train.find_layer import dino_tokens

    teacher = build_tiny_anysplat(seed=3).eval()
    assert teacher.cfg.num_register_tokens == 4  # the released config: 1 + 4 = the official 5
    blocks = teacher.encoder.aggregator.patch_embed.blocks
    B, V, size = 2, 3, 2 * teacher.cfg.patch_size
    context = torch.rand(B, 3, V, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    official = {}

    def hook_for(name):
        def hook(module, inputs, output):
            official[name] = output.reshape(B, V, *output.shape[1:])[:, :, 5:, :]  # '(b v) l d -> b v l d', b outer
        return hook

    handles = [block.register_forward_hook(hook_for(f"enc_blocks_{idx + 1}")) for idx, block in enumerate(blocks)]
    try:
        with torch.no_grad():
            teacher(((context + 1) / 2).permute(0, 2, 1, 3, 4))
    finally:
        for h in handles:
            h.remove()
    cuts = list(range(1, len(blocks) + 1))
    with torch.no_grad():
        ours = dino_tokens(teacher, context, cuts, bf16=False)
    assert sorted(ours) == cuts
    for cut in cuts:
        assert torch.equal(ours[cut], official[f"enc_blocks_{cut}"].float()), cut
    assert ours[cuts[-1]].shape == (B, V, (size // teacher.cfg.patch_size) ** 2, teacher.cfg.embed_dim)


def test_layer_search_fit_and_mse_are_the_official_ones():
    from vist3a_train.common.ridge import RidgeStats, solve_ridge
    from vist3a_train.find_layer import design_rows

    folder = RUNS / "find_layer"
    feats = torch.load(folder / "features.pt", map_location="cpu", weights_only=True)
    sc = SimpleNamespace(kernel=(5, 3, 3), stride=(1, 2, 2), padding=(2, 1, 1), temporal_upsample=4)
    X, X_eval = design_rows(feats["vae_features"], sc)
    layers = sorted(feats["feedforward_features"])
    D = feats["feedforward_features"][layers[0]].shape[-1]
    stats = RidgeStats(X.shape[1], D, layers, separate_eval=True)
    stats.add(X, {k: v.double().reshape(-1, D) for k, v in feats["feedforward_features"].items()}, X_eval)
    for k in layers:
        W, b, mse = solve_ridge(stats, k, 1e-4)
        official = torch.load(folder / f"state_dict_{k}.pt", map_location="cpu", weights_only=True)
        w = W.T.reshape(D, 16, *sc.kernel).float()
        assert torch.allclose(w, official["weight"], atol=1e-6 * float(official["weight"].abs().max()) + 1e-9), k
        assert torch.allclose(b.float(), official["bias"], atol=1e-6), k
        assert mse == pytest.approx(float((folder / f"mse_{k}.txt").read_text()), rel=1e-5), k
    # replicate padding in the fit (what we did before) gives other weights
    rep = RidgeStats(X.shape[1], D, layers[:1])
    rep.add(X_eval, {layers[0]: feats["feedforward_features"][layers[0]].double().reshape(-1, D)})
    assert (solve_ridge(rep, layers[0], 1e-4)[0] - solve_ridge(stats, layers[0], 1e-4)[0]).abs().max() > 1e-3


def test_reward_scores_the_448_px_context_frame():
    from vist3a_train.align import reward_context_frames, reward_frame

    video = torch.rand(1, 3, 5, 32, 32)
    context = reward_context_frames(video, (28, 28))
    frame = reward_frame(context, 3)
    assert frame.shape == (1, 3, 28, 28) and torch.equal(frame, context[:, :, 3])


def test_stitch_schedule_has_one_source():
    from vist3a_train.common.config import STITCH_STEPS_PER_EPOCH, STITCH_TOTAL_STEPS, StitchFinetuneConfig, load_config

    assert STITCH_STEPS_PER_EPOCH == (9286 + 2095 + 3) // 4 // 3 == 948 and STITCH_TOTAL_STEPS == 30 * 948
    stitch = StitchFinetuneConfig()
    assert (stitch.schedule_steps, stitch.max_steps, stitch.save_every) == (28440, 28440, 948)
    for name in ("gh200_1.3b.yaml", "gh200_14b.yaml"):
        raw = yaml.safe_load((ROOT / "vist3a_train" / "configs" / name).read_text())
        assert not {"schedule_steps", "max_steps", "save_every"} & set(raw["stitch"]), name  # not restated
        assert load_config(ROOT / "vist3a_train" / "configs" / name).stitch.schedule_steps == 28440
