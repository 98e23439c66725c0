"""The official recipe in the shipped configs (checked against the cited table in vist3a_train/README.md),
the typed config and its errors, camera-prompt templates read from a user file, colour jitter, skipping
bad samples, and the reward's context resize."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import torch
import yaml

from vist3a_train.common.config import Config, ConfigError, load_config
from vist3a_train.common.data import DL3DV, BadSampleMonitor, DatasetError, StreamDataset, SyntheticMultiView
from vist3a_train.common.data.base import collate, color_jitter
from vist3a_train.common.prompts import BARE, LITERAL_BASE, augment_camera_prompt, load_camera_templates

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "vist3a_train" / "configs"


def _recipe_table() -> list[tuple[str, object, str]]:
    text = (REPO / "vist3a_train" / "README.md").read_text(encoding="utf-8")
    section = text.split("## Official recipe", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        m = re.match(r"\|\s*`([\w.]+)`\s*\|\s*(.+?)\s*\|\s*(.+?)\s*\|$", line)
        if m:
            rows.append((m.group(1), yaml.safe_load(m.group(2)), m.group(3)))
    return rows


def _plain(v):
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


@pytest.mark.parametrize("name", ["gh200_1.3b.yaml", "gh200_14b.yaml"])
def test_gh200_configs_hold_the_official_recipe(name):
    rows = _recipe_table()
    assert len(rows) >= 40
    cfg = load_config(CONFIGS / name)
    for key, expected, source in rows:
        assert re.search(r"\.(py|md|json):\d+", source), f"row {key} cites no file:line ({source})"
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        assert _plain(value) == expected, f"{name}: {key} is {value!r}, the official value is {expected!r} ({source})"


def test_typed_config_types_choices_and_unknown_keys(tmp_path):
    cfg = load_config(CONFIGS / "tiny_cpu.yaml", ["stitch.lr=5e-5", "run.engine=torch", "align.lora_alpha=4"])
    assert isinstance(cfg, Config) and cfg.stitch.lr == 5e-5 and cfg.run.engine == "torch"
    assert isinstance(cfg.align.lora_alpha, float) and cfg.stitch.view_counts == (5, 9)
    assert cfg.stitch.loss_weights["gaussian_scales"] == 10.0
    with pytest.raises(Exception):  # frozen
        cfg.run.seed = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("align:\n  reward:\n    stepz_range: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'align\.reward\.stepz_range'.*steps_range"):
        load_config(bad)
    bad.write_text("stitch:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'stitch\.lr' must be a number, got 'fast'"):
        load_config(bad)
    bad.write_text("run:\n  engine: jax\n")
    with pytest.raises(ConfigError, match=r"'run\.engine' must be one of deepspeed, torch"):
        load_config(bad)
    bad.write_text("stitch:\n  color_jitter: [0.5, 0.5]\n")
    with pytest.raises(ConfigError, match=r"'stitch\.color_jitter' must be a list of 4 numbers or null"):
        load_config(bad)
    bad.write_text("stitch:\n  batch_size: true\n")
    with pytest.raises(ConfigError, match=r"'stitch\.batch_size' must be an integer"):
        load_config(bad)
    bad.write_text("align:\n  num_views: 12\n")
    with pytest.raises(ConfigError, match="4k\\+1"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"--set run\.seeed=1: unknown config key 'run\.seeed'"):
        load_config(CONFIGS / "tiny_cpu.yaml", ["run.seeed=1"])


# ---------------------------------------------------------------------------------- camera prompts


def test_camera_templates_from_an_official_style_source_and_a_text_file(tmp_path):
    src = tmp_path / "train_vdm.py"
    src.write_text(
        "import random\n\n"
        "def augment_camera_prompt(prompt: str):\n"
        "    base = f\"`{prompt}`\"\n"
        "    possible_prompts = [\n"
        "        \"base\",\n"
        "        f\"A slow sweep over {base}. Braces {{kept}}.\",\n"
        "        f\"Up high: {base}\",\n"
        "    ]\n"
        "    return random.choice(possible_prompts)\n"
        "raise SystemExit('never executed')\n")
    t = load_camera_templates(src)
    assert t == (LITERAL_BASE, "A slow sweep over {p}. Braces {{kept}}.", "Up high: {p}")
    seen = {augment_camera_prompt("a lamp", random.Random(i), t, "clean") for i in range(60)}
    assert seen == {"a lamp", "A slow sweep over `a lamp`. Braces {kept}.", "Up high: `a lamp`"}
    seen = {augment_camera_prompt("a lamp", random.Random(i), t) for i in range(60)}  # official: as it was trained
    assert seen == {"base", "A slow sweep over `['a lamp']`. Braces {kept}.", "Up high: `['a lamp']`"}
    txt = tmp_path / "templates.txt"
    txt.write_text("# mine\n{prompt}\nThe camera circles {prompt} slowly.\n\n")
    assert load_camera_templates(txt) == (BARE, "The camera circles {p} slowly.")
    txt.write_text("no placeholder here\n")
    with pytest.raises(ConfigError, match=r"templates\.txt' line 1 has no \{prompt\}"):
        load_camera_templates(txt)
    (tmp_path / "other.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="possible_prompts"):
        load_camera_templates(tmp_path / "other.py")
    with pytest.raises(ConfigError, match="does not exist"):
        load_camera_templates(tmp_path / "missing.txt")


# ----------------------------------------------------------------------------------- colour jitter


def test_color_jitter_is_deterministic_per_position_and_applied_before_the_context_resize():
    clip = torch.rand(5, 3, 16, 16)
    a = color_jitter(clip, (0.5, 0.5, 0.5, 0.1), random.Random(7))
    b = color_jitter(clip, (0.5, 0.5, 0.5, 0.1), random.Random(7))
    c = color_jitter(clip, (0.5, 0.5, 0.5, 0.1), random.Random(8))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == clip.shape
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(color_jitter(clip, (0, 0, 0, 0), random.Random(7)), clip)
    plain = SyntheticMultiView(num_scenes=2, num_views=5, video_size=32, context_size=28, gaussians_per_object=8,
                               floor_gaussians=8)
    jit = SyntheticMultiView(num_scenes=2, num_views=5, video_size=32, context_size=28, gaussians_per_object=8,
                             floor_gaussians=8, color_jitter=(0.5, 0.5, 0.5, 0.1))
    p, j = plain.load(0, random.Random(1)), jit.load(0, random.Random(1))
    assert not torch.allclose(p["video"], j["video"])
    expect = torch.nn.functional.interpolate((j["video"].permute(1, 0, 2, 3) + 1) / 2, size=(28, 28), mode="bilinear",
                                             align_corners=False, antialias=True)
    assert torch.allclose((j["context"].permute(1, 0, 2, 3) + 1) / 2, expect.clamp(0, 1), atol=1e-6)


# ------------------------------------------------------------------------------------- bad samples


def _png(path: Path, value: int, size=(40, 30)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 40)).save(path)


def test_bad_frames_are_skipped_counted_and_stop_the_run_past_the_share(tmp_path, caplog):
    root = tmp_path / "dl3dv"
    for s in range(4):
        for i in range(1, 8):
            _png(root / "1K" / f"scene{s}" / "images_4" / f"frame_{i:05d}.png", 20 * i + s)
    for i in range(1, 8):  # scene2: every frame corrupt, so any view pick hits one
        (root / "1K" / "scene2" / "images_4" / f"frame_{i:05d}.png").write_bytes(b"\x89PNG broken")
    ds = DL3DV(root, num_views=5, video_size=16, context_size=14, load_cameras=False)
    stream = StreamDataset(ds, seed=0, name="multiview", shuffle=False)
    with caplog.at_level("WARNING", logger="vist3a_train.data"):
        items = [stream[p] for p in range(8)]
    assert [it["bad_samples"] for it in items] == [0, 0, 1, 0] * 2
    assert "scene2" in items[2]["bad_paths"] and ".png" in items[2]["bad_paths"]
    assert items[2]["video"].shape == (3, 5, 16, 16)  # another scene was drawn instead
    assert sum("skipped a bad sample" in r.message for r in caplog.records) == 2
    again = stream[2]  # a resumed run draws the same replacement
    assert torch.equal(again["video"], items[2]["video"])
    monitor = BadSampleMonitor("data.multiview", max_share=0.5, min_count=1)
    stats = monitor.update(collate(items[:4]))
    assert stats == {"data/bad_samples": 1.0, "data/bad_share": 0.2}
    strict = BadSampleMonitor("data.multiview", max_share=0.1, min_count=1)
    with pytest.raises(DatasetError, match=r"1 of 5 samples .* were bad \(20\.0% > run\.max_bad_sample_share 10\.0%\).*scene2"):
        strict.update(collate(items[:4]))
    for s in (0, 1, 3):  # every scene broken: a clear error instead of an endless loop
        for i in range(1, 8):
            (root / "1K" / f"scene{s}" / "images_4" / f"frame_{i:05d}.png").write_bytes(b"broken")
    with pytest.raises(DatasetError, match="4 samples in a row are bad"):
        stream[0]


# ----------------------------------------------------------------------------- reward context size


def test_reward_context_frames_follow_the_official_reward_not_inference():
    import torch.nn.functional as F

    from vist3a.functional import context_from_video
    from vist3a_train.align import reward_context_frames

    video = torch.rand(1, 3, 5, 32, 32)
    got = reward_context_frames(video, (28, 28))
    official_reward = F.interpolate(video, size=(5, 28, 28), mode="trilinear", align_corners=True)
    assert torch.equal(got, official_reward)
    inference = context_from_video(video, (28, 28))
    assert inference.shape == got.shape and not torch.allclose(inference, got, atol=1e-3)
