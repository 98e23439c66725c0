"""Checkpoint loading/conversion: key layouts, LoRA merge numerics, safety of .pth/.safetensors reads.

Tiny state dicts are generated from the REAL key list of the official AnySplat model
(fixtures/anysplat_state_dict.json) with dimensions scaled down consistently, so the key patterns
are exactly the released ones; full-size checks use shape metadata only.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vist3a.errors import CheckpointError, VIST3AError
from vist3a.tiny import write_tiny_stitched_pth
from vist3a.weights import (
    MANIFEST_NAME,
    TOKEN_KEYS,
    expected_lora_keys,
    make_manifest,
    make_stitched_checkpoint,
    merge_stitched_checkpoint,
    read_manifest,
    read_safetensors,
    read_safetensors_header,
    safe_torch_load,
    save_safetensors_atomic,
    sniff,
    stitched_from_anysplat,
    validate_state_dict,
    wrapped_modules,
    write_manifest,
)

FIX = Path(__file__).parent / "fixtures"
FULL = json.loads((FIX / "anysplat_state_dict.json").read_text())
KEYS = json.loads((FIX / "stitched_checkpoint_keys.json").read_text())

# full-size dim -> tiny dim (embed 32, DPT features 16); kernel sizes are kept
DIM_MAP = {1024: 32, 2048: 64, 3072: 96, 4096: 128, 6144: 192, 8192: 256, 256: 16, 512: 24,
           128: 8, 64: 8, 1370: 17, 32: 4}
_REPEAT = re.compile(
    r"^(encoder\.aggregator\.patch_embed\.blocks|encoder\.aggregator\.frame_blocks|"
    r"encoder\.aggregator\.global_blocks|encoder\.camera_head\.trunk)\.(\d+)\."
)


def tiny_anysplat_shapes(dino: int = 4, aa: int = 4, trunk: int = 1) -> dict:
    """AnySplat key -> tiny shape, same key pattern as the official model, fewer blocks."""
    limit = {
        "encoder.aggregator.patch_embed.blocks": dino,
        "encoder.aggregator.frame_blocks": aa,
        "encoder.aggregator.global_blocks": aa,
        "encoder.camera_head.trunk": trunk,
    }
    out = {}
    for key, shape, _ in FULL["anysplat_full"]["keys"]:
        m = _REPEAT.match(key)
        if m and int(m.group(2)) >= limit[m.group(1)]:
            continue
        dims = list(shape)
        n = 2 if (len(dims) == 4 and key.endswith(".weight")) else len(dims)  # keep conv kernels
        dims[:n] = [DIM_MAP.get(d, d) for d in dims[:n]]
        out[key] = tuple(dims)
    return out


def tiny_anysplat_sd(seed: int = 0, **kw) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in tiny_anysplat_shapes(**kw).items()}


def tiny_stitched_sd(cut: int = 2, seed: int = 0) -> dict:
    sd = stitched_from_anysplat(tiny_anysplat_sd(seed), cut=cut)
    g = torch.Generator().manual_seed(seed + 1)
    sd["stitching_layer.weight"] = torch.randn(32, 16, 5, 3, 3, generator=g)
    sd["stitching_layer.bias"] = torch.randn(32, generator=g)
    return sd


@pytest.fixture(scope="module")
def base():
    return tiny_stitched_sd()


@pytest.fixture()
def ckpt_path(tmp_path, base):
    path = tmp_path / "anysplat_stitched.pth"
    write_tiny_stitched_pth(path, base, rank=4, seed=3)
    return path


# --------------------------------------------------------------------------------------------- errors


def test_error_hierarchy():
    err = CheckpointError("x", path="a.pth", key="k")
    assert isinstance(err, VIST3AError) and isinstance(err, ValueError)
    assert (err.path, err.key) == ("a.pth", "k")


# --------------------------------------------------------------------------------------------- cut


def test_stitched_from_anysplat_renumbers_blocks():
    full = tiny_anysplat_sd()
    st = stitched_from_anysplat(full, cut=2)
    assert not any(k.startswith("encoder.aggregator.patch_embed.patch_embed.") for k in st)
    dino = sorted({int(k.split(".")[4]) for k in st if k.startswith("encoder.aggregator.patch_embed.blocks.")})
    assert dino == [0, 1]
    for i in (0, 1):
        for suffix in ("attn.qkv.weight", "mlp.fc2.bias", "ls1.gamma"):
            assert st[f"encoder.aggregator.patch_embed.blocks.{i}.{suffix}"] is full[
                f"encoder.aggregator.patch_embed.blocks.{i + 2}.{suffix}"
            ]
    removed = [k for k in full if k.startswith("encoder.aggregator.patch_embed.patch_embed.")
               or re.match(r"encoder\.aggregator\.patch_embed\.blocks\.[01]\.", k)]
    assert len(st) == len(full) - len(removed)
    # cut is a parameter; frame/global blocks are never renumbered
    st1 = stitched_from_anysplat(full, cut=1)
    assert st1["encoder.aggregator.patch_embed.blocks.2.attn.proj.weight"] is full[
        "encoder.aggregator.patch_embed.blocks.3.attn.proj.weight"]
    assert "encoder.aggregator.frame_blocks.3.attn.qkv.weight" in st1
    with pytest.raises(CheckpointError, match="has 4"):
        stitched_from_anysplat(full, cut=5)
    # distill copies are dropped and their own blocks are left alone
    full["encoder.distill_aggregator.patch_embed.blocks.0.attn.qkv.weight"] = torch.zeros(1)
    assert not any("distill" in k for k in stitched_from_anysplat(full, cut=2))
    kept = stitched_from_anysplat(full, cut=2, drop_distill=False)
    assert "encoder.distill_aggregator.patch_embed.blocks.0.attn.qkv.weight" in kept


def test_stitched_from_anysplat_full_size_matches_official_keys():
    full = OrderedDict((k, tuple(s)) for k, s, _ in FULL["anysplat_full"]["keys"])
    st = stitched_from_anysplat(full, cut=2)
    official = [(k, tuple(s)) for k, s, _ in FULL["anysplat_stitched_enc_blocks_2"]["keys"]]
    assert list(st.items()) == official


def test_wrapped_modules_reproduce_official_list_and_lora_keys():
    sd = OrderedDict((k, tuple(s)) for k, s, _ in FULL["anysplat_stitched_enc_blocks_2"]["keys"])
    sd["stitching_layer.weight"] = (1024, 16, 5, 3, 3)
    sd["stitching_layer.bias"] = (1024,)
    mods = wrapped_modules(sd)
    pth = KEYS["anysplat_stitched_pth"]
    assert len(mods) == 361
    assert sorted([m.name, m.kind] for m in mods) == [list(x) for x in pth["wrapped_modules"]]
    assert sum(m.kind == "Linear" for m in mods) == 300
    keys = expected_lora_keys(sd, rank=64)
    assert [(k, list(s)) for k, s in keys.items()] == [(k, s) for k, s, _ in pth["lora_keys"]]
    assert len(keys) == 1075
    assert sum(int(np.prod(s)) for s in keys.values()) == pth["lora_state_dict_numel"]


def test_wrapped_modules_tiny(base):
    mods = {m.name: m for m in wrapped_modules(base)}
    assert "encoder.depth_head.resize_layers.3" in mods
    assert not any(n.endswith(("resize_layers.0", "resize_layers.1")) for n in mods)
    assert "stitching_layer" not in mods
    assert mods["encoder.depth_head.scratch.layer1_rn"].has_bias is False
    assert mods["encoder.camera_head.embed_pose"].kind == "Linear"
    assert mods["encoder.gaussian_param_head.input_merger.0"].lora_shapes(4) == ((28, 21), (56, 28))


# --------------------------------------------------------------------------------------------- merge


def _lora(ckpt, name):
    return ckpt["lora"][f"{name}.lora_A"], ckpt["lora"][f"{name}.lora_B"]


def test_merge_linear_matches_official_lora_forward(base, ckpt_path):
    ckpt = safe_torch_load(ckpt_path)
    merged = merge_stitched_checkpoint(base, ckpt, source=str(ckpt_path))
    for name in ("encoder.aggregator.patch_embed.blocks.0.attn.qkv", "encoder.aggregator.frame_blocks.3.mlp.fc2",
                 "encoder.camera_head.embed_pose", "encoder.camera_head.pose_branch.fc2"):
        A, B = (t.double() for t in _lora(ckpt, name))
        W = base[f"{name}.weight"].double()
        b = ckpt["lora"][f"{name}.bias"].double()
        xi = torch.randn(5, W.shape[1], dtype=torch.float64)
        # official Linear LoRA forward (unmerged): x W^T + b + (x A^T B^T) * alpha/r
        official = F.linear(xi, W, b) + (xi @ A.T @ B.T) * 0.5
        ours = F.linear(xi, merged[f"{name}.weight"].double(), merged[f"{name}.bias"].double())
        torch.testing.assert_close(ours, official, rtol=1e-5, atol=1e-5)
        assert merged[f"{name}.weight"].dtype == torch.float32


def _rowmajor_delta(B: np.ndarray, A: np.ndarray, shape) -> np.ndarray:
    """(B @ A).view(out, in, k, k) computed element by element from the flat row-major index."""
    prod = B @ A
    out_c, in_c, k, _ = shape
    cols = prod.shape[1]
    o, i, p, q = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    flat = ((o * in_c + i) * k + p) * k + q
    return prod[flat // cols, flat % cols]


@pytest.mark.parametrize("name,padding", [
    ("encoder.depth_head.scratch.refinenet1.resConfUnit1.conv1", 1),  # 3x3
    ("encoder.depth_head.projects.2", 0),                              # 1x1
    ("encoder.gaussian_param_head.input_merger.0", 3),                 # 7x7
    ("encoder.depth_head.scratch.layer2_rn", 1),                       # 3x3, no bias, in != out
])
def test_merge_conv2d_matches_official_lora_forward(base, ckpt_path, name, padding):
    ckpt = safe_torch_load(ckpt_path)
    merged = merge_stitched_checkpoint(base, ckpt, source=str(ckpt_path))
    A, B = (t.double() for t in _lora(ckpt, name))
    W = base[f"{name}.weight"].double()
    bias = ckpt["lora"].get(f"{name}.bias")
    bias = None if bias is None else bias.double()
    x = torch.randn(2, W.shape[1], 9, 9, dtype=torch.float64)
    delta = torch.from_numpy(_rowmajor_delta(B.numpy(), A.numpy(), W.shape))
    official = F.conv2d(x, W, bias, padding=padding) + F.conv2d(x, delta, None, padding=padding) * 0.5
    mb = merged.get(f"{name}.bias")
    ours = F.conv2d(x, merged[f"{name}.weight"].double(), None if mb is None else mb.double(), padding=padding)
    torch.testing.assert_close(ours, official, rtol=1e-5, atol=1e-5)
    if bias is None:
        assert f"{name}.bias" not in merged


def test_merge_replaces_biases_tokens_stitching_and_keeps_inputs(base, ckpt_path):
    ckpt = safe_torch_load(ckpt_path)
    # the released file has bf16 biases/tokens: result must still be float32
    ckpt["mask_token"] = ckpt["mask_token"].bfloat16()
    ckpt["lora"]["encoder.aggregator.global_blocks.0.attn.qkv.bias"] = (
        ckpt["lora"]["encoder.aggregator.global_blocks.0.attn.qkv.bias"].bfloat16())
    base_copy = {k: v.clone() for k, v in base.items()}
    ckpt_copy = {k: v.clone() for k, v in ckpt["lora"].items()}
    merged = merge_stitched_checkpoint(base, ckpt, source="t.pth")
    assert set(merged) == set(base)
    for k, v in base.items():
        assert torch.equal(v, base_copy[k])
    for k, v in ckpt["lora"].items():
        assert torch.equal(v, ckpt_copy[k])
    for ck, key in TOKEN_KEYS.items():
        torch.testing.assert_close(merged[key], ckpt[ck].float())
        assert merged[key].dtype == torch.float32
    torch.testing.assert_close(merged["stitching_layer.weight"], ckpt["stitching_layer"]["weight"])
    torch.testing.assert_close(merged["stitching_layer.bias"], ckpt["stitching_layer"]["bias"])
    qkv_b = "encoder.aggregator.global_blocks.0.attn.qkv.bias"
    assert merged[qkv_b].dtype == torch.float32
    torch.testing.assert_close(merged[qkv_b], ckpt["lora"][qkv_b].float())
    # untouched: LayerNorms, layer scales, pos_embed, ConvTranspose2d
    for k in ("encoder.aggregator.frame_blocks.0.norm1.weight", "encoder.aggregator.patch_embed.pos_embed",
              "encoder.depth_head.resize_layers.0.weight", "encoder.aggregator.patch_embed.blocks.1.ls2.gamma"):
        assert merged[k] is base[k]
    # every wrapped weight changed
    for m in wrapped_modules(base):
        assert not torch.equal(merged[f"{m.name}.weight"], base[f"{m.name}.weight"])


def test_merge_ignores_distill_keys(base, ckpt_path):
    ckpt = safe_torch_load(ckpt_path)
    plain = merge_stitched_checkpoint(base, ckpt, source="t.pth")
    ckpt["lora"]["encoder.distill_aggregator.patch_embed.patch_embed.proj.lora_A"] = torch.ones(896, 42)
    ckpt["lora"]["encoder.distill_aggregator.patch_embed.patch_embed.proj.bias"] = torch.ones(1024)
    ckpt["lora"]["encoder.distill_depth_head.scratch.junk"] = torch.ones(3)
    merged = merge_stitched_checkpoint(base, ckpt, source="t.pth")
    assert set(merged) == set(plain)
    for k in merged:
        assert torch.equal(merged[k], plain[k])


def test_merge_rejects_mismatches(base, ckpt_path):
    ckpt = safe_torch_load(ckpt_path)
    # checkpoint for cut 2 against a base cut at 1 (one DINO block more) / at 3 (one fewer)
    with pytest.raises(CheckpointError, match=r"patch_embed\.blocks\.2\.attn\.qkv"):
        merge_stitched_checkpoint(tiny_stitched_sd(cut=1), ckpt, source="s.pth")
    with pytest.raises(CheckpointError, match=r"'encoder\.aggregator\.patch_embed\.blocks\.1\.attn\.qkv\.lora_A'.*different cut"):
        merge_stitched_checkpoint(tiny_stitched_sd(cut=3), ckpt, source="s.pth")

    def broken(mutate):
        c = safe_torch_load(ckpt_path)
        mutate(c)
        return c

    key = "encoder.aggregator.frame_blocks.1.mlp.fc1.lora_B"
    with pytest.raises(CheckpointError, match=r"frame_blocks\.1\.mlp\.fc1.*lora_B \[128, 5\].*lora_B \[128, r\]") as e:
        merge_stitched_checkpoint(base, broken(lambda c: c["lora"].__setitem__(key, torch.zeros(128, 5))), source="s.pth")
    assert "s.pth" in str(e.value) and e.value.path == "s.pth"
    with pytest.raises(CheckpointError, match=r"'encoder\.foo\.lora_A'"):
        merge_stitched_checkpoint(base, broken(lambda c: c["lora"].__setitem__("encoder.foo.lora_A", torch.zeros(1, 1))), source="s.pth")
    with pytest.raises(CheckpointError, match=r"'encoder\.depth_head\.scratch\.layer1_rn\.bias'"):
        merge_stitched_checkpoint(
            base, broken(lambda c: c["lora"].__setitem__("encoder.depth_head.scratch.layer1_rn.bias", torch.zeros(16))),
            source="s.pth")
    with pytest.raises(CheckpointError, match=r"'cls_token'.*\[1, 1, 33\]"):
        merge_stitched_checkpoint(base, broken(lambda c: c.__setitem__("cls_token", torch.zeros(1, 1, 33))), source="s.pth")
    with pytest.raises(CheckpointError, match=r"stitching_layer/weight"):
        merge_stitched_checkpoint(
            base, broken(lambda c: c["stitching_layer"].__setitem__("weight", torch.zeros(32, 8, 5, 3, 3))), source="s.pth")
    with pytest.raises(CheckpointError, match=r"no top-level key 'register_tokens'"):
        merge_stitched_checkpoint(base, broken(lambda c: c.pop("register_tokens")), source="s.pth")
    with pytest.raises(CheckpointError, match=r"'encoder\.camera_head\.embed_pose\.lora_B'"):
        merge_stitched_checkpoint(base, broken(lambda c: c["lora"].pop("encoder.camera_head.embed_pose.lora_B")), source="s.pth")
    with pytest.raises(CheckpointError, match=r"'encoder\.aggregator\.frame_blocks\.0\.attn\.qkv\.weight'"):
        merge_stitched_checkpoint(base, broken(lambda c: c["lora"].__setitem__("encoder.aggregator.frame_blocks.0.attn.qkv.weight", torch.zeros(1))), source="s.pth")


def test_make_then_merge_round_trip(tmp_path, base):
    g = torch.Generator().manual_seed(7)
    trained = dict(base)
    factors, expected = {}, dict(base)
    for m in wrapped_modules(base):
        a, b = m.lora_shapes(3)
        A, B = torch.randn(a, generator=g), torch.randn(b, generator=g)
        factors[m.name] = (A, B)
        expected[f"{m.name}.weight"] = base[f"{m.name}.weight"] + (B @ A).reshape(m.weight_shape) * 0.5
        if m.has_bias:
            trained[f"{m.name}.bias"] = expected[f"{m.name}.bias"] = torch.randn(m.weight_shape[0], generator=g)
    for key in list(TOKEN_KEYS.values()) + ["stitching_layer.weight", "stitching_layer.bias"]:
        trained[key] = expected[key] = torch.randn(base[key].shape, generator=g)
    ckpt = make_stitched_checkpoint(trained, factors)
    assert list(ckpt) == ["lora", "stitching_layer", "mask_token", "cls_token", "register_tokens"]
    assert list(ckpt["lora"]) == list(expected_lora_keys(base, rank=3))
    names = list(ckpt["lora"])[:3]
    assert [n.rsplit(".", 1)[1] for n in names] == ["lora_A", "bias", "lora_B"]
    path = tmp_path / "export.pth"
    torch.save(ckpt, path)
    loaded = torch.load(path, weights_only=True)
    merged = merge_stitched_checkpoint(base, loaded, source=str(path))
    assert set(merged) == set(expected)
    for k in expected:
        torch.testing.assert_close(merged[k], expected[k].float(), rtol=1e-5, atol=1e-5)
    # incomplete / inconsistent factors are refused
    with pytest.raises(CheckpointError, match="No LoRA factors"):
        make_stitched_checkpoint(trained, dict(list(factors.items())[1:]))
    bad = dict(factors)
    name = next(iter(bad))
    m0 = wrapped_modules(base)[0]
    bad[name] = tuple(torch.zeros(s) for s in m0.lora_shapes(5))
    with pytest.raises(CheckpointError, match="rank"):
        make_stitched_checkpoint(trained, bad)
    with pytest.raises(CheckpointError, match="'encoder.nope'"):
        make_stitched_checkpoint(trained, {**factors, "encoder.nope": factors[name]})


def test_tiny_pth_is_official_layout_and_weights_only(ckpt_path, base):
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert list(ckpt["lora"]) == list(expected_lora_keys(base, rank=4))
    assert ckpt["stitching_layer"]["weight"].shape == (32, 16, 5, 3, 3)
    assert all(v.dtype == torch.float32 for v in ckpt["lora"].values())


# --------------------------------------------------------------------------------------------- validate


def test_validate_state_dict_messages():
    exp = {"a.weight": (2, 3), "a.bias": (2,), "b.weight": (4,)}
    ok = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2), "b.weight": torch.zeros(4),
          "encoder.distill_x": torch.zeros(1)}
    assert set(validate_state_dict(ok, exp, source="f", ignore_prefixes=("encoder.distill_",))) == set(exp)
    with pytest.raises(CheckpointError, match=r"'encoder.distill_x'.*not part"):
        validate_state_dict(ok, exp, source="f")
    with pytest.raises(CheckpointError, match=r"key 'a\.bias' \(shape \[2\]\) is missing \(plus 1 missing, 1 unexpected other keys\)") as e:
        validate_state_dict({"a.weight": torch.zeros(2, 3), "z": torch.zeros(1)}, exp, source="m.safetensors")
    assert "m.safetensors" in str(e.value) and e.value.key == "a.bias"
    validate_state_dict({"a.weight": (2, 3), "b.weight": (4,)}, exp, source="f", allow_missing=("a.bias",))
    with pytest.raises(CheckpointError, match=r"'b\.weight' has shape \[5\] where \[4\] was expected"):
        validate_state_dict({"a.weight": (2, 3), "a.bias": (2,), "b.weight": (5,)}, exp, source="f")
    with pytest.raises(CheckpointError, match=r"extra prefix 'module\.'"):
        validate_state_dict({"module." + k: v for k, v in exp.items()}, exp, source="f")


# --------------------------------------------------------------------------------------------- .pth safety


class _Payload:
    """Unpickling this runs ``open(path, "w")``, i.e. creates a file: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    live = tmp_path / "live_marker"
    pickle.loads(pickle.dumps(_Payload(live))).close()  # the payload is real ...
    assert live.exists()
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"lora": {"w": torch.zeros(2)}, "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=r"global .io\.open.*refused for safety") as e:
        safe_torch_load(path)
    assert str(path) in str(e.value)
    assert not marker.exists()  # ... but loading the checkpoint never ran it
    det = sniff(path)
    assert det.kind == "unknown" and "refused" in det.detail
    assert not marker.exists()


@pytest.mark.parametrize("content", ["empty", "truncated", "random", "text"])
def test_corrupt_pth_raises_checkpoint_error(tmp_path, content):
    good = tmp_path / "good.pth"
    torch.save({"a": torch.arange(1000.0)}, good)
    data = {"empty": b"", "truncated": good.read_bytes()[:700], "random": os.urandom(4096),
            "text": b"hello, this is not a checkpoint\n"}[content]
    path = tmp_path / "bad.pth"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="bad.pth"):
        safe_torch_load(path)
    assert sniff(path).kind == "unknown"
    with pytest.raises(CheckpointError, match="does not exist"):
        safe_torch_load(tmp_path / "missing.pth")


# --------------------------------------------------------------------------------------------- safetensors


def _raw_safetensors(path: Path, header: dict, data: bytes = b"", length: int | None = None) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def test_read_safetensors_round_trip(tmp_path):
    t = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64), "c": torch.zeros(0, 2).bfloat16()}
    p = save_safetensors_atomic(t, tmp_path / "sub" / "x.safetensors", metadata={"k": "v"})
    out = read_safetensors(p)
    assert set(out) == set(t) and all(torch.equal(out[k], t[k]) for k in t)
    header = read_safetensors_header(p)
    assert header.metadata == {"k": "v"} and header.tensors["a"].shape == (3, 4)
    assert not [f for f in p.parent.iterdir() if f.name != "x.safetensors"]  # no temp leftovers


@pytest.mark.parametrize("case,match", [
    ("empty", "fewer than the 8-byte"),
    ("short_header", "file has only"),
    ("random", "header"),
    ("truncated", "outside|cover"),
    ("not_json", "not valid JSON"),
    ("dtype", "unknown dtype"),
    ("span", "needs 24 bytes"),
    ("overlap", "overlaps"),
    ("gap", "gap"),
    ("trailing", "data section has"),
    ("huge_shape", "needs"),
])
def test_invalid_safetensors(tmp_path, case, match):
    p = tmp_path / "bad.safetensors"
    f32 = lambda n, b: {"dtype": "F32", "shape": [n], "data_offsets": [b, b + 4 * n]}  # noqa: E731
    if case == "empty":
        p.write_bytes(b"")
    elif case == "short_header":
        _raw_safetensors(p, {"a": f32(1, 0)}, length=4096)
    elif case == "random":
        p.write_bytes(b"\xff" * 8 + os.urandom(200))
    elif case == "truncated":
        save_file({"a": torch.randn(100), "b": torch.randn(100)}, str(p))
        p.write_bytes(p.read_bytes()[:-50])
    elif case == "not_json":
        _raw_safetensors(p, {}).write_bytes(struct.pack("<Q", 5) + b"{abc}")
    elif case == "dtype":
        _raw_safetensors(p, {"a": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, b"\0" * 16)
    elif case == "span":
        _raw_safetensors(p, {"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 8]}}, b"\0" * 8)
    elif case == "overlap":
        _raw_safetensors(p, {"a": f32(2, 0), "b": f32(2, 4)}, b"\0" * 12)
    elif case == "gap":
        _raw_safetensors(p, {"a": f32(1, 0), "b": f32(1, 8)}, b"\0" * 12)
    elif case == "trailing":
        _raw_safetensors(p, {"a": f32(1, 0)}, b"\0" * 12)
    elif case == "huge_shape":
        _raw_safetensors(p, {"a": {"dtype": "F32", "shape": [10**15], "data_offsets": [0, 4]}}, b"\0" * 4)
    with pytest.raises(CheckpointError, match=match) as e:
        read_safetensors(p)
    assert "bad.safetensors" in str(e.value)
    assert sniff(p).kind == "unknown"


def test_safetensors_huge_header_claim_fails_fast(tmp_path):
    p = tmp_path / "huge.safetensors"
    _raw_safetensors(p, {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, length=10**15)
    # Checked before anything is read: reading 1e15 bytes would raise MemoryError, not this error.
    with pytest.raises(CheckpointError, match="claims 1000000000000000 bytes"):
        read_safetensors(p)
    with pytest.raises(CheckpointError, match="limit"):
        read_safetensors_header(p, max_header_bytes=10)


# --------------------------------------------------------------------------------------------- sniff / manifest


def _save(path: Path, shapes: dict, dtype=torch.float16, metadata=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.zeros(s, dtype=dtype) for k, s in shapes.items()}, str(path), metadata=metadata)
    return path


def test_sniff_each_kind(tmp_path, base, ckpt_path):
    # AnySplat: HF folder and a lone file
    anysplat = {k: torch.zeros(s) for k, s in tiny_anysplat_shapes().items()}
    folder = tmp_path / "anysplat"
    folder.mkdir()
    save_file(anysplat, str(folder / "model.safetensors"))
    (folder / "config.json").write_text("{}")
    det = sniff(folder)
    assert det.kind == "anysplat" and "4 DINO blocks" in det.detail
    lone = tmp_path / "lone" / "anything.safetensors"
    lone.parent.mkdir()
    save_file(anysplat, str(lone))
    assert sniff(lone).kind == "anysplat" and "no config.json" in sniff(lone).detail

    det = sniff(ckpt_path)
    assert det.kind == "stitched_pth" and "rank 4" in det.detail and "2 DINO blocks" in det.detail

    # our exports: folder with manifest, file listed by a sibling manifest, embedded manifest
    exp = tmp_path / "export"
    exp.mkdir()
    (exp / "decoder.pth").write_bytes(ckpt_path.read_bytes())
    write_manifest(exp, make_manifest("vist3a.stitched", architecture={"cut": 2, "lora_rank": 4},
                                      files={"checkpoint": "decoder.pth"}))
    assert sniff(exp) == sniff(exp / "decoder.pth") == sniff(exp / MANIFEST_NAME)
    kind, detail = sniff(exp)
    assert kind == "stitched_export" and "checkpoint=decoder.pth" in detail
    assert sniff(exp).kind == "stitched_export" and sniff(exp).subkind == "vist3a.stitched"
    emb = _save(tmp_path / "emb.safetensors", {"encoder.x": (2,)}, metadata={
        "vist3a_manifest": json.dumps(make_manifest("vist3a.anysplat", architecture={}, files={}))})
    assert sniff(emb).kind == "stitched_export" and sniff(emb).subkind == "vist3a.anysplat"

    # Wan LoRA (PEFT folder) from the real key pattern
    peft = tmp_path / "vist3a_1.3b_lora_ema"
    wl = KEYS["wan_lora_peft"]
    _save(peft / "adapter_model.safetensors", {k: tuple(s) for k, s, _ in wl["tiny_model_adapter_keys"]}, torch.float32)
    (peft / "adapter_config.json").write_text(json.dumps(wl["adapter_config_json"]))
    det = sniff(peft)
    assert det.kind == "wan_lora_peft" and "r=8 alpha=16" in det.detail and "2 blocks" in det.detail

    diff = tmp_path / "Wan2.1-T2V-1.3B-Diffusers"
    (diff / "transformer").mkdir(parents=True)
    (diff / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    det = sniff(diff)
    assert det.kind == "wan_diffusers" and "WanPipeline" in det.detail

    tr = _save(tmp_path / "wan2.1_t2v_1.3B_fp16.safetensors", {
        "patch_embedding.weight": (24, 16, 1, 2, 2), "blocks.0.self_attn.q.weight": (24, 24),
        "blocks.1.self_attn.q.weight": (24, 24), "head.head.weight": (64, 24)})
    det = sniff(tr)
    assert (det.kind, det.subkind) == ("wan_single_file", "transformer") and "30" not in det.detail
    tr2 = _save(tmp_path / "prefixed.safetensors", {
        "model.diffusion_model.patch_embedding.weight": (24, 16, 1, 2, 2),
        "model.diffusion_model.blocks.0.attn1.to_q.weight": (24, 24)})
    assert sniff(tr2).subkind == "transformer" and "diffusers" in sniff(tr2).detail
    vae = _save(tmp_path / "wan_2.1_vae.safetensors", {
        "encoder.conv1.weight": (8, 3, 3, 3, 3), "decoder.conv1.weight": (8, 16, 3, 3, 3),
        "conv1.weight": (32, 32, 1, 1, 1), "conv2.weight": (16, 16, 1, 1, 1)})
    det = sniff(vae)
    assert (det.kind, det.subkind) == ("wan_single_file", "vae") and "z_dim 16" in det.detail
    te = _save(tmp_path / "umt5_xxl_fp8_e4m3fn_scaled.safetensors", {
        "shared.weight": (10, 8), "encoder.block.0.layer.0.SelfAttention.q.weight": (8, 8),
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": (4, 2),
        "encoder.block.1.layer.0.SelfAttention.q.weight": (8, 8),
        "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight": (4, 2),
        "scaled_fp8": (0,)})
    det = sniff(te)
    assert (det.kind, det.subkind) == ("wan_single_file", "text_encoder") and "UMT5" in det.detail and "fp8" in det.detail

    other = _save(tmp_path / "other.safetensors", {"foo.weight": (2, 2)})
    assert sniff(other).kind == "unknown"
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    assert sniff(empty_dir).kind == "unknown"
    plain = tmp_path / "plain.pth"
    torch.save({"foo": torch.zeros(2)}, plain)
    assert sniff(plain).kind == "unknown" and "foo" in sniff(plain).detail
    with pytest.raises(CheckpointError, match="does not exist"):
        sniff(tmp_path / "nope")



def test_one_wan_classifier_for_sniff_and_loaders(tmp_path):
    """sniff() and the Wan loaders share classify_wan: same kind, and the loaders' refusals are named."""
    from vist3a.wan import sniff_wan_path

    cases = {
        "i2v": ({"patch_embedding.weight": (24, 36, 1, 2, 2), "blocks.0.self_attn.q.weight": (24, 24),
                 "img_emb.proj.0.weight": (8, 8)}, "transformer_i2v", "original"),
        "diff_i2v": ({"patch_embedding.weight": (24, 36, 1, 2, 2), "blocks.0.attn1.to_q.weight": (24, 24),
                      "scale_shift_table": (1, 2, 24),
                      "condition_embedder.image_embedder.ff.net.0.proj.weight": (8, 8)}, "transformer_i2v", "diffusers"),
        "vace": ({"patch_embedding.weight": (24, 16, 1, 2, 2), "blocks.0.self_attn.q.weight": (24, 24),
                  "vace_patch_embedding.weight": (24, 96, 1, 2, 2)}, "transformer_vace", "original"),
        "vae22": ({"encoder.conv1.weight": (8, 12, 3, 3, 3), "decoder.conv1.weight": (8, 48, 3, 3, 3),
                   "decoder.upsamples.0.upsamples.0.residual.2.weight": (8, 8, 3, 3, 3)}, "vae_wan22", "original"),
        "vae_diffusers": ({"encoder.conv_in.weight": (8, 3, 3, 3, 3), "decoder.conv_in.weight": (8, 16, 3, 3, 3),
                           "post_quant_conv.weight": (16, 16, 1, 1, 1)}, "vae", "diffusers"),
        "umt5_wan_keys": ({"token_embedding.weight": (10, 8), "blocks.0.attn.q.weight": (8, 8)},
                          "text_encoder_wan", "original"),
    }
    for name, (shapes, kind, key_format) in cases.items():
        path = _save(tmp_path / f"{name}.safetensors", shapes)
        det = sniff(path)
        info = sniff_wan_path(path)
        assert (det.kind, det.subkind) == ("wan_single_file", kind), name
        assert (info.kind, info.key_format, info.detail) == (kind, key_format, det.detail), name
    from vist3a.info import describe

    assert describe(tmp_path / "i2v.safetensors")[1] == "Wan 2.1 transformer_i2v: not loadable by the VIST3A Wan loaders"
    assert describe(tmp_path / "vae_diffusers.safetensors")[1] == "Wan 2.1 vae: loadable by the VIST3A Wan loaders"


def test_checkpoints_alias_reexports_weights():
    import vist3a.checkpoints as old
    import vist3a.weights as new

    assert set(old.__all__) == set(new.__all__)
    assert all(getattr(old, name) is getattr(new, name) for name in new.__all__)

def test_manifest_validation(tmp_path):
    with pytest.raises(CheckpointError, match="format"):
        make_manifest("vist3a.other", architecture={}, files={})
    with pytest.raises(CheckpointError, match="plain relative path"):
        make_manifest("vist3a.wan_lora", architecture={}, files={"adapter": "../x.safetensors"})
    with pytest.raises(CheckpointError, match="does not exist"):
        write_manifest(tmp_path, make_manifest("vist3a.wan_lora", architecture={}, files={"adapter": "a.safetensors"}))
    (tmp_path / "a.safetensors").write_bytes(b"x")
    m = make_manifest("vist3a.wan_lora", architecture={"r": 8}, files={"adapter": "a.safetensors"}, step=10)
    write_manifest(tmp_path, m)
    assert read_manifest(tmp_path) == m
    newer = dict(m, version=2)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(newer))
    with pytest.raises(CheckpointError, match="update the vist3a package"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_manifest(tmp_path)
