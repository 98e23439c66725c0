"""`python -m vist3a_train.check CONFIG`: one line per problem, nothing loaded or downloaded, all ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from guards import HANG_S

from vist3a_train.check import find_problems, main
from vist3a_train.common.config import load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "vist3a_train" / "configs"


def test_tiny_config_is_ready(capsys):
    assert main([str(CONFIGS / "tiny_cpu.yaml")]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_every_missing_path_and_model_is_reported_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: hub ids are not there
    problems = find_problems(load_config(CONFIGS / "gh200_14b.yaml"))
    text = "\n".join(problems)
    for needle in ("models.anysplat: '/models/anysplat' does not exist", "models.wan: '/models/Wan2.1-T2V-14B-Diffusers'",
                   "data.multiview[0]: DL3DV root '/data/DL3DV-ALL-960P' does not exist",
                   "data.multiview[1]: ScanNet root '/data/scannet' does not exist",
                   "data.captioned: DL3DV root '/data/DL3DV-ALL-960P' does not exist",
                   "data.prompts: prompt file '/code/VIST3A/data/train.txt' does not exist",
                   "align.reward.camera_prompts: camera-prompt file '/code/VIST3A/train_vdm.py' does not exist",
                   "align.reward.models[0] (pickscore) model: 'yuvalkirstain/PickScore_v1' is neither a local folder",
                   "align.reward.models[0] (pickscore) processor: 'laion/CLIP-ViT-H-14-laion2B-s32B-b79K'",
                   "align.reward.models[1] (open_clip) model: 'apple/DFN5B-CLIP-ViT-H-14-378'"):
        assert sum(needle in p for p in problems) == 1, (needle, text)
    assert all("\n" not in p for p in problems)


def test_local_reward_folders_and_a_bad_dataset(tmp_path, capsys):
    pick = tmp_path / "PickScore_v1"
    pick.mkdir()
    (pick / "config.json").write_text("{}")
    proc = tmp_path / "clip_processor"
    proc.mkdir()
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "models: {tiny: true}\n"
        "data:\n  captioned: {type: dl3dv, root: nowhere, captions: caps.json}\n"
        "align:\n  reward:\n    camera_prompts: templates.txt\n    models:\n"
        f"      - {{type: pickscore, model: {pick}, processor: {proc}}}\n"
        "      - {type: open_clip, architecture: ViT-H-14-378-quickgelu, pretrained: dfn5b/open_clip_pytorch_model.bin}\n")
    (tmp_path / "templates.txt").write_text("{prompt}\nAround {prompt}.\n")
    assert main([str(cfg), "--step", "align"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("data.captioned: DL3DV root") and "nowhere" in line for line in out)
    assert any("processor: folder" in line and "clip_processor" in line for line in out)
    assert any("pretrained: '" in line and "open_clip_pytorch_model.bin' does not exist" in line for line in out)
    assert not any("models[0] (pickscore) model" in line for line in out)  # the local folder is fine
    assert not any("camera_prompts" in line for line in out)
    assert out[-1].startswith("3 problem(s)") or out[-1].startswith("4 problem(s)")  # + open_clip when not installed


@pytest.mark.slow
def test_check_runs_on_every_rank(tmp_path):
    bin_dir = Path(sys.executable).parent
    launcher = [str(bin_dir / "torchrun")] if (bin_dir / "torchrun").exists() else [sys.executable, "-m", "torch.distributed.run"]
    cfg = tmp_path / "run.yaml"
    cfg.write_text("models: {tiny: true}\ndata:\n  prompts: {type: file, path: missing_prompts.txt}\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([*launcher, "--standalone", "--nproc_per_node", "2", "-m", "vist3a_train.check", str(cfg),
                           "--step", "align"], cwd=REPO, env=env, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode != 0
    lines = [x for x in proc.stdout.splitlines() if "missing_prompts.txt" in x]
    assert len(lines) == 2, proc.stdout + proc.stderr
    assert sorted(x.split(" on ")[0] for x in lines) == ["[rank 0", "[rank 1"]
