"""Training backend pieces in-process: config, data loaders and their errors, deterministic streams,
checkpoint discovery, LoRA layouts against the released key lists, exports, rewards, EMA."""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from vist3a_train.common.config import ConfigError, load_config
from vist3a_train.common.data import (
    DL3DV,
    RE10K,
    DatasetError,
    DL3DVCaptioned,
    PromptDataset,
    ScanNet,
    StreamDataset,
    SyntheticMultiView,
    build_dataset,
)
from vist3a_train.common.data.base import StepBatchSampler, pick_views
from vist3a_train.common.ema import EMA
from vist3a_train.common.engine import LRSchedule

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "vist3a_train" / "configs" / "tiny_cpu.yaml"
KEYS = json.loads((Path(__file__).parent / "fixtures" / "stitched_checkpoint_keys.json").read_text())


# ------------------------------------------------------------------------------------------ config


def test_configs_load_and_typos_fail(tmp_path):
    cfg = load_config(TINY, ["stitch.lr=0.5", "run.engine=torch"])
    assert cfg.models.tiny is True and cfg.stitch.lr == 0.5 and cfg.run.engine == "torch"
    assert cfg.stitch.loss_weights["gaussian_scales"] == 10.0  # official default kept
    for name in ("gh200_1.3b.yaml", "gh200_14b.yaml"):
        real = load_config(REPO / "vist3a_train" / "configs" / name)
        assert real.run.precision in ("auto", "bf16") and real.models.tiny is False
    bad = tmp_path / "bad.yaml"
    bad.write_text("stitch:\n  learning_rate: 1\n")
    with pytest.raises(ConfigError, match=r"stitch\.learning_rate.*bad\.yaml|bad\.yaml.*stitch\.learning_rate"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("run: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(tmp_path / "broken.yaml")


def test_lr_schedule_matches_cosine_with_warmup():
    s = LRSchedule("cosine", 10, 110)
    assert s(0) == 0.0 and s(5) == 0.5 and s(10) == 1.0
    assert s(60) == pytest.approx(0.5) and s(110) == pytest.approx(0.0) and s(500) == 0.0
    assert LRSchedule("constant", 0, 10)(7) == 1.0


def test_ema_decay_warmup_and_average():
    ema = EMA({"w": torch.zeros(3)}, decay=0.99)
    assert ema.current_decay(0) == pytest.approx(0.1) and ema.current_decay(10_000) == 0.99
    ema.update(0, {"w": torch.ones(3)})
    assert torch.allclose(ema.shadow["w"], torch.full((3,), 0.9))


# -------------------------------------------------------------------------------------------- data


def _png(path: Path, value: int, size=(40, 30)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 40)).save(path)


def _dl3dv(root: Path, n=12, with_transforms=True):
    scene = root / "1K" / "abc123"
    for i in range(1, n + 1):
        _png(scene / "images_4" / f"frame_{i:05d}.png", 10 * i)
    if with_transforms:
        frames = [{"file_path": f"images/frame_{i:05d}.png", "transform_matrix": torch.eye(4).tolist()} for i in range(1, n + 1)]
        (scene / "transforms.json").write_text(json.dumps({"fl_x": 100, "fl_y": 100, "cx": 80, "cy": 60, "w": 160, "h": 120,
                                                           "frames": frames}))
    return scene


def test_dl3dv_loader_and_captions(tmp_path):
    root = tmp_path / "dl3dv"
    scene = _dl3dv(root)
    ds = DL3DV(root, num_views=5, video_size=32, context_size=28)
    item = ds.load(0, random.Random(0))
    assert item["video"].shape == (3, 5, 32, 32) and item["context"].shape == (3, 5, 28, 28)
    assert -1 <= float(item["video"].min()) and float(item["video"].max()) <= 1
    assert item["c2w"].shape == (5, 4, 4) and item["K"][0, 0, 0] == pytest.approx(100 / 120)
    caps = tmp_path / "captions.json"
    caps.write_text(json.dumps([{"scene_name": "abc123", "caption": {"abc123_2_9": "a quiet room", "abc123_1_3": "a door"}}]))
    cds = DL3DVCaptioned(root, caps, num_views=5, video_size=32)
    assert len(cds) == 1  # one captioned scene; each load picks one of its captions
    seen = {}
    for seed in range(20):
        item = cds.load(0, random.Random(seed))
        seen.setdefault(item["caption"], item)
    assert set(seen) == {"a quiet room", "a door"} and seen["a quiet room"]["video"].shape == (3, 5, 32, 32)
    short = seen["a door"]  # 3 frames -> the last repeats
    assert torch.equal(short["video"][:, 3], short["video"][:, 4])
    # malformed inputs name the file
    caps.write_text(json.dumps([{"scene_name": "abc123", "caption": {"nokeyrange": "x"}}]))
    with pytest.raises(DatasetError, match="captions.json"):
        DL3DVCaptioned(root, caps, num_views=5, video_size=32)
    caps.write_text("{not json")
    with pytest.raises(DatasetError, match="captions.json.*not valid JSON"):
        DL3DVCaptioned(root, caps, num_views=5, video_size=32)
    (scene / "transforms.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(DatasetError, match="transforms.json"):
        ds.load(0, random.Random(0))
    (scene / "images_4" / "frame_00003.png").write_bytes(b"not a png")
    (scene / "transforms.json").unlink()
    with pytest.raises(DatasetError, match="frame_00003.png"):
        for seed in range(20):
            ds.load(0, random.Random(seed))
    with pytest.raises(DatasetError, match="does not exist"):
        DL3DV(tmp_path / "nowhere")
    (tmp_path / "empty_root" / "1K").mkdir(parents=True)
    with pytest.raises(DatasetError, match="images_4"):
        DL3DV(tmp_path / "empty_root")


def test_scannet_and_re10k_loaders(tmp_path):
    root = tmp_path / "scannet"
    for i in range(9):
        _png(root / "scene0000_00" / "frames" / "color" / f"{i}.jpg", 20 * i)
    (tmp_path / "split.json").write_text(json.dumps(["scene0000_00"]))
    ds = ScanNet(root, num_views=5, video_size=16, context_size=14, split_file=str(tmp_path / "split.json"))
    assert ds.load(0, random.Random(1))["video"].shape == (3, 5, 16, 16)
    (tmp_path / "split.json").write_text(json.dumps(["other"]))
    with pytest.raises(DatasetError, match="scene"):
        ScanNet(root, num_views=5, split_file=str(tmp_path / "split.json"))

    from PIL import Image

    def jpeg(v):
        buf = io.BytesIO()
        Image.new("RGB", (64, 36), (v, v, v)).save(buf, format="JPEG")
        return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)

    cams = torch.zeros(7, 18)
    cams[:, :4] = torch.tensor([0.9, 1.6, 0.5, 0.5])
    cams[:, 6:] = torch.eye(4)[:3].reshape(-1)
    chunk = [{"key": "seq1", "url": "u", "timestamps": torch.arange(7), "cameras": cams, "images": [jpeg(30 * i) for i in range(7)]}]
    (tmp_path / "re10k" / "train").mkdir(parents=True)
    torch.save(chunk, tmp_path / "re10k" / "train" / "000000.torch")
    (tmp_path / "re10k" / "train" / "index.json").write_text(json.dumps({"seq1": "000000.torch"}))
    re = RE10K(tmp_path / "re10k", num_views=5, video_size=16, context_size=14)
    item = re.load(0, random.Random(0))
    assert item["video"].shape == (3, 5, 16, 16) and torch.allclose(item["c2w"][0], torch.eye(4))
    (tmp_path / "re10k" / "train" / "index.json").write_text(json.dumps({"seq1": "missing.torch"}))
    with pytest.raises(DatasetError, match="missing.torch"):
        RE10K(tmp_path / "re10k", num_views=5).load(0, random.Random(0))


def test_prompts_and_dataset_builder_errors(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a cat\n\n  a dog  \n")
    assert PromptDataset(f).prompts == ["a cat", "a dog"]
    with pytest.raises(DatasetError, match="p2.txt"):
        PromptDataset(tmp_path / "p2.txt")
    (tmp_path / "e.txt").write_text("\n")
    with pytest.raises(DatasetError, match="no prompts"):
        PromptDataset(tmp_path / "e.txt")
    with pytest.raises(ValueError, match="unknown key 'colour'"):
        build_dataset("multiview", {"type": "synthetic", "colour": 1})
    with pytest.raises(ValueError, match="must be one of"):
        build_dataset("captioned", {"type": "scannet", "root": "x"})


def test_streams_do_not_depend_on_rank_count():
    ds = SyntheticMultiView(num_scenes=5, num_views=5, video_size=16, context_size=14, gaussians_per_object=4, floor_gaussians=4)
    stream = StreamDataset(ds, seed=3, name="t")
    one = [i for step in range(4) for i in next(iter(StepBatchSampler(4, 0, 1, step)))]
    two = []
    for step in range(4):
        for r in range(2):
            two += next(iter(StepBatchSampler(4, r, 2, step)))
    assert one == two == list(range(16))
    epoch0 = sorted(stream.index_of(p) for p in range(5))
    assert epoch0 == list(range(5))  # a permutation per epoch
    resumed = StepBatchSampler(4, 1, 2, start_step=2)
    assert next(iter(resumed)) == [10, 11]
    item = stream[3]
    assert item["position"] == 3 and item["video"].shape == (3, 5, 16, 16) and "caption" in item
    assert torch.equal(stream[3]["video"], item["video"])
    with pytest.raises(ValueError, match="divisible"):
        StepBatchSampler(3, 0, 2)
    rng = random.Random(0)
    views = pick_views(40, 9, 20, rng)
    assert len(views) == 9 and views == sorted(views) and views[-1] - views[0] < 20
    assert pick_views(3, 5, 5, rng) == [0, 1, 2, 2, 2]


# ------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_discovery_ignores_partial_folders(tmp_path):
    from vist3a_train.common.checkpoint import CheckpointManager

    root = tmp_path / "ck"
    m = CheckpointManager(root, keep=2)
    (root / "step-00000002").mkdir(parents=True)
    (root / "step-00000002" / "state.json").write_text(json.dumps({"complete": True, "step": 2}))
    (root / ".tmp-step-00000004").mkdir()
    (root / ".tmp-step-00000004" / "state.json").write_text(json.dumps({"complete": True, "step": 4}))
    (root / "step-00000006").mkdir()  # no state.json: never complete
    (root / "step-00000008").mkdir()
    (root / "step-00000008" / "state.json").write_text('{"complete": true, "st')  # truncated
    (root / "step-00000009").mkdir()
    (root / "step-00000009" / "state.json").write_text(json.dumps({"complete": True, "step": 7}))  # wrong step
    assert [s for s, _ in m.complete_checkpoints()] == [2]
    assert m.latest() == root / "step-00000002"
    m.cleanup_partial()
    assert not (root / ".tmp-step-00000004").exists()


# -------------------------------------------------------------------------------------------- LoRA


def test_stitched_lora_layout_matches_the_released_checkpoint():
    """Full-size stitched decoder (meta device): our LoRA parameters are exactly the official `lora`
    keys (names, shapes) and the trainable set adds only the conv and the three tokens."""
    from vist3a.models import StitchConfig, StitchedDecoder
    from vist3a_train.common.lora import inject_lora, mark_stitch_trainable

    official = KEYS["anysplat_stitched_pth"]
    with torch.device("meta"):
        model = StitchedDecoder(StitchConfig())
    names = inject_lora(model, 64, 32)
    assert len(names) == official["num_wrapped_modules"] == 361
    trainable = mark_stitch_trainable(model)
    params = dict(model.named_parameters())
    lora_like = {n: tuple(params[n].shape) for n in trainable
                 if n.endswith((".lora_A", ".lora_B", ".bias")) and not n.startswith("stitching_layer.")}
    expected = {k: tuple(shape) for k, shape, _ in official["lora_keys"]}
    assert lora_like == expected
    assert sum(params[n].numel() for n in lora_like) == official["lora_state_dict_numel"]
    extra = set(trainable) - set(lora_like)
    assert extra == {"stitching_layer.weight", "stitching_layer.bias", "encoder.aggregator.patch_embed.cls_token",
                     "encoder.aggregator.patch_embed.register_tokens", "encoder.aggregator.patch_embed.mask_token"}
    assert all(params[n].dtype == torch.float32 for n in lora_like if "lora_" in n)


def test_lora_forward_starts_at_base_and_merges_exactly():
    from vist3a.tiny import build_tiny_decoder, random_latent
    from vist3a_train.common.lora import inject_lora, merged_state_dict

    base = build_tiny_decoder()
    model = build_tiny_decoder()
    inject_lora(model, 4, 2)
    z = random_latent()
    ctx = torch.rand(1, 3, 5, 56, 56) * 2 - 1
    with torch.no_grad():
        a = base.forward_with_latent(z, ctx, voxelize_output=False)
        b = model.forward_with_latent(z, ctx, voxelize_output=False)
        assert torch.allclose(a.depth, b.depth) and torch.allclose(a.gaussians[0].means, b.gaussians[0].means)
        g = torch.Generator().manual_seed(0)
        for n, p in model.named_parameters():
            if n.endswith(".lora_B"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        c = model.forward_with_latent(z, ctx, voxelize_output=False)
        merged = build_tiny_decoder()
        merged.load_state_dict(merged_state_dict(model))
        d = merged.forward_with_latent(z, ctx, voxelize_output=False)
    assert not torch.allclose(a.depth, c.depth)
    assert torch.allclose(c.depth, d.depth, rtol=1e-4, atol=1e-5)
    assert torch.allclose(c.raw_gs, d.raw_gs, rtol=1e-4, atol=1e-4)


def test_wan_lora_export_matches_peft_layout_and_loads(tmp_path):
    from diffusers import WanTransformer3DModel
    from safetensors import safe_open

    from vist3a.wan import apply_vist3a_lora, load_vist3a_lora
    from vist3a_train.common.export import export_wan_lora
    from vist3a_train.common.lora import add_wan_lora, wan_adapter_config, wan_peft_state_dict

    ref = KEYS["wan_lora_peft"]
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**ref["tiny_model_config"])
    base_state = {k: v.clone() for k, v in transformer.state_dict().items()}
    peft_model = add_wan_lora(transformer, 8, 16)
    named = {n: p.detach() for n, p in peft_model.named_parameters() if p.requires_grad}
    assert set(named) >= set(ref["in_memory_peft_key_example"])
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    adapter = wan_peft_state_dict({n: p for n, p in peft_model.named_parameters() if p.requires_grad})
    assert {k: list(v.shape) for k, v in adapter.items()} == {k: s for k, s, _ in ref["tiny_model_adapter_keys"]}
    config = wan_adapter_config(peft_model)
    official = ref["adapter_config_json"]
    for key in ("peft_type", "r", "lora_alpha", "lora_dropout", "bias", "fan_in_fan_out", "init_lora_weights",
                "use_rslora", "use_dora", "inference_mode", "auto_mapping", "modules_to_save", "task_type"):
        assert config[key] == official[key], key
    assert sorted(config["target_modules"]) == sorted(official["target_modules"])
    folder = export_wan_lora(tmp_path / "vist3a_lora_ema", adapter, config, architecture={"lora_rank": 8})
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                                         "vist3a_manifest.json"]
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        assert f.metadata() == ref["safetensors_metadata"]
    lora = load_vist3a_lora(folder)
    assert lora.rank == 8 and lora.alpha == 16 and lora.num_blocks == 2
    fresh = WanTransformer3DModel(**ref["tiny_model_config"])
    fresh.load_state_dict(base_state)
    x = torch.randn(1, 16, 1, 4, 4)
    t = torch.tensor([500.0])
    enc = torch.randn(1, 3, ref["tiny_model_config"]["text_dim"])
    with torch.no_grad():
        want = peft_model(hidden_states=x, timestep=t, encoder_hidden_states=enc, return_dict=False)[0]
        apply_vist3a_lora(fresh, folder)
        got = fresh(hidden_states=x, timestep=t, encoder_hidden_states=enc, return_dict=False)[0]
    assert torch.allclose(want, got, atol=1e-5)
    # PEFT itself reads the folder too
    from peft import PeftModel

    PeftModel.from_pretrained(WanTransformer3DModel(**ref["tiny_model_config"]), str(folder))


# ----------------------------------------------------------------------------------------- rewards


def test_tiny_clip_reward_is_differentiable_and_pluggable():
    from vist3a_train.common.rewards import REWARD_TYPES, build_rewards, register_reward

    rewards = build_rewards([{"type": "tiny_clip", "mode": "pickscore", "weight": 0.25},
                             {"type": "tiny_clip", "mode": "cosine", "weight": 0.25, "seed": 1}], "cpu")
    images = (torch.rand(3, 3, 40, 48) * 2 - 1).requires_grad_(True)
    loss, scores = rewards(images, ["a red car", "a house", "a red car"])
    loss.backward()
    checkpointed = build_rewards([{"type": "tiny_clip", "mode": "pickscore", "weight": 0.25, "checkpointing": True},
                                  {"type": "tiny_clip", "mode": "cosine", "weight": 0.25, "seed": 1, "checkpointing": True}], "cpu")
    images2 = images.detach().clone().requires_grad_(True)
    loss2, _ = checkpointed(images2, ["a red car", "a house", "a red car"])
    loss2.backward()
    assert torch.allclose(loss, loss2, atol=1e-6) and torch.allclose(images.grad, images2.grad, atol=1e-6)
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert set(scores) == {"tiny_clip_pickscore", "tiny_clip_cosine"} and torch.isfinite(loss)

    calls = []

    def factory(spec, device, dtype):
        def reward(images, prompts):
            calls.append(len(prompts))
            return images.mean() * spec["weight"], {"mine": images.mean().detach()}
        return reward

    register_reward("mine", factory)
    try:
        loss, scores = build_rewards([{"type": "mine", "weight": 2.0}], "cpu")(images, ["x"] * 3)
        assert calls == [3] and "mine" in scores
    finally:
        REWARD_TYPES.pop("mine")
    with pytest.raises(ValueError, match="nope"):
        build_rewards([{"type": "nope"}], "cpu")


def test_checkpointed_vae_decode_matches_plain_decode():
    from vist3a.wan.tiny import build_tiny_wan
    from vist3a_train.common.vae import decode_with_grad

    vae = build_tiny_wan(0).vae
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(1, 16, 3, 4, 4, generator=g)
    w = torch.randn(1, 3, 9, 32, 32, generator=g)
    grads, outs = [], []
    for ckpt in (False, True):
        z = z0.clone().requires_grad_(True)
        out = decode_with_grad(vae, z, checkpointing=ckpt)
        (out * w).sum().backward()
        grads.append(z.grad)
        outs.append(out.detach())
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6) and grads[0].abs().sum() > 0


def test_decoder_checkpointing_keeps_gradients():
    """align.py back-propagates through the frozen decoder with its blocks and heads checkpointed."""
    from vist3a.tiny import build_tiny_decoder, random_latent
    from vist3a_train.common.models import enable_block_checkpointing

    grads = []
    for ckpt in (False, True):
        dec = build_tiny_decoder().requires_grad_(False)
        if ckpt:
            assert enable_block_checkpointing(dec) > 10
        z = random_latent().requires_grad_(True)
        ctx = (torch.rand(1, 3, 5, 56, 56, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_(True)
        out = dec.forward_with_latent(z, ctx, voxelize_output=False)
        (out.depth.mean() + out.gaussians[0].harmonics.square().mean() + out.extrinsics.sum()).backward()
        grads.append((z.grad, ctx.grad))
    assert torch.allclose(grads[0][0], grads[1][0], rtol=1e-4, atol=1e-7)
    assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-7)
