"""Run configuration: one YAML (or JSON) file that all three steps accept.

The file overrides :data:`DEFAULTS` (the official hyper-parameters at real size); every key it sets
must exist in the defaults, so a typo fails with the file and the key named instead of being
silently ignored. ``data.*`` sections are free-form (each dataset type checks its own keys).
Command-line ``--set a.b=value`` overrides (YAML-parsed values) are applied last.

Paths in the file (``run.deepspeed_config``, dataset roots, model paths) may be relative: they are
tried relative to the config file's folder first, then to the working directory.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["ConfigError", "Cfg", "DEFAULTS", "load_config", "resolve_path"]


class ConfigError(ValueError):
    """A config file or override is missing, unreadable or holds an unknown/ill-typed key."""


# Official values (model_stitching_training.py, train_vdm.py, utils/argument.py of the release) unless
# a comment says otherwise. `null` model paths mean "required unless models.tiny is true".
DEFAULTS: dict[str, Any] = {
    "run": {
        "seed": 23,
        "device": "auto",  # auto | cpu | cuda
        "precision": "auto",  # auto (bf16 on cuda, fp32 on cpu) | fp32 | bf16
        "engine": "deepspeed",  # deepspeed | torch (plain data parallel: all-reduced gradients)
        "deepspeed_config": "zero2.json",  # relative to the config file, or vist3a_train/configs/
        "keep_checkpoints": 2,
        "log_every": 1,
        "num_workers": 2,
        "gradient_checkpointing": True,
        "timeout_minutes": 60,
        "tensorboard": True,
    },
    "models": {
        "tiny": False,  # tiny random-weight models of vist3a.tiny / vist3a.wan.tiny (tests, CPU)
        "tiny_seed": 0,
        "anysplat": None,  # lhjiang/anysplat folder (model.safetensors + config.json)
        "wan": None,  # Wan2.1-T2V diffusers folder, or a ComfyUI diffusion-model file
        "wan_vae": None,  # with single files: wan_2.1_vae.safetensors
        "wan_text_encoder": None,  # with single files: umt5_xxl_*.safetensors
        "wan_tokenizer": None,  # with single files: a folder/file with the UMT5 tokenizer
        "decoder": None,  # align: stitched decoder (export folder or anysplat_stitched.pth); default OUTPUT/export/stitched_decoder
        "layer_search": None,  # stitch: find_layer output; default OUTPUT/layer_search.json
    },
    "data": {
        "multiview": {"type": "synthetic"},  # find_layer + stitch
        "captioned": {"type": "synthetic"},  # align, flow-matching branch
        "prompts": {"type": "inline", "prompts": ["a small house in a snowy forest"]},  # align, reward branch
    },
    "find_layer": {
        "candidate_layers": "all",  # "all" (every DINO block) or a list of cuts k (= after k blocks)
        "ridge": 1.0e-4,
        "batch_size": 4,  # global clips per step (split over ranks)
        "num_views": 13,
        "max_steps": 100,
        "save_every": 20,
        "keep_all_layer_weights": True,
    },
    "stitch": {
        "cut": 2,  # int, or "chosen" to take layer_search.json's chosen layer
        "lora_rank": 64,
        "lora_alpha": 32,
        "view_counts": [9, 13, 17, 21],
        "batch_size": 4,
        "lr": 1.0e-4,
        "weight_decay": 1.0e-4,
        "betas": [0.9, 0.999],
        "warmup_steps": 1000,
        "schedule_steps": 100000,  # cosine horizon; fixed so --max-steps can grow on resume
        "grad_clip": 1.0,
        "max_steps": 100000,
        "save_every": 1000,
        "loss_weights": {
            "depth": 1.0,
            "depth_grad": 0.005,
            "gaussian_means": 1.0,
            "gaussian_covariances": 1.0,
            "gaussian_harmonics": 1.0,
            "gaussian_opacities": 1.0,
            "gaussian_scales": 10.0,
            "gaussian_rotations": 1.0,
            "conf": 0.01,
            "depth_conf": 0.01,
            "anchor_feats": 0.1,
            "pose_extrinsics": 1.0,
            "pose_intrinsics": 1.0,
            "pose_enc_list": 1.0,
        },
        "export_anysplat_base": False,  # also write the AnySplat base (only useful for tiny models)
    },
    "align": {
        "lora_rank": 8,
        "lora_alpha": 16,
        "batch_size": 4,  # global captioned clips (and prompts) per step
        "num_views": 13,  # frames of a training clip (Wan: 4k+1)
        "video_size": 512,
        "lr": 1.0e-4,
        "weight_decay": 1.0e-4,
        "betas": [0.9, 0.95],
        "warmup_steps": 0,
        "schedule_steps": 100000,
        "grad_clip": 1.0,
        "ema_decay": 0.99,
        "flow_shift": 3.0,
        "max_steps": 10000,
        "save_every": 100,
        "flow_matching_weight": 1.0,
        "max_sequence_length": 226,
        "vae_dtype": "fp32",  # fp32 (official) | bf16 (halves the decode activations of the reward)
        "text_encoder_device": "auto",  # auto (the GPU) | cpu (frees ~11 GB of UMT5-XXL per GPU)
        "reward": {
            "enabled": True,
            "every": 1,
            "steps_range": [10, 50],  # denoising steps drawn per rollout
            "full_steps_every": 10,  # every N steps use steps_range[1] steps
            "guidance_range": [4.0, 6.0],
            "grad_steps": 2,  # random denoising steps with gradient (plus the last one)
            "render_views": 13,
            "render_size": None,  # default: the decoder's context size
            "decode_grad": True,  # False: VAE decode without gradient (saves memory)
            "vae_checkpointing": True,  # recompute the VAE decoder per latent frame in backward
            "voxelize": None,  # default: the decoder's config
            "camera_prompts": True,
            "negative_prompt": "",
            "models": [
                {"type": "pickscore", "weight": 0.25},
                {"type": "open_clip", "weight": 0.25},
            ],
        },
        "export_raw_lora": True,  # also export the non-EMA LoRA as export/vist3a_lora/
    },
}

STEPS = ("find_layer", "stitch", "align")


class Cfg(dict):
    """A dict whose keys also read as attributes (``cfg.run.seed``); nested dicts become Cfg."""

    def __getattr__(self, name: str) -> Any:
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    @staticmethod
    def wrap(obj: Any) -> Any:
        if isinstance(obj, Mapping) and not isinstance(obj, Cfg):
            return Cfg({k: Cfg.wrap(v) for k, v in obj.items()})
        if isinstance(obj, list):
            return [Cfg.wrap(v) for v in obj]
        return obj

    def to_plain(self) -> dict:
        def plain(o):
            if isinstance(o, dict):
                return {k: plain(v) for k, v in o.items()}
            if isinstance(o, list):
                return [plain(v) for v in o]
            return o

        return plain(self)


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; pass --config with a YAML file such as vist3a_train/configs/tiny_cpu.yaml")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError, JSONDecodeError
        raise ConfigError(f"config file '{path}' cannot be parsed ({' '.join(str(exc).split())[:200]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at the top level, found {type(data).__name__}")
    return data


# Sections whose keys are free-form (checked by their consumers): merged without key checks.
_FREE = {("data",), ("stitch", "loss_weights")}


def _free_merge(base: Any, over: Any) -> Any:
    if not (isinstance(base, dict) and isinstance(over, Mapping)):
        return copy.deepcopy(over)
    if "type" in over and over.get("type") != base.get("type"):
        return copy.deepcopy(dict(over))  # another dataset type: its defaults do not apply
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _free_merge(out.get(key), value)
    return out


def _merge(base: dict, over: Mapping, where: tuple[str, ...], source: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        path = where + (key,)
        if where in _FREE:
            out[key] = _free_merge(out.get(key), value)
            continue
        if key not in out:
            known = ", ".join(sorted(k for k in out if not k.startswith("_"))) or "none"
            raise ConfigError(f"{source}: unknown config key '{'.'.join(path)}' (known keys here: {known})")
        if isinstance(out[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: config key '{'.'.join(path)}' must be a mapping, got {type(value).__name__}")
            out[key] = _merge(out[key], value, path, source)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set '{item}' must look like key.path=value")
    key, raw = item.split("=", 1)
    import yaml

    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except Exception:
        value = raw
    return key.strip().split("."), value


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Cfg:
    """Defaults <- file <- ``--set`` overrides. Records the file's folder as ``_config_dir``."""
    path = Path(path).expanduser().resolve()
    data = _merge(DEFAULTS, _read(path), (), str(path))
    for item in overrides:
        keys, value = _parse_override(item)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        data = _merge(data, nested, (), f"--set {item}")
    cfg = Cfg.wrap(data)
    cfg["_config_path"] = str(path)
    cfg["_config_dir"] = str(path.parent)
    return cfg


def resolve_path(cfg: Cfg, value: str | Path | None, *, must_exist: bool = False, what: str = "path") -> Path | None:
    """A path from the config: relative to the config file if it exists there, else as given."""
    if value in (None, ""):
        return None
    p = Path(str(value)).expanduser()
    if not p.is_absolute():
        beside = Path(cfg["_config_dir"]) / p
        if beside.exists() or not p.exists():
            p = beside
    if must_exist and not p.exists():
        raise ConfigError(f"{what} '{p}' (from config '{cfg['_config_path']}') does not exist")
    return p
