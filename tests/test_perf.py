"""Fast path: FLOP counting, the sync-free sampler, offloading and the quality guard (fast vs reference).

Tolerances (CPU, tiny models, 4 steps at CFG 7.5):
- loop changes alone (batched CFG, sync-free UniPC, one text-encoder call) in fp32: <= 1e-5 relative,
  i.e. float32 rounding (measured ~2e-6);
- bf16 weights vs the fp32 reference: <= 5e-2 relative to the largest value. bf16 keeps 8 mantissa bits
  (unit roundoff 2^-8 = 0.39%); the transformer's error of a few roundoffs is amplified by the guidance
  scale (7.5 x (cond - uncond)), so a few percent is the expected noise floor; measured 1.0-2.2% over
  seeds on latents, Gaussian means and depth. A real change (another seed) moves them by 45-140%, so
  the bound separates noise from a changed output by an order of magnitude (checked below).
- offloading copies weights bit for bit: results are identical (torch.equal).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from vist3a import offload, sync
from vist3a.errors import HostSyncError
from vist3a.pipeline import GenerateSettings, VIST3APipeline
from vist3a.wan import encode_prompt, sample_latents
from vist3a.wan.sampling import make_scheduler, unipc_plan
from vist3a.wan.tiny import build_tiny_wan, save_tiny_vist3a_lora

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # the measurement helpers live with the benchmarks, imported as they import them
from guards import HANG_S

import measure  # noqa: E402

BF16_TOL = 5e-2
FP32_TOL = 1e-5
SMALL = dict(frames=5, height=64, width=64, steps=4, voxelize=False)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_wan(seed=0)


@pytest.fixture(scope="module")
def reference():
    """fast=False: two transformer calls per step, diffusers' scheduler, fp32 - the official numerics."""
    pipe = VIST3APipeline.load(tiny=True, device="cpu", fast=False)
    scene, latent = pipe.generate("a red car", GenerateSettings(**SMALL))
    return scene, latent


# -------------------------------------------------------------------------------------------- FLOPs


def _small_transformer(layers=2, heads=2, head_dim=32):
    from diffusers import WanTransformer3DModel

    cfg = dict(patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, in_channels=16,
               out_channels=16, text_dim=96, freq_dim=32, ffn_dim=80, num_layers=layers, cross_attn_norm=True,
               qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64)
    torch.manual_seed(0)
    return WanTransformer3DModel.from_config(cfg).eval(), cfg


@pytest.mark.parametrize("batch, latent_thw, text", [(1, (2, 4, 6), 512), (2, (3, 8, 4), 17)])
def test_flop_count_matches_torch_flop_counter(batch, latent_thw, text):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model, cfg = _small_transformer()
    x = torch.randn(batch, 16, *latent_thw)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(hidden_states=x, timestep=torch.full((batch,), 500.0), encoder_hidden_states=torch.randn(batch, text, 96),
              return_dict=False)
    ours = measure.wan_transformer_flops(cfg, x.shape, text_tokens=text)
    assert counter.get_total_flops() == pytest.approx(ours.total, rel=1e-12)


def test_flop_count_of_the_released_1_3b_step():
    """The figure MFU is computed from: one CFG step (2 forwards) of the 1.3B at 13 frames, 512^2."""
    from vist3a.wan.configs import WAN_T2V_1_3B_TRANSFORMER_CONFIG, WAN_T2V_14B_TRANSFORMER_CONFIG

    f = measure.wan_transformer_flops(WAN_T2V_1_3B_TRANSFORMER_CONFIG, (1, 16, 4, 64, 64))
    assert f.tokens == 4096 and f.text_tokens == 512
    n, d, L, ffn = 4096, 1536, 512, 8960
    by_hand = 30 * (2 * n * d * d * 4 + 4 * n * n * d + 2 * n * d * d * 2 + 4 * L * d * d + 4 * n * L * d + 4 * n * d * ffn)
    assert f.total == pytest.approx(by_hand, rel=0.01)  # the embedders and head add < 1%
    assert 2 * f.total / 1e12 == pytest.approx(27.8, abs=0.2)  # TFLOP per CFG step
    f14 = measure.wan_transformer_flops(WAN_T2V_14B_TRANSFORMER_CONFIG, (1, 16, 4, 64, 64))
    assert 2 * f14.total / 1e12 == pytest.approx(231.2, abs=0.5)
    # MFU: 27.8 TFLOP in 50 ms on an H100 SXM (989.4 TFLOP/s bf16 dense) is 0.56
    assert measure.mfu(2 * f.total, 0.050, 989.4e12) == pytest.approx(0.562, abs=0.005)


@pytest.mark.parametrize("name, key, tflops", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.4), ("NVIDIA H100 PCIe", "H100 PCIe", 756.5),
    ("NVIDIA H100 NVL", "H100 NVL", 835.5), ("NVIDIA H200", "H200", 989.4), ("NVIDIA GH200 480GB", "GH200", 989.4),
    ("NVIDIA A100-SXM4-80GB", "A100", 312.0), ("NVIDIA GeForce RTX 4090", "RTX 4090", 165.2),
])
def test_peak_table(name, key, tflops):
    assert measure._peak_key(name) == key
    assert measure.PEAK_TFLOPS[key]["bf16"] == tflops
    assert measure._peak_key("Some Future GPU") is None


def test_measured_peak_on_cpu():
    rate, source = measure.peak_flops("cpu", torch.float32)
    assert rate > 0 and math.isfinite(rate) and source.startswith("measured")  # a figure, not a speed bound
    assert measure.mfu(1e9, 1.0, None) is None


# ---------------------------------------------------------------------------------- sync-free sampler


@pytest.mark.parametrize("steps, shift", [(1, 5.0), (2, 5.0), (5, 3.0), (50, 5.0)])
def test_unipc_plan_reproduces_the_diffusers_scheduler(steps, shift):
    from vist3a.wan.sampling import _apply_update

    timesteps, updates = unipc_plan(steps, shift)
    sched = make_scheduler(shift)
    sched.set_timesteps(steps)
    sched.set_begin_index(0)
    assert torch.equal(timesteps, sched.timesteps)
    g = torch.Generator().manual_seed(steps)
    x = torch.randn(1, 16, 2, 8, 8, generator=g)
    state = [x.clone()] + [None] * (len(updates[0]) - 1)
    for i, t in enumerate(sched.timesteps):
        eps = torch.randn(x.shape, generator=g) * 3
        x = sched.step(eps, t, x, return_dict=False)[0]
        state = _apply_update(updates[i], state, [(eps, 1.0)])
    assert rel(state[0], x) <= FP32_TOL


def test_sync_free_loop_has_no_host_syncs_and_the_check_is_real(tiny):
    embeds = encode_prompt(tiny, ["a red car", "blurry"])
    common = dict(num_frames=5, height=32, width=32, steps=3, seed=0, check_syncs=True)
    out = sample_latents(tiny, embeds[:1], embeds[1:], sync_free=True, **common)
    assert torch.isfinite(out).all()
    # diffusers' UniPC solves a linear system on the device each step (a sync on a GPU): caught
    with pytest.raises(HostSyncError, match="linalg_solve"):
        sample_latents(tiny, embeds[:1], embeds[1:], sync_free=False, **common)
    with pytest.raises(HostSyncError), sync.no_host_sync("cpu"):
        float(out.sum())
    float(out.sum())  # restored afterwards


def test_batched_and_unbatched_cfg_agree(tiny):
    embeds = encode_prompt(tiny, ["a red car", "blurry"])
    common = dict(num_frames=5, height=32, width=32, steps=4, cfg=7.5, seed=3)
    ref = sample_latents(tiny, embeds[:1], embeds[1:], batched_cfg=False, sync_free=False, **common)
    for batched in (True, False):
        out = sample_latents(tiny, embeds[:1], embeds[1:], batched_cfg=batched, sync_free=True, **common)
        assert rel(out, ref) <= FP32_TOL
    # one text-encoder call for both prompts = two calls
    assert rel(embeds[1:], encode_prompt(tiny, "blurry")) <= FP32_TOL


# ------------------------------------------------------------------------------------- quality guard


def test_fast_loop_in_fp32_matches_the_reference(reference):
    scene_ref, latent_ref = reference
    pipe = VIST3APipeline.load(tiny=True, device="cpu")  # CPU default: fast loop, fp32
    assert pipe.plan.fast and pipe.plan.precision == "fp32" and pipe.plan.offload == "none"
    scene, latent = pipe.generate("a red car", GenerateSettings(**SMALL))
    assert rel(latent, latent_ref) <= FP32_TOL
    assert rel(scene.gaussians.means, scene_ref.gaussians.means) <= FP32_TOL
    assert set(pipe.last_timings) == {"text", "denoise", "vae", "splats"}


def test_bf16_fast_path_stays_within_bf16_noise(reference):
    scene_ref, latent_ref = reference
    pipe = VIST3APipeline.load(tiny=True, device="cpu", precision="bf16")
    tr, vae, dec = pipe.wan.transformer, pipe.wan.vae, pipe.decoder
    assert tr.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert tr.blocks[0].norm2.weight.dtype == torch.float32  # diffusers' fp32-kept modules stay fp32
    assert next(vae.parameters()).dtype == torch.bfloat16
    assert next(dec.encoder.aggregator.parameters()).dtype == torch.bfloat16
    assert next(dec.encoder.depth_head.parameters()).dtype == torch.float32  # heads in fp32, as the official code
    scene, latent = pipe.generate("a red car", GenerateSettings(**SMALL))
    g, gr = scene.gaussians, scene_ref.gaussians
    for ours, ref in ((latent, latent_ref), (g.means, gr.means), (g.opacities, gr.opacities), (g.sh, gr.sh),
                      (scene.depth, scene_ref.depth), (scene.c2w, scene_ref.c2w)):
        assert rel(ours, ref) <= BF16_TOL
    # the bound is discriminative: another seed is far outside it
    other, other_latent = pipe.generate("a red car", GenerateSettings(**{**SMALL, "seed": 1}))
    assert rel(other_latent, latent_ref) > 10 * BF16_TOL
    assert rel(other.gaussians.means, gr.means) > 5 * BF16_TOL


def test_lora_is_merged_on_the_fast_path(tmp_path):
    lora = save_tiny_vist3a_lora(tmp_path / "lora", build_tiny_wan(seed=0).transformer, seed=4)
    s = GenerateSettings(**SMALL)
    slow = VIST3APipeline.load(tiny=True, device="cpu", fast=False, lora=lora)
    fast = VIST3APipeline.load(tiny=True, device="cpu", lora=lora)
    assert fast.plan.lora_merged and not slow.plan.lora_merged
    _, a = slow.generate("a red car", s)
    _, b = fast.generate("a red car", s)
    assert rel(b, a) <= 1e-4  # merged weights: fp32 re-association only


# ------------------------------------------------------------------------------------------- offload


def test_offload_modes_give_identical_results(reference):
    s = GenerateSettings(**SMALL)
    base = VIST3APipeline.load(tiny=True, device="cpu", offload="none")
    scene0, latent0 = base.generate("a red car", s)
    for mode, cap in (("text_encoder", None), ("model", None), ("sequential", 1e-4)):
        pipe = VIST3APipeline.load(tiny=True, device="cpu", offload=mode, memory_cap_gib=cap)
        assert pipe.plan.offload == mode
        scene, latent = pipe.generate("a red car", s)
        assert torch.equal(latent, latent0), mode
        assert torch.equal(scene.gaussians.means, scene0.gaussians.means), mode
        te_stream = pipe.placement.streamers["text_encoder"]
        assert te_stream.loads == len(pipe.wan.text_encoder.encoder.block) and te_stream.max_in_flight <= 2
        if mode == "sequential":
            assert pipe.plan.streamed_blocks == len(pipe.wan.transformer.blocks)  # a tiny budget streams them all
            st = pipe.placement.streamers["transformer"]
            assert st.max_in_flight <= 2 and st.loads >= s.steps * len(pipe.wan.transformer.blocks)
            # between stages every streamed weight is its CPU master again (no device copy kept)
            for ts, ms in zip(st.tensors, st.masters):
                assert all(t.data_ptr() == m.data_ptr() for t, m in zip(ts, ms))
        if mode in ("model", "sequential"):
            off = pipe.placement.stage_offloaders["decoder"]
            assert off.transfers == 1 and not off.onloaded
    # re-planning undoes the previous placement
    pipe.optimize(offload="none")
    assert not pipe.placement.streamers and not pipe.placement.stage_offloaders
    _, latent = pipe.generate("a red car", s)
    assert torch.equal(latent, latent0)


def test_block_streamer_prefetches_and_bounds_memory():
    torch.manual_seed(0)
    blocks = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.GELU()) for _ in range(5)])
    x = torch.randn(3, 8)
    with torch.no_grad():
        expected = blocks(x)
        streamer = offload.BlockStreamer(list(blocks), "cpu", prefetch=1, cyclic=True)
        seen = []
        for b in blocks:
            b.register_forward_pre_hook(lambda m, a: seen.append(len(streamer._in_flight)))
        assert torch.equal(blocks(x), expected)
        assert torch.equal(blocks(x), expected)
    assert streamer.max_in_flight == 2 and max(seen) <= 2
    # every block once per forward, plus block 0 prefetched at the end of each forward for the next one
    assert streamer.loads == 11 and list(streamer._in_flight) == [0]
    streamer.release()
    assert not streamer._in_flight
    streamer.remove()
    with torch.no_grad():
        assert torch.equal(blocks(x), expected)



def _stream_check(device: str) -> None:
    tr = build_tiny_wan(seed=1).transformer
    g = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(1, 16, 2, 4, 4, generator=g), timestep=torch.full((1,), 500.0),
                  encoder_hidden_states=torch.randn(1, 512, 4096, generator=g), return_dict=False)
    with torch.no_grad():
        expected = tr(**inputs)[0]
        streamer = offload.stream_transformer_blocks(tr, device)
        assert offload.stream_transformer_blocks(tr, device) is streamer  # idempotent
        assert offload.execution_device(tr) == torch.device(device)
        assert all(p.device == torch.device(device) for p in tr.patch_embedding.parameters())
        got = [tr(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()})[0] for _ in range(2)]
    n = len(tr.blocks)
    assert streamer.loads == 2 * n + 1 and streamer.max_in_flight <= 2  # block 0 of pass 2 was prefetched by pass 1
    assert all(b.weight.device.type == "cpu" for b in tr.blocks[0].modules() if isinstance(b, nn.Linear))
    for out in got:
        if device == "cpu":
            assert torch.equal(out, expected)
        else:  # another device's kernels: rounding only
            assert rel(out.cpu(), expected) < FP32_TOL * 10


def test_stream_transformer_blocks_is_exact_on_cpu():
    """The ComfyUI loader's "blocks" offload (vist3a.offload.stream_transformer_blocks) changes no numbers."""
    _stream_check("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_stream_transformer_blocks_on_cuda():
    _stream_check("cuda")

def test_offload_planning():
    gib = offload.GIB
    assert offload.spread_indices(40, 13) == sorted(set(offload.spread_indices(40, 13)))
    idx = offload.spread_indices(40, 13)
    assert len(idx) == 13 and max(b - a for a, b in zip(idx, idx[1:])) <= 4
    assert offload.spread_indices(4, 0) == [] and offload.spread_indices(4, 9) == [0, 1, 2, 3]
    blocks = [0.7 * gib] * 40
    assert offload.plan_resident_blocks(blocks, 100 * gib) == 40
    assert offload.plan_resident_blocks(blocks, 18 * gib) == 23  # 18 GiB minus 2 blocks in flight
    assert offload.plan_resident_blocks(blocks, 0.5 * gib) == 0
    sizes_13 = {"text_encoder": 11.4 * gib, "text_encoder_block": 0.4 * gib, "transformer": 2.7 * gib, "vae": 0.25 * gib,
                "decoder": 2.5 * gib}
    sizes_14 = {**sizes_13, "transformer": 28.6 * gib}
    resolve = lambda sizes, budget: offload.resolve_offload("auto", "cuda", sizes=sizes, budget_bytes=budget * gib,  # noqa: E731
                                                         reserve_bytes=6 * gib)
    assert resolve(sizes_13, 80) == "text_encoder"
    assert resolve(sizes_14, 80) == "text_encoder"
    assert resolve(sizes_14, 36) == "model"
    assert resolve(sizes_14, 24) == "sequential"
    assert offload.resolve_offload("auto", "cpu", sizes=sizes_14, budget_bytes=None, reserve_bytes=0) == "none"
    with pytest.raises(ValueError, match="offload must be one of"):
        offload.resolve_offload("disk", "cpu", sizes={}, budget_bytes=None, reserve_bytes=0)


# ------------------------------------------------------------------------------------------ helpers


def test_random_materialisation_is_deterministic_and_keeps_ties():
    from accelerate import init_empty_weights
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = UMT5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4)

    def make(seed, dtype):
        with init_empty_weights():
            m = UMT5EncoderModel(cfg)
        return measure.materialize_random_(m, lambda n, s: measure.wan_fill_value(n, s, seed), device="cpu",
                                        dtype_for=lambda n: torch.float32 if ".wo." in n else dtype)

    a, b, c = make(0, torch.bfloat16), make(0, torch.bfloat16), make(1, torch.bfloat16)
    assert a.shared.weight is a.encoder.embed_tokens.weight
    assert all(p.device.type == "cpu" for p in a.parameters())
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["shared.weight"], sc["shared.weight"])
    assert a.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32
    assert a.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.bfloat16
    assert torch.equal(sa["encoder.final_layer_norm.weight"], torch.ones(32, dtype=torch.bfloat16))
    w = sa["encoder.block.0.layer.0.SelfAttention.q.weight"].float()
    assert w.std().item() == pytest.approx(32**-0.5, rel=0.25)  # fan-in scaled


def test_timer_memory_and_summary():
    timer = measure.StageTimer("cpu")
    with timer("a"):
        pass
    with timer("a"):
        pass
    assert set(timer.times) == {"a"} and timer.total >= 0
    # CPU peaks are process RSS, so measure in a fresh process: late in a full test run this one holds
    # freed pages that a new 256 MB tensor can reuse without the RSS growing.
    script = (
        "import sys\nimport torch\n"
        f"sys.path.insert(0, {str(ROOT / 'bench')!r})\nimport measure\n"
        "with measure.PeakMemory('cpu', interval=0.001) as pm:\n"
        "    big = torch.ones(64, 1024, 1024)\n    big += 1\n"
        "print(pm.peak_bytes - pm.base_bytes)"
    )
    grown = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()[-1])
    assert grown >= 200 * 1024**2
    s = measure.summarize([3.0, 1.0, 2.0])
    assert s["median"] == 2.0 and s["min"] == 1.0 and s["max"] == 3.0 and s["spread"] == 1.0 and s["n"] == 3
    v = measure.versions()
    assert v["torch"] == torch.__version__ and "diffusers" in v


# ----------------------------------------------------------------------------------------- benchmarks


@pytest.mark.slow
def test_e2e_benchmark_runs_and_writes_json_and_table(tmp_path):
    out = tmp_path / "e2e.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "e2e.py"), "--device", "cpu", "--model", "tiny", "--frames", "5",
         "--size", "32", "--steps", "2", "--repeats", "1", "--warmup", "0", "--render-views", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=HANG_S, cwd=tmp_path)  # a hang guard, not a speed bound
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for key in ("device", "command", "official_s", "ours_s", "speedup", "official_peak_gib", "ours_peak_gib",
                "transformer_step_ms", "mfu", "decode_ms", "versions", "max_rel_diff_latent"):
        assert key in res, key
    assert res["command"].startswith("python bench/e2e.py --device cpu")
    assert res["speedup"] > 0 and res["denoise_host_syncs"] == "none"
    assert res["max_rel_diff_latent"] <= BF16_TOL or res["settings"]["precision"] == "fp32"
    assert math.isclose(res["flops_per_step"], 2 * res["flops_breakdown"]["total"])
    assert set(res["ours"]["stages"]) == {"text", "denoise", "vae", "splats", "render"}
    table = out.with_suffix(".md").read_text()
    assert "| **text -> 3DGS**" in table and res["command"] in table


@pytest.mark.slow
def test_demo_benchmark_runs(tmp_path):
    out = tmp_path / "demo.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "demo.py"), "--repeats", "1", "--warmup", "0",
                           "--steps", "2", "--out", str(out)], capture_output=True, text=True, timeout=HANG_S, cwd=tmp_path)  # a hang guard, not a speed bound
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["command"].startswith("python bench/demo.py") and res["fast"]["total"]["median"] > 0
    assert set(res["fast"]["stages"]) >= {"load", "text", "denoise", "vae", "splats", "save"}


@pytest.mark.slow
def test_splat_io_benchmark_runs(tmp_path):
    out = tmp_path / "splat_io.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "splat_io.py"), "--label", "smoke", "--views", "1", "--size", "24",
                           "--repeats", "1", "--tmp", str(tmp_path), "--note", "a smoke run", "--out", str(out)],
                          capture_output=True, text=True, timeout=HANG_S, cwd=tmp_path)  # a hang guard, not a speed bound
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(out.read_text())["runs"]["smoke"]
    assert run["gaussians"] == 24 * 24 and run["note"] == "a smoke run" and set(run["figures"]) == {"ply", "spz", "splat", "glb", "spz.glb"}
    for name, row in run["figures"].items():
        assert row["write_s"] > 0 and row["read_s"] > 0 and len(row["write_runs"]) == 1, name
        assert ("x_ply_bytes" in row) == (name != "ply") and ("gzip_compress_s" in row) == (name == "spz")
        assert row["write_peak_extra_bytes"] >= 0 and row["read_peak_extra_bytes"] >= 0
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("splat_io")] == []  # its scratch folder is gone
    assert "| spz |" in out.with_suffix(".md").read_text() and "a smoke run" in out.with_suffix(".md").read_text()
