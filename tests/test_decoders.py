"""Every supported decoder format, written tiny with the real key layout, loads strictly through the
same code real files use; bad files fail with one clear sentence."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from vist3a import decoders, tiny
from vist3a import weights as wt
from vist3a.errors import CheckpointError
from vist3a.tiny import write_tiny_stitched_pth


def _write_official_anysplat(folder, model):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    config = {"encoder_cfg": {"pred_head_type": "depth", "gaussian_adapter": {"sh_degree": 4}, "voxel_size": 0.002,
                              "voxelize": True}, "architecture": model.cfg.to_dict()}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def tiny_models():
    return tiny.build_tiny_anysplat(seed=1), tiny.build_tiny_decoder(seed=2)


@pytest.fixture
def inputs():
    z = tiny.random_latent(frames=5, size=64, seed=3)
    g = torch.Generator().manual_seed(4)
    return z, torch.rand(1, 3, 5, 56, 56, generator=g) * 2 - 1


def _same_outputs(a, b, z, ctx):
    with torch.no_grad():
        oa = a.forward_with_latent(z, ctx, voxelize_output=False)
        ob = b.forward_with_latent(z, ctx, voxelize_output=False)
    assert torch.equal(oa.depth, ob.depth)
    assert torch.equal(oa.gaussians[0].means, ob.gaussians[0].means)


def test_official_anysplat_folder_loads_strictly(tmp_path, tiny_models):
    anysplat, _ = tiny_models
    folder = _write_official_anysplat(tmp_path / "anysplat", anysplat)
    loaded = decoders.load_anysplat(folder)
    images = torch.rand(1, 2, 3, 28, 42)
    with torch.no_grad():
        assert torch.equal(loaded(images, voxelize_output=False).depth, anysplat(images, voxelize_output=False).depth)
    assert decoders.load_anysplat(folder / "model.safetensors").cfg == anysplat.cfg


def test_official_stitched_pth_on_anysplat_base_equals_the_merge(tmp_path, tiny_models, inputs):
    anysplat, decoder = tiny_models
    base_folder = _write_official_anysplat(tmp_path / "anysplat", anysplat)
    base = wt.stitched_from_anysplat(anysplat.state_dict(), 2)
    base.update({k: v for k, v in decoder.state_dict().items() if k.startswith("stitching_layer.")})
    write_tiny_stitched_pth(tmp_path / "anysplat_stitched.pth", base, rank=4, seed=5)
    loaded = decoders.load_stitched_decoder(tmp_path / "anysplat_stitched.pth", base_folder)
    expected = wt.merge_stitched_checkpoint(base, torch.load(tmp_path / "anysplat_stitched.pth", weights_only=True), source="t")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, expected[k].float()), k
    # the LoRA deltas really changed the weights
    k = "encoder.aggregator.frame_blocks.0.attn.qkv.weight"
    assert not torch.equal(loaded.state_dict()[k], base[k])


def test_stitched_export_round_trips(tmp_path, tiny_models, inputs):
    _, decoder = tiny_models
    decoders.save_stitched_export(decoder, tmp_path / "export", step=3)
    loaded = decoders.load_stitched_decoder(tmp_path / "export")
    assert loaded.cfg == decoder.cfg
    _same_outputs(decoder, loaded, *inputs)


def test_anysplat_export_round_trips(tmp_path, tiny_models):
    anysplat, _ = tiny_models
    decoders.save_anysplat_export(anysplat, tmp_path / "as_export")
    assert decoders.load_anysplat(tmp_path / "as_export").cfg == anysplat.cfg


def test_stitched_pth_without_base_is_explained(tmp_path, tiny_models):
    _, decoder = tiny_models
    write_tiny_stitched_pth(tmp_path / "s.pth", decoder.state_dict(), rank=2)
    with pytest.raises(CheckpointError, match="AnySplat base"):
        decoders.load_stitched_decoder(tmp_path / "s.pth")


def test_wrong_shape_names_the_key(tmp_path, tiny_models):
    anysplat, _ = tiny_models
    folder = _write_official_anysplat(tmp_path / "anysplat", anysplat)
    sd = {k: v.contiguous() for k, v in anysplat.state_dict().items()}
    sd["encoder.camera_head.embed_pose.weight"] = torch.zeros(3, 3)
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"encoder\.camera_head\.embed_pose\.weight.*\[3, 3\]"):
        decoders.load_anysplat(folder)


def test_missing_key_and_foreign_file_are_explained(tmp_path, tiny_models):
    anysplat, _ = tiny_models
    folder = _write_official_anysplat(tmp_path / "anysplat", anysplat)
    sd = {k: v.contiguous() for k, v in anysplat.state_dict().items() if "depth_head.norm" not in k}
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="depth_head.norm"):
        decoders.load_anysplat(folder)
    save_file({"blocks.0.self_attn.q.weight": torch.zeros(4, 4)}, str(tmp_path / "wan.safetensors"))
    with pytest.raises(CheckpointError, match="not a stitched decoder"):
        decoders.load_stitched_decoder(tmp_path / "wan.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        decoders.load_anysplat(tmp_path)


class _Payload:
    def __reduce__(self):
        return (open, ("/tmp/vist3a_payload_ran", "w"))


def test_pickled_decoder_is_refused_without_running_it(tmp_path):
    marker = __import__("pathlib").Path("/tmp/vist3a_payload_ran")
    marker.unlink(missing_ok=True)
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"lora": _Payload()}, f)
    with pytest.raises(CheckpointError):
        decoders.load_stitched_decoder(tmp_path / "evil.pth", tmp_path)
    assert not marker.exists()


def test_bf16_precision_keeps_heads_fp32(tiny_models, inputs):
    _, decoder = tiny_models
    d = tiny.build_tiny_decoder(seed=2)
    decoders.set_precision(d, "bf16")
    assert d.encoder.aggregator.frame_blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert d.encoder.depth_head.norm.weight.dtype == torch.float32
    with torch.no_grad():
        out = d.forward_with_latent(*inputs, voxelize_output=False)
        ref = decoder.forward_with_latent(*inputs, voxelize_output=False)
    assert out.depth.dtype == torch.float32
    rel = (out.depth - ref.depth).abs().max() / ref.depth.abs().max()
    assert 0 < rel < 0.05  # bf16 noise, not garbage
