"""NaN and infinity are refused wherever a number enters, with one line naming the setting (vist3a.finite):
the CLI's argument types, the Python API's settings and functions, training configs. The ComfyUI nodes use
the same check through their error wrapper (tests/test_comfy_server.py::test_non_finite_inputs_are_refused)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from guards import HANG_S

from vist3a.errors import NonFiniteError, VIST3AError
from vist3a.finite import check_finite, check_finite_fields, finite_float, is_finite_number
from vist3a.pipeline import GenerateSettings

REPO = Path(__file__).resolve().parents[1]
BAD = [math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("value", BAD + [float("nan"), torch.tensor(float("nan")), torch.tensor(math.inf, dtype=torch.float16)])
def test_non_finite_scalars_are_caught(value):
    assert not is_finite_number(value)
    with pytest.raises(NonFiniteError, match=r"^where: cfg is .*; it must be a finite number"):
        check_finite(value, "cfg", where="where")


@pytest.mark.parametrize("value", [0.0, -1e300, 7.5, 3, True, "nan", None, torch.zeros(3), [1.0]])
def test_other_values_pass_unchanged(value):
    assert is_finite_number(value)
    assert check_finite(value, "x") is value


def test_error_is_a_user_error_on_one_line():
    with pytest.raises(NonFiniteError) as info:
        check_finite(math.nan, "lora_strength")
    assert isinstance(info.value, (VIST3AError, ValueError)) and "\n" not in str(info.value)


def test_dataclass_fields_nested_lists_and_dicts():
    @dataclass
    class Inner:
        lr: float = 1.0
        betas: tuple = (0.9, 0.99)

    @dataclass
    class Outer:
        inner: Inner = field(default_factory=Inner)
        weights: dict = field(default_factory=lambda: {"a": 1.0})

    check_finite_fields(Outer())
    with pytest.raises(NonFiniteError, match=r"inner\.betas\[1\] is inf"):
        check_finite_fields(Outer(Inner(betas=(0.9, math.inf))))
    with pytest.raises(NonFiniteError, match=r"weights\.a is nan"):
        check_finite_fields(Outer(weights={"a": math.nan}))


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
def test_finite_float_refuses_non_finite_text(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="not a finite number"):
        finite_float(text)
    assert finite_float("7.5") == 7.5


@pytest.mark.parametrize("name", ["cfg", "shift", "min_opacity"])
@pytest.mark.parametrize("value", BAD)
def test_generate_settings_refuse_non_finite(name, value):
    with pytest.raises(NonFiniteError, match=rf"GenerateSettings: {name} is"):
        GenerateSettings(**{name: value})


def test_sampling_and_lora_strength_refuse_non_finite():
    from vist3a.wan import sample_latents
    from vist3a.wan.lora import set_lora_strength
    from vist3a.wan.tiny import build_tiny_wan

    models = build_tiny_wan()
    emb = torch.zeros(1, 8, 4096)
    for kw in ({"cfg": math.nan}, {"shift": math.inf}):
        with pytest.raises(NonFiniteError, match=next(iter(kw))):
            sample_latents(models, emb, emb, num_frames=1, height=16, width=16, steps=1, seed=0, **kw)
    with pytest.raises(NonFiniteError, match="LoRA strength is nan"):
        set_lora_strength(models.transformer, math.nan)


def test_decoding_refuses_a_non_finite_min_opacity():
    from vist3a.functional import splats_from_images
    from vist3a.tiny import build_tiny_anysplat

    with pytest.raises(NonFiniteError, match="min_opacity is nan"):
        splats_from_images(build_tiny_anysplat(), torch.rand(2, 28, 28, 3), min_opacity=math.nan)


def test_render_cameras_refuse_non_finite():
    from vist3a.render.cameras import orbit_cameras

    with pytest.raises(NonFiniteError, match="elevation is nan"):
        orbit_cameras((0, 0, 0), 2.0, 4, elevation_deg=math.nan)
    with pytest.raises(NonFiniteError, match="orbit radius is inf"):
        orbit_cameras((0, 0, 0), math.inf, 4)


@pytest.mark.parametrize("args", [
    ["generate", "x", "-o", "{t}/o.ply", "--tiny", "--cfg", "nan"],
    ["generate", "x", "-o", "{t}/o.ply", "--tiny", "--lora-strength", "nan"],
    ["generate", "x", "-o", "{t}/o.ply", "--tiny", "--shift", "inf"],
    ["generate", "x", "-o", "{t}/o.ply", "--tiny", "--min-opacity=-inf"],
    ["batch", "{t}/p.txt", "-o", "{t}/out", "--tiny", "--cfg", "NaN"],
    ["render", "{t}/in.ply", "-o", "{t}/o.png", "--elevation", "nan"],
    ["parity", "{t}/f.safetensors", "--tol", "inf"],
])
def test_cli_refuses_non_finite_with_one_line(tmp_path, args):
    (tmp_path / "p.txt").write_text("a red car\n")
    args = [a.format(t=tmp_path) for a in args]
    proc = subprocess.run([sys.executable, "-m", "vist3a", *args], capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: argument --") and "not a finite number" in lines[0], proc.stderr
    assert not any(p.name in ("o.ply", "o.png", "out") for p in tmp_path.iterdir())


@pytest.mark.parametrize("text, key, override", [
    ("stitch:\n  lr: .nan\n", "stitch.lr", ".nan"),
    ("align:\n  ema_decay: .inf\n", "align.ema_decay", "-.inf"),
    ("stitch:\n  betas: [0.9, -.inf]\n", "stitch.betas", "[0.9, .nan]"),
])
def test_training_config_refuses_non_finite(tmp_path, text, key, override):
    from vist3a_train.common.config import ConfigError, load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=rf"bad\.yaml.*'{key}'.*finite number"):
        load_config(bad)
    with pytest.raises(ConfigError, match=rf"--set {key}.*'{key}'.*finite number"):
        load_config(REPO / "vist3a_train" / "configs" / "tiny_cpu.yaml", [f"{key}={override}"])


def test_training_json_config_refuses_nan(tmp_path):
    from vist3a_train.common.config import ConfigError, load_config

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stitch": {"grad_clip": math.nan}}))  # JSON as Python writes it: NaN
    with pytest.raises(ConfigError, match=r"'stitch\.grad_clip' is nan"):
        load_config(bad)
