"""Seed modes: the official noise stream (seed_everything(12413) + WanPipeline drawing with no generator)
and the portable default."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from guards import HANG_S

from vist3a.errors import VIST3AError
from vist3a.wan import NEGATIVE_PROMPT, build_prompt, encode_prompt, sample_latents
from vist3a.wan.sampling import make_scheduler
from vist3a.wan.seeding import OFFICIAL_SEED, official_noise, portable_noise, seed_everything
from vist3a.wan.tiny import build_tiny_wan

SMALL = dict(num_frames=5, height=32, width=32)
PROMPTS = ["a red car", "a wooden boat on a lake"]


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_wan(seed=0)


def test_seed_everything_seeds_python_numpy_and_torch():
    seed_everything(OFFICIAL_SEED)
    drawn = (random.random(), np.random.rand(), torch.rand(()).item())
    random.seed(OFFICIAL_SEED), np.random.seed(OFFICIAL_SEED), torch.manual_seed(OFFICIAL_SEED)
    assert drawn == (random.random(), np.random.rand(), torch.rand(()).item())
    with pytest.raises(VIST3AError, match="out of range"):
        seed_everything(-1)


def test_official_noise_replays_the_stream():
    shape = (1, 16, 2, 4, 4)
    seed_everything(OFFICIAL_SEED)
    stream = [torch.randn(shape) for _ in range(3)]
    for k in range(3):
        assert torch.equal(official_noise(shape, "cpu", index=k), stream[k])
    # On the CPU the first draw of the global stream is what a fresh CPU generator gives; later ones are not.
    assert torch.equal(official_noise(shape, "cpu", index=0), portable_noise(shape, "cpu", OFFICIAL_SEED))
    assert not torch.equal(official_noise(shape, "cpu", index=1), portable_noise(shape, "cpu", OFFICIAL_SEED))
    with pytest.raises(VIST3AError, match="prompt index"):
        official_noise(shape, "cpu", index=-1)


def test_official_mode_matches_wan_pipeline_with_global_seed(tiny):
    """inference_t23d.py: seed_everything(12413) once, then WanPipeline(..., no generator) per prompt."""
    from diffusers import WanPipeline

    pipe = WanPipeline(tokenizer=tiny.tokenizer, text_encoder=tiny.text_encoder, vae=tiny.vae,
                       transformer=tiny.transformer, scheduler=make_scheduler(5.0))
    pipe.set_progress_bar_config(disable=True)
    drawn = []
    prepare = pipe.prepare_latents
    pipe.prepare_latents = lambda *a, **k: drawn.append(prepare(*a, **k)) or drawn[-1]
    mean = torch.tensor(tiny.vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(tiny.vae.config.latents_std).view(1, 16, 1, 1, 1)
    seed_everything(OFFICIAL_SEED)
    references = []
    with torch.no_grad():
        for p in PROMPTS:  # one stream across the prompts of the run
            out = pipe(prompt=build_prompt(p), negative_prompt=NEGATIVE_PROMPT, num_inference_steps=3, guidance_scale=7.5,
                       output_type="latent", **SMALL).frames
            references.append(out * std + mean)

    uncond = encode_prompt(tiny, NEGATIVE_PROMPT)
    for k, p in enumerate(PROMPTS):
        assert torch.equal(official_noise((1, 16, 2, 4, 4), "cpu", index=k), drawn[k])  # bit-identical noise
        ours = sample_latents(tiny, encode_prompt(tiny, build_prompt(p)), uncond, steps=3, cfg=7.5, shift=5.0,
                              seed=OFFICIAL_SEED, seed_mode="official", prompt_index=k, **SMALL)
        ref = references[k]
        assert (ours - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())
    portable = sample_latents(tiny, encode_prompt(tiny, build_prompt(PROMPTS[1])), uncond, steps=3, cfg=7.5,
                              seed=OFFICIAL_SEED, **SMALL)
    assert not torch.allclose(portable, references[1], atol=1e-3)  # the second prompt continues the stream


def test_unknown_seed_mode_is_refused(tiny):
    from vist3a.wan.sampling import SamplingInputError

    with pytest.raises(SamplingInputError, match="seed_mode"):
        sample_latents(tiny, torch.zeros(1, 8, 32), None, steps=1, seed=0, seed_mode="gpu", **SMALL)


def test_cli_seed_mode_options():
    from vist3a.cli import _seed, build_parser

    parse = lambda *a: build_parser().parse_args(["generate", "x", "-o", "o.ply", "--tiny", *a])  # noqa: E731
    assert (_seed(parse()), parse().seed_mode) == (0, "portable")
    assert (_seed(parse("--seed-mode", "official")), parse("--seed-mode", "official").prompt_index) == (OFFICIAL_SEED, 0)
    assert _seed(parse("--seed-mode", "official", "--seed", "7")) == 7
    with pytest.raises(SystemExit):
        parse("--seed-mode", "gpu")


def test_cli_generates_with_official_seed_mode(tmp_path):
    from vist3a.formats import load_ply

    out = tmp_path / "official.ply"
    proc = subprocess.run([sys.executable, "-m", "vist3a", "generate", "a small red barn", "-o", str(out), "--tiny",
                           "--frames", "5", "--size", "64", "--steps", "2", "--seed-mode", "official", "--prompt-index", "1"],
                          capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert torch.isfinite(load_ply(out).means).all()
    bad = subprocess.run([sys.executable, "-m", "vist3a", "generate", "x", "-o", str(tmp_path / "o.ply"), "--tiny",
                          "--seed-mode", "official", "--prompt-index", "-1"], capture_output=True, text=True, timeout=HANG_S)
    assert bad.returncode == 2 and "--prompt-index" in bad.stderr and "Traceback" not in bad.stderr
