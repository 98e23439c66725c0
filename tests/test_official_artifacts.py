"""Official artifacts in and out: the official layer-search folder (made by running the official script,
tests/fixtures/official_runs/find_layer), stitch epoch folders and alignment checkpoints built here in the
layouts the official save code writes (torch.save with a pickled argparse namespace, PEFT folders,
torch.distributed.checkpoint folders), and the official-layout PLY writer."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from vist3a_train.common.config import ConfigError
from vist3a_train.common.official_artifacts import Opaque, read_dcp, read_stitch_epoch
from vist3a_train.import_official import import_align, import_layer_search, import_stitch

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "tests" / "fixtures" / "official_runs"


def test_official_layer_search_folder_becomes_our_layer_search(tmp_path):
    from vist3a_train.common.config import load_config
    from vist3a_train.common.find_layer_io import load_layer_search

    res = import_layer_search(RUNS / "find_layer", tmp_path)
    assert res["chosen_layer"] == "enc_blocks_1" and res["mse_per_layer"]["enc_blocks_2"] == pytest.approx(0.7564769268035889)
    cfg = load_config(ROOT / "vist3a_train" / "configs" / "tiny_cpu.yaml")
    for cut in ("chosen", 3):
        k, w, _ = load_layer_search(cfg, tmp_path, cut)
        official = torch.load(RUNS / "find_layer" / f"state_dict_enc_blocks_{k}.pt", weights_only=True)
        assert torch.equal(w["weight"], official["weight"]) and torch.equal(w["bias"], official["bias"])
    assert k == 3


def _official_stitch_epoch(folder: Path, epoch: int) -> dict:
    """What model_stitching_training.save_checkpoint writes, with the official args namespace (a PosixPath in
    `dataset`, the ConvSpec class of models.stitching_layer_builder)."""
    mod = types.ModuleType("models.stitching_layer_builder")

    class ConvSpec:
        def __init__(self):
            self.kernel, self.out_channels = (5, 3, 3), 1024

        def build(self, in_channels):  # never called when read back
            raise AssertionError("official code executed")

    ConvSpec.__module__, ConvSpec.__qualname__ = mod.__name__, "ConvSpec"
    mod.ConvSpec = ConvSpec
    sys.modules["models"] = types.ModuleType("models")
    sys.modules[mod.__name__] = mod
    try:
        p = torch.nn.Parameter(torch.randn(4, 3))
        opt = torch.optim.AdamW([p], lr=2e-4)
        p.grad = torch.ones_like(p)
        opt.step()
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        args = argparse.Namespace(dataset=[("dl3dv", pathlib.PosixPath("/data/dl3dv"))], stitching_layer_config=ConvSpec(),
                                  lora_config="r64,a32,d0.0,f0")
        folder.mkdir(parents=True)
        torch.save({"epoch": epoch, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "args": args},
                   folder / "resume_checkpoint.pth")
        model = {"lora": {"encoder.aggregator.frame_blocks.0.attn.qkv.lora_A": torch.randn(64, 8)},
                 "stitching_layer": {"weight": torch.randn(8, 16, 5, 3, 3), "bias": torch.randn(8)},
                 "mask_token": torch.zeros(1, 8), "cls_token": torch.zeros(1, 1, 8), "register_tokens": torch.zeros(1, 4, 8)}
        torch.save(model, folder / f"stitched_model_epoch_{epoch}.pth")
    finally:
        del sys.modules[mod.__name__], sys.modules["models"]
    return model


def test_official_stitch_epoch_is_read_without_running_its_classes(tmp_path):
    model = _official_stitch_epoch(tmp_path / "epoch_7", 7)
    ck = read_stitch_epoch(tmp_path / "epoch_7")
    assert ck["epoch"] == 7 and torch.equal(ck["model"]["stitching_layer"]["weight"], model["stitching_layer"]["weight"])
    assert int(ck["optimizer"]["state"][0]["step"]) == 1 and ck["scheduler"]["last_epoch"] == 0
    assert isinstance(ck["args"], Opaque)  # the namespace came back as an inert record
    res = import_stitch(tmp_path / "epoch_7", tmp_path / "out")
    assert res["epoch"] == 7 and res["optimizer_steps"] == 1
    back = torch.load(tmp_path / "out" / "anysplat_stitched.pth", weights_only=True)
    assert set(back) == set(model) and torch.equal(back["lora"][next(iter(model["lora"]))], next(iter(model["lora"].values())))
    (tmp_path / "epoch_7" / "stitched_model_epoch_7.pth").unlink()
    with pytest.raises(ConfigError, match="stitched_model_epoch_7.pth' does not exist"):
        read_stitch_epoch(tmp_path / "epoch_7")


def _peft_folder(folder: Path, blocks: int, dim: int, r: int, seed: int) -> dict:
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    sd = {}
    for b in range(blocks):
        for m in ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
                  "attn2.to_out.0"):
            sd[f"base_model.model.blocks.{b}.{m}.lora_A.weight"] = torch.randn(r, dim, generator=g)
            sd[f"base_model.model.blocks.{b}.{m}.lora_B.weight"] = torch.randn(dim, r, generator=g)
    folder.mkdir(parents=True)
    save_file(sd, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": 2 * r,
                                                            "target_modules": ["to_q"]}))
    return sd


def test_official_alignment_checkpoint_with_distributed_checkpoint_folders(tmp_path):
    import torch.distributed.checkpoint as dcp

    ck = tmp_path / "checkpoints" / "checkpoint-300"
    _peft_folder(ck / "lora", 2, 16, 4, 0)
    ema_lora = _peft_folder(ck / "lora_ema", 2, 16, 4, 1)
    # train_vdm.save_checkpoint: the EMA shadow ({"ema": name -> fp32}) and the optimizer state through DCP
    ema = {k.replace("base_model.model.", "base_model.model.").replace(".weight", ".default.weight"): v.float()
           for k, v in ema_lora.items()}
    dcp.save({"ema": ema}, storage_writer=dcp.FileSystemWriter(str(ck / "ema_shadow")), no_dist=True)
    opt = {"state": {0: {"step": torch.tensor(300.0), "exp_avg": torch.randn(4, 16), "exp_avg_sq": torch.rand(4, 16)}},
           "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.95), "weight_decay": 0.0, "params": [0]}]}
    dcp.save({"optimizer": opt}, storage_writer=dcp.FileSystemWriter(str(ck / "optim")), no_dist=True)
    torch.save({"step": 300}, ck / "meta.pt")
    back = read_dcp(ck / "optim")["optimizer"]
    assert torch.equal(back["state"]["0"]["exp_avg"], opt["state"][0]["exp_avg"])  # DCP stores dict keys as str
    assert list(back["param_groups"][0]["betas"]) == [0.9, 0.95] and back["param_groups"][0]["lr"] == 1e-4
    res = import_align(ck, tmp_path / "out")
    assert res["step"] == 300 and res["ema_tensors"] == len(ema) == res["ema_matching_lora_ema"]
    assert res["architecture"]["num_blocks"] == 2 and res["architecture"]["lora_rank"] == 4
    from safetensors.torch import load_file

    got = load_file(str(tmp_path / "out" / "vist3a_lora_ema" / "adapter_model.safetensors"))
    assert set(got) == set(ema_lora) and all(torch.equal(got[k], ema_lora[k]) for k in got)
    assert json.loads((tmp_path / "out" / "vist3a_lora_ema" / "vist3a_manifest.json").read_text())["step"] == 300


def test_a_metadata_file_that_would_run_code_is_refused(tmp_path):
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / ".metadata").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ConfigError, match="cannot be read safely.*system"):
        read_dcp(tmp_path / "bad")


def test_official_layout_ply_writer(tmp_path):
    from helpers import random_gaussians

    from vist3a.formats import read_ply, save_ply

    gs = random_gaussians(50, 4, spread=1.0, scale_range=(0.01, 1.01))
    save_ply(gs, tmp_path / "off.ply", layout="official")
    header = (tmp_path / "off.ply").read_bytes()[:2000].split(b"end_header")[0].decode()
    assert "f_rest_0" not in header and "property float opacity" in header and "f_dc_2" in header
    scene = read_ply(tmp_path / "off.ply")
    assert scene.opacity == "linear" and scene.detected  # recognised as the official layout
    assert np.allclose(scene.gaussians.opacities.numpy(), gs.opacities.numpy(), atol=1e-7)
    assert np.allclose(scene.gaussians.sh[:, :, 0].numpy(), gs.sh[:, :, 0].numpy(), atol=1e-6)
    save_ply(gs, tmp_path / "std.ply")
    assert read_ply(tmp_path / "std.ply").opacity == "logit"
    with pytest.raises(ValueError, match="layout"):
        save_ply(gs, tmp_path / "x.ply", layout="anysplat")
