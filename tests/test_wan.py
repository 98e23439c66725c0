"""Wan 2.1 loading, sampling and VIST3A LoRA on tiny random-weight models written in the released layouts."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from the hub

import copy
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vist3a.errors import CheckpointError
from vist3a.wan import (
    CAMERA_TEMPLATE,
    NEGATIVE_PROMPT,
    Cancelled,
    SamplingInputError,
    apply_vist3a_lora,
    build_prompt,
    decode_latents,
    denormalize_latents,
    encode_prompt,
    load_transformer_file,
    load_vae_file,
    load_vist3a_lora,
    load_wan,
    load_wan_diffusers,
    load_wan_single_files,
    lora_to_comfy,
    normalize_latents,
    remove_vist3a_lora,
    sample_latents,
    save_comfy_lora,
    set_lora_strength,
    sniff_wan_path,
)
from vist3a.wan.configs import (
    UMT5_XXL_CONFIG,
    WAN_T2V_1_3B_TRANSFORMER_CONFIG,
    WAN_T2V_14B_TRANSFORMER_CONFIG,
    WAN_VAE_CONFIG,
    transformer_config_from_state_dict,
    umt5_config_from_state_dict,
)
from vist3a.wan.lora import VIST3A_LORA_TARGETS, applied_loras
from vist3a.wan.sampling import make_scheduler
from vist3a.wan.state_dicts import dequantize_comfy_fp8
from vist3a.wan.tiny import (
    TINY_SPM_PATH,
    build_tiny_wan,
    save_tiny_vist3a_lora,
    save_tiny_wan_comfy_single_files,
    save_tiny_wan_diffusers,
    transformer_to_original_keys,
    vae_to_original_keys,
)
from vist3a.wan.tokenizer import tokenizer_from_spm

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = dict(num_frames=5, height=32, width=32)  # latent [B, 16, 2, 4, 4]


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_wan(seed=0)


@pytest.fixture(scope="module")
def files(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("wan")
    return {
        "diffusers": save_tiny_wan_diffusers(root / "Wan-tiny-Diffusers", tiny),
        "comfy": save_tiny_wan_comfy_single_files(root / "comfy", tiny),
        "plain": save_tiny_wan_comfy_single_files(root / "comfy_plain", tiny, text_encoder_format="plain"),
        "lora": save_tiny_vist3a_lora(root / "vist3a_tiny_lora_ema", tiny.transformer, seed=3),
        "root": root,
    }


def _inputs(batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, 16, 2, 4, 4, generator=g),
        timestep=torch.full((batch,), 500.0),
        encoder_hidden_states=torch.randn(batch, 512, 4096, generator=g),
        return_dict=False,
    )


@torch.no_grad()
def _transformer_out(transformer, seed=0):
    return transformer(**_inputs(seed=seed))[0]


@torch.no_grad()
def _vae_out(vae):
    z = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    return vae.decode(z, return_dict=False)[0]


@torch.no_grad()
def _te_out(models, text="a red car on a street"):
    ids = models.tokenizer([text], return_tensors="pt")
    return models.text_encoder(ids.input_ids, ids.attention_mask).last_hidden_state


# ------------------------------------------------------------------------------------------------
# prompts
# ------------------------------------------------------------------------------------------------


def test_official_prompt_wording():
    assert build_prompt("a red car") == (
        "The camera rotates around the scene, maintaining constant distance: `a red car`. "
        "The orbiting trajectory captures 3D structure and consistency."
    )
    assert build_prompt("a {curly} car", camera_template=False) == "a {curly} car"
    assert "`{x}`" in build_prompt("{x}")
    assert CAMERA_TEMPLATE.count("{prompt}") == 1
    assert NEGATIVE_PROMPT.startswith("Background blur, Blurred background, Blurred scene, Artifacts")
    assert NEGATIVE_PROMPT.endswith("fused fingers, too many fingers, long neck")
    assert len(NEGATIVE_PROMPT.split(", ")) == 27


# ------------------------------------------------------------------------------------------------
# tokenizer
# ------------------------------------------------------------------------------------------------


def test_tokenizer_from_spm_matches_sentencepiece_with_nfkc():
    sentencepiece = pytest.importorskip("sentencepiece")
    from make_tiny_spm import SPM_CORPUS  # tools/, on sys.path via conftest

    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SPM_CORPUS.splitlines()), model_writer=buf, vocab_size=200, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, normalization_rule_name="nmt_nfkc", num_threads=1,
        hard_vocab_limit=False, character_coverage=1.0, minloglevel=2, control_symbols=["<ctrl>"],
    )
    data = buf.getvalue()
    sp = sentencepiece.SentencePieceProcessor(model_proto=data)
    tok = tokenizer_from_spm(data)
    assert len(tok) == sp.get_piece_size()
    for text in ["a red car", "ｆｕｌｌｗｉｄｔｈ ｃａｒ", "ﬁne  double   spaces ", "  leading", "Ⅻ café naïve",
                 "tab\there\nnewline", "unknown 字 ☃"]:
        assert tok(text)["input_ids"] == sp.encode(text) + [1], text
    padded = tok(["a red car"], padding="max_length", max_length=12, truncation=True)
    assert padded["input_ids"][0][-1] == 0 and padded["attention_mask"][0][-1] == 0


def test_tiny_tokenizer_is_shipped_and_small():
    assert TINY_SPM_PATH.is_file() and TINY_SPM_PATH.stat().st_size < 300_000


# ------------------------------------------------------------------------------------------------
# loaders
# ------------------------------------------------------------------------------------------------


def test_diffusers_folder_loads_identical_models(tiny, files):
    folder = files["diffusers"]
    assert sniff_wan_path(folder).kind == "diffusers_folder"
    models = load_wan_diffusers(folder, dtype=torch.float32)
    assert torch.equal(_transformer_out(models.transformer), _transformer_out(tiny.transformer))
    assert torch.equal(_vae_out(models.vae), _vae_out(tiny.vae))
    assert torch.equal(_te_out(models), _te_out(tiny))
    text = "The camera rotates around a wooden table"
    assert models.tokenizer(text)["input_ids"] == tiny.tokenizer(text)["input_ids"]
    # the dispatcher takes the same folder, optionally with a component from a single file
    mixed = load_wan(folder, vae=files["comfy"]["vae"], dtype=torch.float32)
    assert mixed.transformer.config.num_layers == 2 and mixed.sources["vae"] == str(files["comfy"]["vae"])
    assert torch.equal(_vae_out(mixed.vae), _vae_out(tiny.vae))


def test_folder_overrides_take_one_tokenizer_rule(tiny, files):
    """load_wan (CLI, pipeline, training and the Load Wan node): a text-encoder file brings its embedded tokenizer,
    one without falls back to the folder's, and components can be left out."""
    folder, text = files["diffusers"], "a lighthouse on a cliff at dusk"
    comfy_te = files["comfy"]["text_encoder"]
    with_spm = load_wan(folder, text_encoder=comfy_te, dtype=torch.float32)
    assert with_spm.sources["tokenizer"] == f"{comfy_te} (spiece_model)"
    assert with_spm.tokenizer(text)["input_ids"] == tiny.tokenizer(text)["input_ids"]
    assert "tokenizer from " + f"{comfy_te} (spiece_model)" in with_spm.summary()
    stripped = files["root"] / "umt5_folder_tokenizer.safetensors"
    save_file({k: v for k, v in load_file(str(files["plain"]["text_encoder"])).items() if k != "spiece_model"}, str(stripped))
    without = load_wan(folder, text_encoder=stripped, dtype=torch.float32)
    assert without.sources["tokenizer"] == str(folder / "tokenizer") and torch.equal(_te_out(without), _te_out(tiny))
    bare = load_wan(folder, skip=["vae", "text_encoder"], dtype=torch.float32)
    assert bare.vae is None and bare.text_encoder is None and bare.tokenizer is None and bare.transformer is not None
    assert bare.summary().endswith(f"transformer from {folder}")
    with pytest.raises(ValueError, match="skip may name"):
        load_wan(folder, skip=["tokenizer"])


def test_comfy_single_files_are_original_format(files):
    paths = files["comfy"]
    tr = load_file(str(paths["transformer"]))
    for key in ("patch_embedding.weight", "text_embedding.0.weight", "time_embedding.0.weight",
                "time_projection.1.weight", "head.head.weight", "head.modulation", "blocks.0.modulation",
                "blocks.0.self_attn.q.weight", "blocks.0.self_attn.o.weight", "blocks.0.cross_attn.k.weight",
                "blocks.0.self_attn.norm_q.weight", "blocks.0.norm3.weight", "blocks.0.ffn.0.weight"):
        assert key in tr, key
    assert not any(k.startswith("condition_embedder") or ".attn1." in k or "to_q" in k for k in tr)
    vae = load_file(str(paths["vae"]))
    for key in ("encoder.conv1.weight", "encoder.downsamples.0.residual.0.gamma", "encoder.middle.1.to_qkv.weight",
                "encoder.head.2.weight", "conv1.weight", "conv2.weight", "decoder.middle.0.residual.6.weight",
                "decoder.upsamples.4.shortcut.weight", "decoder.upsamples.3.resample.1.weight",
                "decoder.upsamples.7.time_conv.weight", "decoder.upsamples.14.residual.6.bias", "decoder.head.0.gamma"):
        assert key in vae, key
    assert not any("mid_block" in k or "up_blocks" in k or "quant_conv" in k for k in vae)
    te = load_file(str(paths["text_encoder"]))
    assert te["encoder.block.0.layer.0.SelfAttention.q.weight"].dtype == torch.float8_e4m3fn
    assert "encoder.block.0.layer.0.SelfAttention.q.scale_weight" in te and "scaled_fp8" in te
    assert bytes(te["spiece_model"].numpy().tobytes()) == TINY_SPM_PATH.read_bytes()
    kinds = {name: sniff_wan_path(p).kind for name, p in paths.items()}
    assert kinds == {"transformer": "transformer", "vae": "vae", "text_encoder": "text_encoder"}


def test_comfy_single_files_load_identical_models(tiny, files):
    paths = files["comfy"]
    models = load_wan_single_files(paths["transformer"], paths["vae"], paths["text_encoder"], dtype=torch.float32)
    assert models.name.startswith("Wan2.1-T2V-custom")
    assert torch.equal(_transformer_out(models.transformer), _transformer_out(tiny.transformer))
    assert torch.equal(_vae_out(models.vae), _vae_out(tiny.vae))
    # The tokenizer comes from the embedded spiece_model.
    text = "a small house in a snowy forest"
    assert models.tokenizer(text)["input_ids"] == tiny.tokenizer(text)["input_ids"]
    # fp8: the loader computes exactly weight.float() * scale_weight; compare against that reference.
    raw = load_file(str(paths["text_encoder"]))
    reference = copy.deepcopy(tiny.text_encoder)
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if raw.get(name) is not None and raw[name].dtype == torch.float8_e4m3fn:
                scale = raw[name[: -len(".weight")] + ".scale_weight"]
                param.copy_(raw[name].float() * scale)
    ref_models = copy.copy(tiny)
    ref_models.text_encoder = reference
    assert torch.equal(_te_out(models), _te_out(ref_models))
    original = _te_out(tiny)
    assert (_te_out(models) - original).norm() / original.norm() < 0.1
    # bf16 request: diffusers' fp32 modules stay fp32, the rest is bf16.
    half = load_transformer_file(paths["transformer"], dtype=torch.bfloat16)
    assert half.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert half.scale_shift_table.dtype == torch.float32


def test_plain_text_encoder_and_explicit_tokenizer(tiny, files):
    plain = files["plain"]["text_encoder"]
    models = load_wan(files["plain"]["transformer"], vae=files["plain"]["vae"], text_encoder=plain, dtype=torch.float32)
    assert torch.equal(_te_out(models), _te_out(tiny))
    # Without an embedded spiece_model the tokenizer must be given explicitly ...
    stripped = files["root"] / "umt5_no_tokenizer.safetensors"
    tensors = {k: v for k, v in load_file(str(plain)).items() if k != "spiece_model"}
    save_file(tensors, str(stripped))
    with pytest.raises(CheckpointError, match="umt5_no_tokenizer.safetensors.*tokenizer"):
        load_wan_single_files(text_encoder=stripped, dtype=torch.float32)
    # ... e.g. as the diffusers folder (its tokenizer/ subfolder).
    models = load_wan_single_files(text_encoder=stripped, tokenizer=files["diffusers"], dtype=torch.float32)
    assert torch.equal(_te_out(models), _te_out(tiny))


def test_key_maps_agree_with_diffusers_converters_on_released_sizes():
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers, convert_wan_vae_to_diffusers

    with init_empty_weights():
        vae = AutoencoderKLWan.from_config(WAN_VAE_CONFIG)
    sd = vae.state_dict()
    original = vae_to_original_keys(sd)
    assert "decoder.upsamples.4.shortcut.weight" in original and len(original) == len(sd)
    assert set(convert_wan_vae_to_diffusers(original)) == set(sd)
    for name, cfg in (("Wan2.1-T2V-1.3B", WAN_T2V_1_3B_TRANSFORMER_CONFIG),
                      ("Wan2.1-T2V-14B", WAN_T2V_14B_TRANSFORMER_CONFIG)):
        with init_empty_weights():
            model = WanTransformer3DModel.from_config(cfg)
        sd = model.state_dict()
        back = convert_wan_transformer_to_diffusers(dict(transformer_to_original_keys(sd)))
        assert set(back) == set(sd)
        inferred, size = transformer_config_from_state_dict(back)
        assert size == name and inferred == cfg


def test_umt5_xxl_config_is_inferred_from_shapes():
    from accelerate import init_empty_weights
    from transformers import UMT5Config, UMT5EncoderModel

    with init_empty_weights():
        model = UMT5EncoderModel(UMT5Config(**UMT5_XXL_CONFIG))
    shapes = {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    assert umt5_config_from_state_dict(shapes) == UMT5_XXL_CONFIG


def test_fp8_dequantisation_rules():
    w = torch.randn(4, 3)
    scale = w.abs().max() / 448
    q = (w / scale).to(torch.float8_e4m3fn)
    sd = {"a.weight": q, "a.scale_weight": scale.reshape(()), "b.weight": w.half(),
          "scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    out = dequantize_comfy_fp8(sd)
    assert set(out) == {"a.weight", "b.weight"}
    assert torch.equal(out["a.weight"], q.float() * scale) and out["b.weight"].dtype == torch.float16
    per_row = dict(sd, **{"a.scale_weight": torch.ones(4, 1)})
    with pytest.raises(CheckpointError, match="a.weight.*per-tensor"):
        dequantize_comfy_fp8(per_row, "x.safetensors")
    quant = dict(sd, **{"a.comfy_quant": torch.tensor(list(b'{"format": "nvfp4"}'), dtype=torch.uint8)})
    with pytest.raises(CheckpointError, match="nvfp4"):
        dequantize_comfy_fp8(quant, "x.safetensors")


def test_bad_paths_give_clear_errors(files, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(CheckpointError, match=f"{missing}.*does not exist"):
        load_wan_diffusers(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=f"{empty}.*model_index.json"):
        load_wan_diffusers(empty)
    with pytest.raises(CheckpointError, match="model_index.json"):
        load_wan(empty)
    broken = tmp_path / "broken"
    shutil.copytree(files["diffusers"], broken)
    (broken / "transformer" / "config.json").unlink()
    with pytest.raises(CheckpointError, match=f"{broken / 'transformer'}.*config.json"):
        load_wan_diffusers(broken)
    vae_file = files["comfy"]["vae"]
    with pytest.raises(CheckpointError, match=f"{vae_file.name} is a Wan VAE, not a Wan diffusion model"):
        load_transformer_file(vae_file)
    with pytest.raises(CheckpointError, match="is a T5/UMT5 text encoder, not the Wan 2.1 VAE"):
        load_vae_file(files["comfy"]["text_encoder"])
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"<html>not found</html>")
    with pytest.raises(CheckpointError, match="junk.safetensors' is invalid"):
        load_transformer_file(junk)
    truncated = tmp_path / "truncated.safetensors"
    tensors = load_file(str(files["comfy"]["transformer"]))
    save_file({k: v for k, v in tensors.items() if "blocks.1.ffn" not in k}, str(truncated))
    with pytest.raises(CheckpointError, match="truncated.safetensors.*missing.*blocks.1.ffn"):
        load_transformer_file(truncated)


# ------------------------------------------------------------------------------------------------
# sampling
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batched_cfg", [True, False])
def test_sampler_matches_wan_pipeline(tiny, batched_cfg):
    from diffusers import WanPipeline

    pipe = WanPipeline(tokenizer=tiny.tokenizer, text_encoder=tiny.text_encoder, vae=tiny.vae,
                       transformer=tiny.transformer, scheduler=make_scheduler(5.0))
    pipe.set_progress_bar_config(disable=True)
    prompt, negative = build_prompt("a red car"), NEGATIVE_PROMPT
    with torch.no_grad():
        reference = pipe(prompt=prompt, negative_prompt=negative, num_inference_steps=3, guidance_scale=7.5,
                         output_type="latent", generator=torch.Generator("cpu").manual_seed(11), **SMALL).frames
        expected_embeds = pipe.encode_prompt(prompt, negative, device="cpu", max_sequence_length=512)
    reference = reference * torch.tensor(tiny.vae.config.latents_std).view(1, 16, 1, 1, 1) + \
        torch.tensor(tiny.vae.config.latents_mean).view(1, 16, 1, 1, 1)

    cond, uncond = encode_prompt(tiny, prompt), encode_prompt(tiny, negative)
    assert cond.shape == (1, 512, 4096)
    assert torch.allclose(cond, expected_embeds[0], atol=1e-5) and torch.allclose(uncond, expected_embeds[1], atol=1e-5)
    seen = []
    raw = sample_latents(tiny, cond, uncond, steps=3, cfg=7.5, shift=5.0, seed=11, batched_cfg=batched_cfg,
                         callback=lambda step, total: seen.append((step, total)), **SMALL)
    assert raw.shape == (1, 16, 2, 4, 4) and raw.dtype == torch.float32
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert (raw - reference).abs().max() <= 1e-5 * max(1.0, reference.abs().max().item())
    # Different seed -> different latent (the seed is used).
    other = sample_latents(tiny, cond, uncond, steps=1, cfg=7.5, seed=12, **SMALL)
    assert not torch.allclose(other, raw)


def test_sampler_without_guidance_and_batch(tiny):
    cond = encode_prompt(tiny, ["a red car", "a blue boat"])
    calls = []
    hook = tiny.transformer.register_forward_hook(lambda mod, args, kwargs_out: calls.append(1))
    try:
        raw = sample_latents(tiny, cond, None, steps=2, seed=0, **SMALL)
    finally:
        hook.remove()
    assert raw.shape == (2, 16, 2, 4, 4) and len(calls) == 2
    assert not torch.allclose(raw[0], raw[1])


def test_cancellation_is_prompt(tiny):
    cond = encode_prompt(tiny, "a red car")
    calls, checks = [], []

    def should_cancel():
        checks.append(1)
        return len(checks) >= 2

    hook = tiny.transformer.register_forward_hook(lambda mod, args, out: calls.append(1))
    try:
        with pytest.raises(Cancelled, match="step 1 of 20"):
            sample_latents(tiny, cond, cond, steps=20, seed=0, should_cancel=should_cancel, **SMALL)
    finally:
        hook.remove()
    assert len(calls) == 1  # one batched CFG call for step 0, nothing after the cancel


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_frames=14), r"frames=14 .*4k\+1.*13 or 17"),
        (dict(num_frames=0), r"frames=0"),
        (dict(height=500), r"height=500 .*multiple of 16.*496 or 512"),
        (dict(width=8), r"width=8 .*multiple of 16"),
        (dict(steps=0), r"steps=0"),
    ],
)
def test_impossible_video_settings_are_refused(tiny, kwargs, message):
    embeds = torch.zeros(1, 512, 4096)
    settings = dict(SMALL, steps=2)
    settings.update(kwargs)
    with pytest.raises(SamplingInputError, match=message):
        sample_latents(tiny, embeds, None, seed=0, **settings)


def test_decode_and_latent_normalisation(tiny):
    raw = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    frames = decode_latents(tiny, raw)
    assert frames.shape == (1, 3, 5, 32, 32) and frames.dtype == torch.float32
    assert frames.min() >= -1 and frames.max() <= 1
    with torch.no_grad():
        assert torch.equal(frames, tiny.vae.decode(raw, return_dict=False)[0].clamp(-1, 1))
    z = normalize_latents(raw, tiny.vae)
    mean = torch.tensor(tiny.vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(tiny.vae.config.latents_std).view(1, 16, 1, 1, 1)
    assert torch.allclose(z, (raw - mean) / std)
    assert torch.allclose(denormalize_latents(z, tiny.vae.config), raw, atol=1e-6)
    with pytest.raises(SamplingInputError, match="expected Wan latents"):
        decode_latents(tiny, torch.zeros(1, 4, 2, 4, 4))


# ------------------------------------------------------------------------------------------------
# LoRA
# ------------------------------------------------------------------------------------------------


def test_lora_file_layout_matches_official(files):
    folder = files["lora"]
    reference = json.loads((FIXTURES / "stitched_checkpoint_keys.json").read_text())["wan_lora_peft"]
    written = json.loads((folder / "adapter_config.json").read_text())
    expected = dict(reference["adapter_config_json"])
    assert sorted(written.pop("target_modules")) == sorted(expected.pop("target_modules"))
    assert written == expected
    keys = set(load_file(str(folder / "adapter_model.safetensors")))
    assert keys == {name for name, _shape, _dtype in reference["tiny_model_adapter_keys"]}  # same 2-block naming
    assert sniff_wan_path(folder).kind == "lora_folder"


def test_lora_matches_peft_and_strength_is_adjustable(tiny, files):
    from peft import PeftModel

    transformer = copy.deepcopy(tiny.transformer)
    keys_before = list(transformer.state_dict())
    base = _transformer_out(transformer)
    with torch.no_grad():
        reference = PeftModel.from_pretrained(copy.deepcopy(tiny.transformer), str(files["lora"]))(**_inputs())[0]
    assert not torch.allclose(reference, base, atol=1e-3)

    lora = apply_vist3a_lora(transformer, files["lora"], strength=1.0)
    assert (lora.rank, lora.alpha, lora.scaling) == (8, 16.0, 2.0)
    assert type(transformer).__name__ == "WanTransformer3DModel"
    assert torch.allclose(_transformer_out(transformer), reference, atol=1e-6)
    set_lora_strength(transformer, 0.0)
    assert torch.equal(_transformer_out(transformer), base)
    set_lora_strength(transformer, 0.5)
    half = _transformer_out(transformer)
    set_lora_strength(transformer, 0.5, merge=True)  # folded into the weights: same result
    assert applied_loras(transformer)["vist3a"]["merged"]
    assert torch.allclose(_transformer_out(transformer), half, atol=1e-5)
    # effective weight = W + strength * alpha/r * B @ A
    layer = transformer.blocks[1].attn2.to_out[0]
    w0 = tiny.transformer.blocks[1].attn2.to_out[0].weight
    a = lora.state_dict["blocks.1.attn2.to_out.0.lora_A.weight"]
    b = lora.state_dict["blocks.1.attn2.to_out.0.lora_B.weight"]
    assert torch.allclose(layer.base_layer.weight, w0 + 0.5 * 2.0 * b @ a, atol=1e-6)
    apply_vist3a_lora(transformer, lora, strength=1.0)  # re-application replaces, no reload of the base
    assert torch.allclose(_transformer_out(transformer), reference, atol=1e-5)
    remove_vist3a_lora(transformer)
    assert list(transformer.state_dict()) == keys_before and applied_loras(transformer) == {}
    assert torch.allclose(_transformer_out(transformer), base, atol=1e-5)


def test_lora_to_comfy_covers_all_keys_and_same_math(tiny, files, tmp_path):
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    lora = load_vist3a_lora(files["lora"])
    comfy = lora_to_comfy(lora)
    assert len(comfy) == 3 * len(lora.modules) == 3 * 8 * 2
    assert "diffusion_model.blocks.1.cross_attn.o.lora_B.weight" in comfy
    assert comfy["diffusion_model.blocks.0.self_attn.q.alpha"].item() == 16.0
    original = transformer_to_original_keys(tiny.transformer.state_dict())
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in comfy}
    modules = {m[: -len(".lora_A")] if m.endswith((".lora_A", ".lora_B")) else m for m in modules}
    assert len(modules) == 16
    assert all(m[len("diffusion_model."):] + ".weight" in original for m in modules)
    # Apply the ComfyUI tensors the way ComfyUI does (W += strength * alpha / rank * up @ down) ...
    strength = 0.7
    patched = {k: v.clone() for k, v in original.items()}
    for m in modules:
        up, down = comfy[f"{m}.lora_B.weight"], comfy[f"{m}.lora_A.weight"]
        patched[m[len("diffusion_model."):] + ".weight"] += strength * comfy[f"{m}.alpha"] / down.shape[0] * (up @ down)
    native = WanTransformer3DModel.from_config(tiny.transformer.config)
    native.load_state_dict(convert_wan_transformer_to_diffusers(patched))
    # ... and compare with our PEFT application at the same strength.
    ours = copy.deepcopy(tiny.transformer)
    apply_vist3a_lora(ours, lora, strength=strength)
    assert torch.allclose(_transformer_out(native.eval()), _transformer_out(ours), atol=1e-5)
    path = save_comfy_lora(lora, tmp_path / "vist3a_tiny_comfy.safetensors")
    assert set(load_file(str(path))) == set(comfy)


def test_lora_for_another_model_size_is_refused(tiny, files, tmp_path):
    folder = tmp_path / "vist3a_14b_lora_ema"
    folder.mkdir()
    shutil.copy(files["lora"] / "adapter_config.json", folder)
    tensors = {}
    for target in VIST3A_LORA_TARGETS:  # only the last 14B block, to keep the file small
        tensors[f"base_model.model.blocks.39.{target}.lora_A.weight"] = torch.zeros(8, 5120)
        tensors[f"base_model.model.blocks.39.{target}.lora_B.weight"] = torch.zeros(5120, 8)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    transformer = copy.deepcopy(tiny.transformer)
    with pytest.raises(CheckpointError, match=r"vist3a_14b_lora_ema was made for Wan2.1-T2V-14B \(40 blocks, width 5120\)"
                                              r".*loaded transformer is .*2 blocks.*width 256"):
        apply_vist3a_lora(transformer, folder)
    assert applied_loras(transformer) == {} and not hasattr(transformer, "peft_config")


def test_bad_lora_folders(files, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_vist3a_lora(tmp_path / "missing_lora")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(files["lora"] / "adapter_config.json", no_weights)
    with pytest.raises(CheckpointError, match=f"{no_weights} has no adapter_model.safetensors"):
        load_vist3a_lora(no_weights)
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    shutil.copy(files["lora"] / "adapter_model.safetensors", no_config)
    with pytest.raises(CheckpointError, match="no adapter_config.json"):
        load_vist3a_lora(no_config)
    comfy_style = tmp_path / "comfy_style"
    comfy_style.mkdir()
    shutil.copy(files["lora"] / "adapter_config.json", comfy_style)
    save_file({k: v.contiguous() for k, v in lora_to_comfy(files["lora"]).items()},
              str(comfy_style / "adapter_model.safetensors"))
    with pytest.raises(CheckpointError, match="not a VIST3A Wan LoRA key.*ComfyUI-format LoRA"):
        load_vist3a_lora(comfy_style)
