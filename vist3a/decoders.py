"""Build ready-to-run AnySplat / stitched decoders from files (released or exported by our training).

Every path goes through `weights.sniff` and `validate_state_dict` before any tensor is loaded
into a model, so a wrong file fails with one sentence instead of a torch traceback. Models are
built on the meta device and filled with `assign=True`: the weights are never allocated twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import weights as wt
from .atomic import atomic_dir
from .errors import CheckpointError
from .models import AnySplat, AnySplatConfig, StitchConfig, StitchedDecoder

STITCHED_FORMAT = "vist3a.stitched"
ANYSPLAT_FORMAT = "vist3a.anysplat"
WEIGHTS_FILE = "model.safetensors"


def _expected(factory) -> dict[str, torch.Size]:
    with torch.device("meta"):
        model = factory()
    return {k: v.shape for k, v in model.state_dict().items()}


def _materialise(factory, state: dict, source: str, what: str, device, dtype):
    state = wt.validate_state_dict(state, _expected(factory), source=source, what=what, ignore_prefixes=("encoder.distill_",))
    with torch.device("meta"):
        model = factory()
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()


# ------------------------------------------------------------------------------------------ AnySplat


def read_anysplat(path: str | Path) -> tuple[AnySplatConfig, dict, str]:
    """lhjiang/anysplat folder (model.safetensors + config.json), its model.safetensors, or our export."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"AnySplat weights '{p}' do not exist; give the folder with model.safetensors and config.json.", path=str(p))
    if p.is_dir():
        manifest = p / wt.MANIFEST_NAME
        if manifest.is_file():
            m = wt.read_manifest(p)
            if m["format"] != ANYSPLAT_FORMAT:
                raise CheckpointError(f"'{p}' is a {m['format']} export, not AnySplat weights; pass it as the decoder instead.", path=str(p))
            return AnySplatConfig.from_dict(m["architecture"]), wt.read_safetensors(p / m["files"]["weights"]), str(p)
        weights, config = p / WEIGHTS_FILE, p / "config.json"
        if not weights.is_file():
            raise CheckpointError(f"AnySplat folder '{p}' has no {WEIGHTS_FILE}; download lhjiang/anysplat into it.", path=str(p))
    else:
        weights, config = p, p.with_name("config.json")
    return anysplat_config(config), wt.read_safetensors(weights), str(weights)


def anysplat_config(config: Path) -> AnySplatConfig:
    """The architecture a released `config.json` describes; the release defaults when there is none."""
    if not config.is_file():
        return AnySplatConfig()
    try:
        return AnySplatConfig.from_official(json.loads(config.read_text()))
    except (json.JSONDecodeError, ValueError) as exc:
        raise CheckpointError(f"AnySplat config '{config}' cannot be used ({exc}); restore the released config.json.", path=str(config)) from None


def load_anysplat(path: str | Path, *, device="cpu", dtype=torch.float32) -> AnySplat:
    cfg, state, source = read_anysplat(path)
    return _materialise(lambda: AnySplat(cfg), state, source, "the AnySplat architecture", device, dtype)


def save_anysplat_export(model: AnySplat, folder: str | Path, **extra) -> Path:
    """Weights + manifest, written as one unit (a failure leaves no export folder behind)."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        wt.save_safetensors_atomic(_cpu_state(model), tmp / WEIGHTS_FILE)
        wt.write_manifest(tmp, wt.make_manifest(ANYSPLAT_FORMAT, architecture=model.cfg.to_dict(), files={"weights": WEIGHTS_FILE}, **extra))
    return folder


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------- stitched decoder


def load_stitched_decoder(
    path: str | Path, anysplat: str | Path | None = None, *, device="cpu", dtype=torch.float32
) -> StitchedDecoder:
    """An official `anysplat_stitched*.pth` on top of the AnySplat weights, or one of our exports."""
    p = Path(path)
    detected = wt.sniff(p)
    if detected.kind == "stitched_pth":
        if anysplat is None:
            raise CheckpointError(
                f"Stitched checkpoint '{p}' holds only the fine-tuned deltas; also give the AnySplat base "
                "weights (lhjiang/anysplat folder with model.safetensors + config.json).",
                path=str(p),
            )
        anysplat_cfg, full, base_source = read_anysplat(anysplat)
        cfg = StitchConfig(anysplat=anysplat_cfg)
        base = wt.stitched_from_anysplat(full, cfg.cut_block, source=base_source)
        base.update({k: torch.zeros(v) for k, v in _expected(lambda: StitchedDecoder(cfg)).items() if k.startswith("stitching_layer.")})
        state = wt.merge_stitched_checkpoint(base, wt.safe_torch_load(p), source=str(p))
        return _materialise(lambda: StitchedDecoder(cfg), state, str(p), "the stitched decoder", device, dtype)
    if detected.kind == "stitched_export":
        manifest = wt.read_manifest(p if p.is_dir() else p.parent)
        if manifest["format"] != STITCHED_FORMAT:
            raise CheckpointError(f"'{p}' is a {manifest['format']} export, not a stitched decoder.", path=str(p))
        folder = p if p.is_dir() else p.parent
        cfg = StitchConfig.from_dict(manifest["architecture"])
        state = wt.read_safetensors(folder / manifest["files"]["weights"])
        return _materialise(lambda: StitchedDecoder(cfg), state, str(folder), "the stitched decoder", device, dtype)
    raise CheckpointError(
        f"'{p}' is not a stitched decoder (detected: {detected.kind}, {detected.detail}); give "
        "anysplat_stitched.pth (with the AnySplat weights) or a folder exported by vist3a_train.",
        path=str(p),
    )


def save_stitched_export(decoder: StitchedDecoder, folder: str | Path, *, official_pth: dict | None = None, **extra) -> Path:
    """Write merged weights + manifest (what our loader reads) and, when given, the official-layout
    `anysplat_stitched.pth` dict (what the official code reads); one unit, like `save_anysplat_export`."""
    folder = Path(folder)
    files = {"weights": WEIGHTS_FILE}
    with atomic_dir(folder) as tmp:
        wt.save_safetensors_atomic(_cpu_state(decoder), tmp / WEIGHTS_FILE)
        if official_pth is not None:
            wt.save_torch_atomic(official_pth, tmp / "anysplat_stitched.pth")
            files["checkpoint"] = "anysplat_stitched.pth"
        wt.write_manifest(tmp, wt.make_manifest(STITCHED_FORMAT, architecture=decoder.cfg.to_dict(), files=files, **extra))
    return folder


def set_precision(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """'fp32' everywhere, or 'bf16' like the official inference: bf16 transformer (weights + autocast),
    fp32 heads."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    encoder = model.encoder
    if precision == "bf16":
        encoder.aggregator.to(torch.bfloat16)
        encoder.transformer_autocast = torch.bfloat16
    else:
        model.float()
        encoder.transformer_autocast = None
    return model
