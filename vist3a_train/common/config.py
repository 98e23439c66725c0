"""Run configuration: one YAML (or JSON) file that all three steps accept, read into frozen dataclasses.

The file overrides the dataclass defaults below (the official hyper-parameters, see the table in
vist3a_train/README.md); every key it sets must exist and hold a value of the declared type, so a
typo or a wrong type fails with the file and the key named instead of being silently ignored or
breaking later. ``data.*`` sections and the reward model list are free-form mappings (each dataset
or reward type checks its own keys). Command-line ``--set a.b=value`` overrides (YAML-parsed values)
are applied last.

Paths in the file (``run.deepspeed_config``, dataset roots, model paths) may be relative: they are
tried relative to the config file's folder first, then to the working directory.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from vist3a.finite import NonFiniteError, check_finite_values

__all__ = ["ConfigError", "Config", "RunConfig", "ModelsConfig", "DataConfig", "FindLayerConfig", "StitchFinetuneConfig",
           "AlignConfig", "RewardConfig", "load_config", "resolve_path", "defaults"]


class ConfigError(ValueError):
    """A config file or override is missing, unreadable or holds an unknown/ill-typed key."""


def _choices(*values: str) -> dict:
    return {"choices": values}


@dataclass(frozen=True)
class RunConfig:
    seed: int = 23
    device: str = field(default="auto", metadata=_choices("auto", "cpu", "cuda"))
    precision: str = field(default="auto", metadata=_choices("auto", "fp32", "bf16"))  # auto: bf16 on cuda
    engine: str = field(default="deepspeed", metadata=_choices("deepspeed", "torch"))
    deepspeed_config: Optional[str] = "zero2.json"  # relative to the config file, or vist3a_train/configs/
    keep_checkpoints: int = 2
    log_every: int = 1
    num_workers: int = 2
    gradient_checkpointing: bool = True
    timeout_minutes: int = 60
    tensorboard: bool = True
    # A sample whose files are missing or unreadable is skipped (logged, counted, another one drawn);
    # the run stops once more than this share of the samples drawn so far were bad.
    max_bad_sample_share: float = 0.05
    bad_sample_min_count: int = 8  # the share is not judged before this many bad samples
    # Diagnostics: multiply the loss by NaN at these steps (exercises the non-finite-gradient skip).
    inject_nonfinite_steps: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelsConfig:
    tiny: bool = False  # tiny random-weight models of vist3a.tiny / vist3a.wan.tiny (tests, CPU)
    tiny_seed: int = 0
    anysplat: Optional[str] = None  # lhjiang/anysplat folder (model.safetensors + config.json)
    wan: Optional[str] = None  # Wan2.1-T2V diffusers folder, or a ComfyUI diffusion-model file
    wan_vae: Optional[str] = None  # with single files: wan_2.1_vae.safetensors
    wan_text_encoder: Optional[str] = None  # with single files: umt5_xxl_*.safetensors
    wan_tokenizer: Optional[str] = None  # with single files: a folder/file with the UMT5 tokenizer
    decoder: Optional[str] = None  # align: stitched decoder; default OUTPUT/export/stitched_decoder
    layer_search: Optional[str] = None  # stitch: find_layer output; default OUTPUT/layer_search.json
    # align under ZeRO-3: build the frozen transformer under deepspeed.zero.Init and stream its
    # safetensors in, so each rank holds only its shard (diffusers folders / safetensors + config.json)
    stream_zero3: bool = True


@dataclass(frozen=True)
class DataConfig:
    """Free-form dataset specs ({type: ..., ...} or a list of them), checked by vist3a_train.common.data."""
    multiview: Any = field(default_factory=lambda: {"type": "synthetic"})  # find_layer + stitch
    captioned: Any = field(default_factory=lambda: {"type": "synthetic"})  # align, flow-matching branch
    prompts: Any = field(default_factory=lambda: {"type": "inline", "prompts": ["a small house in a snowy forest"]})


@dataclass(frozen=True)
class FindLayerConfig:
    candidate_layers: Union[str, tuple[int, ...]] = "all"  # "all" or a list of cuts k (= after k blocks)
    ridge: float = 1.0e-4
    batch_size: int = 4  # global clips per step (split over ranks)
    num_views: int = 13
    window: int = 50  # views are drawn from a window of up to this many consecutive frames
    max_steps: int = 100
    save_every: int = 20
    keep_all_layer_weights: bool = True


# The official stitched fine-tune (model_stitching_training.py): 30 epochs (Readme.md:152) over DL3DV-ALL-960P
# (9286 scenes, data/dl3dv_datasets.py:72) + the ScanNet training scenes (2095, data/train_name_list.json) on 4
# GPUs with 3 clips each and drop_last (data/dataset_util.py:69-85); one checkpoint per epoch (:357-365). These
# constants are the one source of the stitch schedule defaults; the shipped configs do not restate them.
OFFICIAL_STITCH_SCENES = 9286 + 2095
OFFICIAL_STITCH_GPUS, OFFICIAL_STITCH_CLIPS_PER_GPU, OFFICIAL_STITCH_EPOCHS = 4, 3, 30
STITCH_STEPS_PER_EPOCH = -(-OFFICIAL_STITCH_SCENES // OFFICIAL_STITCH_GPUS) // OFFICIAL_STITCH_CLIPS_PER_GPU  # 948
STITCH_TOTAL_STEPS = OFFICIAL_STITCH_EPOCHS * STITCH_STEPS_PER_EPOCH  # 28440

_LOSS_WEIGHTS = {
    "depth": 1.0, "depth_grad": 0.005, "gaussian_means": 1.0, "gaussian_covariances": 1.0,
    "gaussian_harmonics": 1.0, "gaussian_opacities": 1.0, "gaussian_scales": 10.0, "gaussian_rotations": 1.0,
    "conf": 0.01, "depth_conf": 0.01, "anchor_feats": 0.1, "pose_extrinsics": 1.0, "pose_intrinsics": 1.0,
    "pose_enc_list": 1.0,
}


@dataclass(frozen=True)
class StitchFinetuneConfig:
    cut: Union[int, str] = 2  # int, or "chosen" to take layer_search.json's chosen layer
    lora_rank: int = 64
    lora_alpha: float = 32.0
    view_counts: tuple[int, ...] = (9, 13, 17, 21)
    batch_size: int = 12  # global: 3 clips per GPU on 4 GPUs
    window: int = 50
    color_jitter: Optional[tuple[float, float, float, float]] = (0.5, 0.5, 0.5, 0.1)  # brightness contrast saturation hue
    lr: float = 2.0e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 500
    schedule_steps: int = STITCH_TOTAL_STEPS  # cosine horizon; fixed so --max-steps can grow on resume
    grad_clip: float = 1.0
    max_steps: int = STITCH_TOTAL_STEPS
    save_every: int = STITCH_STEPS_PER_EPOCH  # once per epoch, as the official loop
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(_LOSS_WEIGHTS))
    export_anysplat_base: bool = False  # also write the AnySplat base (only useful for tiny models)


@dataclass(frozen=True)
class RewardConfig:
    enabled: bool = True
    every: int = 1
    batch_size: int = 4  # global reward rollouts per step: 1 per GPU on 4 GPUs
    steps_range: tuple[int, int] = (10, 50)  # denoising steps drawn per rollout
    full_steps_every: int = 10  # every N steps use steps_range[1] steps
    guidance_range: tuple[float, float] = (4.0, 6.0)
    grad_steps: int = 2  # random denoising steps with gradient (plus the last one)
    render_views: int = 13
    render_size: Optional[int] = None  # default: the decoder's context size
    # The official decoder's render settings (vist3a.render.settings): white background, near 1e-10, gsplat's
    # default far 1e10, radius clip 0.1. Our earlier runs rendered the reward on black with near 0.1 / far 100, no clip.
    render_background: float = 1.0
    render_near: float = 1e-10
    render_far: float = 1e10
    render_radius_clip: float = 0.1
    decode_grad: bool = True  # False: VAE decode without gradient (saves memory)
    vae_checkpointing: bool = True  # recompute the VAE decoder per latent frame in backward
    voxelize: Optional[bool] = None  # default: the decoder's config
    camera_prompts: Optional[str] = None  # the official train_vdm.py (or a text file of templates); None: off
    # official: the prompt enters the template as the official loop passed it, a one-element list (`['...']`),
    # and the "base" entry is the word "base"; clean: the prompt itself (common/prompts.py)
    camera_prompt_style: str = field(default="official", metadata=_choices("official", "clean"))
    negative_prompt: str = ""
    models: tuple[dict, ...] = ({"type": "pickscore", "weight": 0.25}, {"type": "open_clip", "weight": 0.25})


@dataclass(frozen=True)
class AlignConfig:
    lora_rank: int = 8
    lora_alpha: float = 16.0
    batch_size: int = 16  # global captioned clips per step: 4 per GPU on 4 GPUs
    num_views: int = 13  # frames of a training clip (Wan: 4k+1)
    video_size: int = 512
    lr: float = 1.0e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 0
    schedule_steps: int = 100000
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    flow_shift: float = 3.0
    max_steps: int = 10000
    save_every: int = 100
    flow_matching_weight: float = 1.0
    max_sequence_length: int = 226
    vae_dtype: str = field(default="fp32", metadata=_choices("fp32", "bf16"))
    text_encoder_device: str = field(default="auto", metadata=_choices("auto", "cpu"))
    reward: RewardConfig = field(default_factory=RewardConfig)
    export_raw_lora: bool = True  # also export the non-EMA LoRA as export/vist3a_lora/


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    find_layer: FindLayerConfig = field(default_factory=FindLayerConfig)
    stitch: StitchFinetuneConfig = field(default_factory=StitchFinetuneConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    path: str = ""  # the config file (absolute)
    dir: str = ""  # its folder

    def section(self, script: str):
        """The step's section: ``find_layer``, ``stitch`` or ``align``."""
        if script not in STEPS:
            raise KeyError(script)
        return getattr(self, script)

    def to_plain(self) -> dict:
        return _plain(dataclasses.asdict(self))


STEPS = ("find_layer", "stitch", "align")
_FREE_SECTIONS = {DataConfig}


def _plain(o):
    if isinstance(o, dict):
        return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    return o


def defaults() -> dict:
    """The defaults as a plain nested dict (what an empty config file means)."""
    d = Config().to_plain()
    d.pop("path"), d.pop("dir")
    return d


# ------------------------------------------------------------------------------------- typing


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        names = " or ".join(_type_name(a) for a in args)
        return names + (" or null" if type(None) in typing.get_args(tp) else "")
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0]).split(' ', 1)[-1]}s"
        return f"a list of {len(args)} {_type_name(args[0]).split(' ', 1)[-1]}s"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping"}.get(tp, str(tp))


class _Bad(Exception):
    pass


def _coerce(value: Any, tp) -> Any:
    """``value`` as type ``tp`` (int -> float allowed, lists -> tuples), else raise _Bad."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return copy.deepcopy(value)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a)
            except _Bad:
                continue
        raise _Bad
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Bad
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(value) != len(args):
            raise _Bad
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Bad
        kt, vt = typing.get_args(tp)
        return {_coerce(k, kt): _coerce(v, vt) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Bad
    if tp is int:
        if isinstance(value, bool):
            raise _Bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Bad
    if tp is float:
        if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", value.strip()):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad
        return float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Bad
    if tp is dict:
        if isinstance(value, Mapping):
            return copy.deepcopy(dict(value))
        raise _Bad
    raise _Bad


def _build(cls, data: Mapping, where: tuple[str, ...], source: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("path", "dir") or cls is not Config}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = ".".join(where + (str(unknown[0]),))
        known = ", ".join(sorted(fields))
        raise ConfigError(f"{source}: unknown config key '{key}' (known keys here: {known})")
    kwargs = {}
    for name, value in data.items():
        f, tp = fields[name], hints[name]
        key = ".".join(where + (name,))
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: config key '{key}' must be a mapping, got {type(value).__name__}")
            kwargs[name] = _build(tp, value, where + (name,), source)
            continue
        try:
            v = _coerce(value, tp)
        except _Bad:
            raise ConfigError(f"{source}: config key '{key}' must be {_type_name(tp)}, got {value!r}") from None
        try:
            check_finite_values([(f"config key '{key}'", v)], where=source)
        except NonFiniteError as exc:
            raise ConfigError(str(exc)) from None
        choices = f.metadata.get("choices")
        if choices and v not in choices:
            raise ConfigError(f"{source}: config key '{key}' must be one of {', '.join(choices)}, got {v!r}")
        kwargs[name] = v
    return cls(**kwargs)


def _validate(cfg: Config, source: str) -> None:
    """Cross-field rules that a type cannot express."""
    def need(ok: bool, msg: str):
        if not ok:
            raise ConfigError(f"{source}: {msg}")

    for name in ("find_layer", "stitch", "align"):
        s = cfg.section(name)
        need(s.batch_size >= 1, f"{name}.batch_size must be >= 1")
        need(s.max_steps >= 0 and s.save_every >= 1, f"{name}.max_steps must be >= 0 and {name}.save_every >= 1")
    need(cfg.align.reward.batch_size >= 1, "align.reward.batch_size must be >= 1")
    need((cfg.align.num_views - 1) % 4 == 0, f"align.num_views {cfg.align.num_views} must be 4k+1 (Wan clips: 5, 9, 13, ...)")
    need(all((v - 1) % 4 == 0 for v in cfg.stitch.view_counts), "stitch.view_counts must all be 4k+1 (5, 9, 13, 17, 21)")
    lo, hi = cfg.align.reward.steps_range
    need(1 <= lo <= hi, "align.reward.steps_range must be [low, high] with 1 <= low <= high")
    need(0.0 <= cfg.run.max_bad_sample_share <= 1.0, "run.max_bad_sample_share must lie in [0, 1]")
    cj = cfg.stitch.color_jitter
    need(cj is None or (all(v >= 0 for v in cj) and cj[3] <= 0.5), "stitch.color_jitter must be 4 numbers >= 0 (hue <= 0.5)")
    for i, spec in enumerate(cfg.align.reward.models):
        need(isinstance(spec, dict) and "type" in spec, f"align.reward.models[{i}] must be a mapping with a 'type'")


# ------------------------------------------------------------------------------------- loading


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


def _free_merge(base: Any, over: Any) -> Any:
    if not (isinstance(base, dict) and isinstance(over, Mapping)):
        return copy.deepcopy(over)
    if "type" in over and over.get("type") != base.get("type"):
        return copy.deepcopy(dict(over))  # another dataset type: its defaults do not apply
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _free_merge(out.get(key), value)
    return out


def _merge(base: dict, over: Mapping, where: tuple[str, ...]) -> dict:
    """Nested dict update; ``data.*`` entries merge free-form. Unknown keys are caught by _build."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if where == ("data",):
            out[key] = _free_merge(out.get(key), value)
        elif isinstance(out.get(key), dict) and isinstance(value, Mapping) and where + (key,) != ("stitch", "loss_weights"):
            out[key] = _merge(out[key], value, where + (key,))
        elif where + (key,) == ("stitch", "loss_weights") and isinstance(value, Mapping):
            out[key] = {**out[key], **value}
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


def _typed(data: Mapping, source: str, path: Path) -> Config:
    body = {k: v for k, v in data.items()}
    cfg = _build(Config, body, (), source)
    cfg = dataclasses.replace(cfg, path=str(path), dir=str(path.parent))
    _validate(cfg, source)
    return cfg


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Defaults <- file <- ``--set`` overrides, typed and validated; errors name the file or the override."""
    path = Path(path).expanduser().resolve()
    file_data = _read(path)
    source = f"config file '{path}'"
    _build(Config, file_data, (), source)  # unknown keys / types in the file are reported against the file
    data = _merge(defaults(), file_data, ())
    cfg = _typed(data, source, path)
    for item in overrides:
        keys, value = _parse_override(item)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        data = _merge(data, nested, ())
        cfg = _typed(data, f"--set {item}", path)
    return cfg


def resolve_path(cfg: Config, value: str | Path | None, *, must_exist: bool = False, what: str = "path") -> Path | None:
    """A path from the config: relative to the config file if it exists there, else as given."""
    if value in (None, ""):
        return None
    p = Path(str(value)).expanduser()
    if not p.is_absolute():
        beside = Path(cfg.dir) / p
        if beside.exists() or not p.exists():
            p = beside
    if must_exist and not p.exists():
        raise ConfigError(f"{what} '{p}' (from config '{cfg.path}') does not exist")
    return p
