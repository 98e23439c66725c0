"""CUDA-only paths of the fast pipeline: gsplat backend, cuDNN attention, block streaming on a side
stream, no host syncs in the denoising loop.  Marked `gpu`; they skip without CUDA and run on the
device through `bench/gpu_check.sh` (part `gpu_tests`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # render_compare, gpu_check_deps (the one import point of perf helpers)
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: run bench/gpu_check.sh on the device")]

SMALL = dict(frames=5, height=64, width=64, steps=4, voxelize=False)
BF16_TOL = 5e-2


def rel(a, b) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


@pytest.fixture(scope="module")
def cuda():
    return torch.device("cuda")


def tiny_pipe(**kw):
    from vist3a.pipeline import VIST3APipeline

    return VIST3APipeline.load(tiny=True, device="cuda", **kw)


# ------------------------------------------------------------------------------------------ gsplat


def test_gsplat_backend_renders_the_torch_image(cuda):
    pytest.importorskip("gsplat")
    from render_compare import agreement, cameras, random_scene, render

    from vist3a.render import gsplat_backend, select_backend

    assert gsplat_backend.unavailable_reason() is None, gsplat_backend.unavailable_reason()
    assert select_backend("auto", cuda, torch.float32) == "gsplat"
    scene = random_scene(20_000, 4, seed=3, device=cuda)
    c2w, K = cameras(3, 128)
    rgb_t, alpha_t = render(scene, c2w, K, 128, "torch")
    rgb_g, alpha_g = render(scene, c2w, K, 128, "gsplat")
    assert rgb_g.shape == rgb_t.shape == (3, 128, 128, 3) and alpha_g.shape == alpha_t.shape
    assert float(alpha_g.mean()) > 0.05  # the scene is in view, not an empty image
    a = agreement(rgb_t, alpha_t, rgb_g, alpha_g)
    assert a["within_tolerance"], a
    # the comparison can fail: another scene's render is far outside the tolerance
    other = random_scene(20_000, 4, seed=4, device=cuda)
    assert not agreement(*render(other, c2w, K, 128, "torch"), rgb_g, alpha_g)["within_tolerance"]


def test_gsplat_path_with_official_settings_is_gsplat_called_as_the_official_decoder(cuda):
    """Our gsplat path with OFFICIAL_RENDER and the accumulated depth gives what DecoderSplattingCUDA's call
    (decoder_splatting_cuda.py:92-111: near_plane=1e-10, far left at 1e10, radius_clip=0.1, white backgrounds,
    RGB+D, covars, classic, one call per view) gives, on a scene with splats before 0.01 and beyond 100 of the
    first camera; our former NVS settings (0.01 / 100, black) do not, and the torch rasteriser agrees."""
    pytest.importorskip("gsplat")
    from gsplat import rasterization
    from render_compare import agreement, cameras, random_scene

    from vist3a.render import OFFICIAL_RENDER, rasterize
    from vist3a.render.torch_backend import covariance_from_quat_scale

    size, views = 96, 3
    g = random_scene(20_000, 3, seed=5, device=cuda)
    c2w, K = (t.to(cuda) for t in cameras(views, size))
    eye, forward = c2w[0, :3, 3], c2w[0, :3, 2]
    lateral = torch.randn(8, 3, generator=torch.Generator().manual_seed(1)).to(cuda) * 1e-3
    near_far = torch.cat([eye + 0.004 * forward + lateral, eye + 150.0 * forward + 1000 * lateral])  # z 0.004 / 150
    means = torch.cat([g.means, near_far])
    quats = torch.cat([g.rotations, torch.tensor([[1.0, 0, 0, 0]], device=cuda).expand(16, 4)])
    scales = torch.cat([g.scales, torch.full((8, 3), 4e-4, device=cuda), torch.full((8, 3), 3.0, device=cuda)])
    opac = torch.cat([g.opacities, torch.full((16,), 0.8, device=cuda)])
    sh = torch.cat([g.sh, torch.rand(16, 3, g.sh.shape[2], device=cuda) * 0.5])
    covars = covariance_from_quat_scale(quats, scales)
    viewmats = c2w.inverse()  # the official extrinsics[i].float().inverse()

    official_rgb, official_depth = [], []
    for j in range(views):
        out, _, _ = rasterization(means, quats, scales, opac, sh.transpose(1, 2).contiguous(), viewmats[j:j + 1],
                                  K[j:j + 1], size, size, sh_degree=3, render_mode="RGB+D", packed=False,
                                  near_plane=1e-10, backgrounds=torch.ones(1, 3, device=cuda), radius_clip=0.1,
                                  covars=covars, rasterize_mode="classic")
        official_rgb.append(out[..., :3].clamp(0, 1))
        official_depth.append(out[..., 3:])
    official_rgb, official_depth = torch.cat(official_rgb), torch.cat(official_depth)

    def ours(backend, **settings):
        rgb, alpha, depth = rasterize(means, quats, scales, opac, sh, viewmats, K, size, size, covars=covars,
                                      backend=backend, depth_mode="accumulated", **settings)
        return rgb.clamp(0, 1), alpha, depth

    rgb, alpha, depth = ours("gsplat", **OFFICIAL_RENDER.kwargs())
    d_rgb, d_depth = float((rgb - official_rgb).abs().max()), float((depth - official_depth).abs().max())
    assert d_rgb <= 1e-5 and d_depth <= 1e-5 * float(official_depth.abs().max()), (d_rgb, d_depth)
    old, _, _ = ours("gsplat", near=0.01, far=100.0, background=0.0)
    assert float((old - official_rgb).abs().max()) > 0.1  # the near and far splats matter in this scene
    t_rgb, t_alpha, _ = ours("torch", **OFFICIAL_RENDER.kwargs())
    a = agreement(t_rgb, t_alpha, rgb, alpha)
    assert a["within_tolerance"], a


# --------------------------------------------------------------------------------- official noise


def test_official_noise_is_wan_pipelines_cuda_draw_per_prompt(cuda):
    """inference_t23d.py: seed_everything(12413), then WanPipeline with no generator draws each prompt's noise
    from the CUDA stream; official_noise(index=k) (what batch gives the k-th prompt of a rank) is that draw."""
    from diffusers import WanPipeline

    from vist3a.wan import NEGATIVE_PROMPT, build_prompt
    from vist3a.wan.sampling import make_scheduler
    from vist3a.wan.seeding import OFFICIAL_SEED, official_noise, seed_everything
    from vist3a.wan.tiny import build_tiny_wan

    tiny = build_tiny_wan(seed=0)
    pipe = WanPipeline(tokenizer=tiny.tokenizer, text_encoder=tiny.text_encoder.to(cuda), vae=tiny.vae.to(cuda),
                       transformer=tiny.transformer.to(cuda), scheduler=make_scheduler(5.0))
    pipe.set_progress_bar_config(disable=True)
    drawn = []
    prepare = pipe.prepare_latents
    pipe.prepare_latents = lambda *a, **k: drawn.append(prepare(*a, **k)) or drawn[-1]
    seed_everything(OFFICIAL_SEED)
    with torch.no_grad():
        for p in ("a red car", "a wooden boat", "a stone tower"):
            pipe(prompt=build_prompt(p), negative_prompt=NEGATIVE_PROMPT, num_inference_steps=2, guidance_scale=7.5,
                 output_type="latent", num_frames=5, height=32, width=32)
    assert all(d.device.type == "cuda" for d in drawn)
    for k, noise in enumerate(drawn):
        assert torch.equal(official_noise(tuple(noise.shape), cuda, index=k), noise), k
    assert not torch.equal(drawn[0], drawn[1])


# ------------------------------------------------------------------------------------ scene meshes


def test_splats_to_mesh_through_gsplat_matches_the_cpu_mesh(cuda):
    """Meshing renders five feature channels (colour, z, z^2) through gsplat on CUDA: same topology and
    surface as the torch renderer on the CPU."""
    pytest.importorskip("gsplat")
    import mesh_scenes

    from vist3a.mesh import mesh_topology, splats_to_mesh

    scene = mesh_scenes.torus(n=5000)
    cpu = splats_to_mesh(scene.gaussians, None, resolution=48, image_size=96, extra_views=16, backend="torch")
    gpu = splats_to_mesh(scene.gaussians.to(cuda), None, resolution=48, image_size=96, extra_views=16, backend="gsplat")
    for m in (cpu, gpu):
        t = mesh_topology(m.vertices, m.faces)
        assert t.components == 1 and t.genus == 1, t
    c_cpu = mesh_scenes.chamfer(scene, cpu.vertices, cpu.faces, m=20_000)["chamfer"]
    c_gpu = mesh_scenes.chamfer(scene, gpu.vertices, gpu.faces, m=20_000)["chamfer"]
    assert c_gpu < 1.5 * c_cpu + 1e-3, (c_gpu, c_cpu)


# ------------------------------------------------------------------------------------ cuDNN attention


def test_cudnn_attention_is_chosen_and_runs(cuda):
    from torch.profiler import ProfilerActivity, profile

    from vist3a.pipeline import GenerateSettings, _cudnn_attention_works

    pipe = tiny_pipe()
    if torch.cuda.get_device_capability(cuda) >= (9, 0):  # Hopper: cuDNN attention must be available
        assert _cudnn_attention_works(cuda)
    if not _cudnn_attention_works(cuda):
        assert pipe.plan.attention is None
        pytest.skip("cuDNN attention does not run on this GPU / build; SDPA is used")
    assert pipe.plan.attention == "_native_cudnn"
    tr = pipe.wan.transformer
    x = torch.randn(2, 16, 2, 8, 8, device=cuda, dtype=torch.bfloat16)
    ctx = torch.randn(2, 512, 4096, device=cuda, dtype=torch.bfloat16) * 0.1
    t = torch.tensor([500.0, 500.0], device=cuda)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        out = tr(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
        torch.cuda.synchronize()
    ops = {e.key for e in prof.key_averages()}
    assert "aten::_scaled_dot_product_cudnn_attention" in ops, sorted(o for o in ops if "attention" in o)
    # same numbers as PyTorch's default SDPA, within bf16 noise
    tr.set_attention_backend("native")
    with torch.no_grad():
        ref = tr(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
    assert rel(out, ref) <= BF16_TOL
    tr.set_attention_backend("_native_cudnn")
    scene, latent = pipe.generate("a red car", GenerateSettings(**SMALL))
    assert torch.isfinite(latent).all() and scene.gaussians.num > 0


# ---------------------------------------------------------------------------------- block streaming


def _streams_of(trace: dict, cat: str, name_part: str = "") -> set:
    out = set()
    for ev in trace.get("traceEvents", []):
        if ev.get("cat") == cat and name_part in ev.get("name", ""):
            stream = (ev.get("args") or {}).get("stream", ev.get("tid"))
            out.add(stream)
    return out


def test_block_streamer_copies_on_a_side_stream(cuda, tmp_path):
    from gpu_check_deps import BlockStreamer
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    blocks = nn.Sequential(*[nn.Sequential(nn.Linear(1024, 1024), nn.GELU()) for _ in range(6)]).to(cuda, torch.bfloat16)
    x = torch.randn(256, 1024, device=cuda, dtype=torch.bfloat16)
    with torch.no_grad():
        expected = blocks(x)
    streamer = BlockStreamer(list(blocks), cuda, prefetch=1, cyclic=True)
    assert all(m.is_pinned() for ms in streamer.masters for m in ms)
    assert streamer.copy_stream is not None and streamer.copy_stream != torch.cuda.current_stream(cuda)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        outs = [blocks(x) for _ in range(3)]
        torch.cuda.synchronize()
    for out in outs:
        assert torch.equal(out, expected)
    assert streamer.max_in_flight <= 2 and streamer.loads >= 3 * len(blocks)
    trace_path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(trace_path))
    trace = json.loads(trace_path.read_text())
    copies = _streams_of(trace, "gpu_memcpy", "HtoD")
    kernels = _streams_of(trace, "kernel")
    assert copies and kernels, "the profiler saw no host->device copies or no kernels"
    assert not copies & kernels, f"weight copies ran on the compute stream: copies {copies}, kernels {kernels}"
    pinned = [ev["name"] for ev in trace["traceEvents"] if ev.get("cat") == "gpu_memcpy" and "HtoD" in ev.get("name", "")]
    assert all("Pinned" in n for n in pinned), set(pinned)  # pageable copies would block the host
    streamer.remove()


def test_offload_modes_agree_on_cuda():
    from vist3a.pipeline import GenerateSettings

    s = GenerateSettings(**SMALL)
    _, base = tiny_pipe(offload="none").generate("a red car", s)
    for mode, cap in (("text_encoder", None), ("model", None), ("sequential", 1e-4)):
        pipe = tiny_pipe(offload=mode, memory_cap_gib=cap)
        assert pipe.plan.offload == mode
        _, latent = pipe.generate("a red car", s)
        assert rel(latent, base) <= 1e-3, mode
        if mode == "sequential":
            assert pipe.plan.streamed_blocks == len(pipe.wan.transformer.blocks)
            assert pipe._streamers["transformer"].copy_stream is not None


# --------------------------------------------------------------------------------------- host syncs


@pytest.mark.parametrize("offload", ["none", "sequential"])
def test_denoising_loop_makes_no_host_syncs(offload):
    from vist3a.wan import sample_latents

    pipe = tiny_pipe(offload=offload, memory_cap_gib=1e-4 if offload == "sequential" else None)
    pos, neg = pipe.encode_prompt("a red car")
    common = dict(num_frames=5, height=64, width=64, steps=4, cfg=7.5, seed=0, check_syncs=True)
    with pipe.stage("denoise"):  # CUDA sync debug mode "error": any sync inside the loop raises
        out = sample_latents(pipe.wan, pos, neg, sync_free=True, batched_cfg=True, **common)
    assert torch.isfinite(out).all()
    if offload == "none":  # the check is real: diffusers' UniPC step reads values on the host
        with pytest.raises(RuntimeError), pipe.stage("denoise"):
            sample_latents(pipe.wan, pos, neg, sync_free=False, batched_cfg=True, **common)
    assert torch.cuda.get_sync_debug_mode() == 0  # restored


# ----------------------------------------------------------------- evaluation precision as officially run


def test_nvs_official_fp16_path_runs_on_cuda(cuda):
    """`eval nvs` default on CUDA: bf16-cast Linear/Conv2d outside the heads, fp16 autocast (nvs_eval.py); the
    prediction stays finite and near fp32. The deviation is printed for the record (gpu_check keeps the log)."""
    from vist3a.evaluation import nvs
    from vist3a.tiny import build_tiny_decoder
    from vist3a.wan.tiny import build_tiny_wan

    ref = nvs.NVSModel("stitched", build_tiny_decoder(seed=0).to(cuda).eval(), vae=build_tiny_wan(seed=0, device=cuda).vae.eval())
    half = nvs.prepare_precision(nvs.NVSModel("stitched", build_tiny_decoder(seed=0).to(cuda).eval(),
                                              vae=build_tiny_wan(seed=0, device=cuda).vae.eval()), "fp16")
    g = torch.Generator().manual_seed(0)
    ctx, v = torch.rand(1, 5, 3, 28, 28, generator=g), torch.rand(1, 5, 3, 32, 32, generator=g)
    a, b = half.predict(ctx, v), ref.predict(ctx, v)
    assert torch.isfinite(a.extrinsics).all() and torch.isfinite(a.gaussians[0].means).all()
    print(f"nvs fp16 vs fp32: extrinsics rel {rel(a.extrinsics, b.extrinsics):.3e}")
    assert rel(a.extrinsics, b.extrinsics) < 0.1


def test_aesthetic_clip_fp16_on_cuda(cuda, tmp_path):
    """The aesthetic CLIP in fp16 on CUDA (as clip.load makes it) against the same weights in fp32."""
    sys.path.insert(0, str(ROOT / "tests"))
    from eval_helpers import OFFICIAL_RUNS, TINY_AESTHETIC_ARCH, tiny_aesthetic

    from vist3a.evaluation import gen

    tiny = tiny_aesthetic(tmp_path)
    args = (str(tiny.clip), str(tiny.head), TINY_AESTHETIC_ARCH)
    half = gen.load_aesthetic(*args, device=cuda)  # CUDA default: fp16
    full = gen.load_aesthetic(*args, device=cuda, half=False)
    assert half.dtype == torch.float16
    frames = gen.sample_frames(OFFICIAL_RUNS / "decode_small.mp4")
    a, b = half(frames)["aesthetic_avg"], full(frames)["aesthetic_avg"]
    print(f"aesthetic fp16 {a:.6f} fp32 {b:.6f}")
    assert abs(a - b) < 5e-3
