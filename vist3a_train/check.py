"""Check a training config before launch: every path, model and dataset entry, one line per problem.

    python -m vist3a_train.check vist3a_train/configs/gh200_14b.yaml [--set key=value ...]
    torchrun --nproc_per_node 4 -m vist3a_train.check CONFIG     # every rank checks its own view of the files

Reads headers and folder listings only (no weights are loaded, nothing is downloaded: hub ids are
looked up in the local Hugging Face cache). Exit code 0 when nothing is wrong, 1 otherwise; launched
with several ranks, rank 0 prints every rank's problems prefixed with the rank and host.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vist3a_train.common.config import Config, ConfigError, load_config, resolve_path

__all__ = ["find_problems", "main"]

_HUB_REWARD_DEFAULTS = {
    "pickscore": {"model": "yuvalkirstain/PickScore_v1", "processor": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"},
    "clip": {},
}


def _hub_cached(repo_id: str, filename: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    hit = try_to_load_from_cache(repo_id, filename)
    return isinstance(hit, str) and os.path.isfile(hit)


def _model_ref(cfg: Config, value: str, what: str, files: tuple[str, ...], problems: list[str]) -> None:
    """A local folder (must hold one of ``files``) or a hub id (one of ``files`` must be in the local cache)."""
    p = resolve_path(cfg, value)
    if p is not None and p.exists():
        if p.is_dir() and not any((p / f).is_file() for f in files):
            problems.append(f"{what}: folder '{p}' has none of {', '.join(files)}")
        return
    if "/" in value and not value.startswith(("/", ".", "~")) and value.count("/") == 1:
        if not any(_hub_cached(value, f) for f in files):
            problems.append(f"{what}: '{value}' is neither a local folder nor in the local Hugging Face cache; "
                            f"download it on a machine with internet (huggingface-cli download {value}) and point "
                            "the config at the folder")
        return
    problems.append(f"{what}: '{p}' does not exist")


def _check_models(cfg: Config, steps: tuple[str, ...], out_dir: Path | None, problems: list[str]) -> None:
    from vist3a.weights import detect as ck

    m = cfg.models
    if m.tiny:
        return

    def sniff(key: str, kinds: tuple[str, ...], what: str, required: bool = True):
        value = getattr(m, key)
        if value in (None, ""):
            if required:
                problems.append(f"models.{key} ({what}) is not set")
            return
        p = resolve_path(cfg, value)
        if not p.exists():
            problems.append(f"models.{key}: '{p}' does not exist ({what})")
            return
        try:
            found = ck.sniff(p)
        except Exception as exc:  # sniff reports unreadable content as "unknown"; be safe anyway
            problems.append(f"models.{key}: '{p}' cannot be read ({exc})")
            return
        if found.kind not in kinds:
            problems.append(f"models.{key}: '{p}' holds {found.kind} ({found.detail}); expected {what}")

    sniff("anysplat", ("anysplat",), "the lhjiang/anysplat folder")
    if set(steps) & {"find_layer", "stitch", "align"}:
        sniff("wan", ("wan_diffusers", "wan_single_file"), "a Wan2.1-T2V diffusers folder or diffusion-model file")
    for key in ("wan_vae", "wan_text_encoder"):
        sniff(key, ("wan_single_file",), "a Wan single file", required=False)
    if m.wan_tokenizer and not resolve_path(cfg, m.wan_tokenizer).exists():
        problems.append(f"models.wan_tokenizer: '{resolve_path(cfg, m.wan_tokenizer)}' does not exist")
    if "align" in steps and cfg.align.reward.enabled:
        if m.decoder:
            sniff("decoder", ("stitched_export", "stitched_pth"), "a stitched decoder export folder or anysplat_stitched.pth")
        elif out_dir is not None and not (out_dir / "export" / "stitched_decoder").exists():
            problems.append(f"models.decoder is not set and '{out_dir / 'export' / 'stitched_decoder'}' does not exist "
                            "yet (run stitch.py with this --output-dir first)")
    if "stitch" in steps and m.layer_search not in (None, "", "none") and not resolve_path(cfg, m.layer_search).exists():
        problems.append(f"models.layer_search: '{resolve_path(cfg, m.layer_search)}' does not exist")


def _check_data(cfg: Config, steps: tuple[str, ...], problems: list[str]) -> None:
    from vist3a_train.common.data import build_dataset

    resolve = lambda p: resolve_path(cfg, p)  # noqa: E731
    jobs = []
    if "find_layer" in steps:
        jobs.append(("multiview", cfg.data.multiview, dict(num_views=cfg.find_layer.num_views, window=cfg.find_layer.window)))
    if "stitch" in steps:
        jobs.append(("multiview", cfg.data.multiview, dict(num_views=max(cfg.stitch.view_counts), window=cfg.stitch.window,
                                                         color_jitter=cfg.stitch.color_jitter)))
    if "align" in steps:
        jobs.append(("captioned", cfg.data.captioned, dict(num_views=cfg.align.num_views, video_size=cfg.align.video_size)))
        if cfg.align.reward.enabled:
            jobs.append(("prompts", cfg.data.prompts, {}))
    seen = set()
    for kind, spec, defaults in jobs:
        key = (kind, repr(spec))
        if key in seen:
            continue
        seen.add(key)
        specs = spec if isinstance(spec, (list, tuple)) else [spec]
        for i, one in enumerate(specs):
            where = f"data.{kind}" + (f"[{i}]" if len(specs) > 1 else "")
            try:
                ds = build_dataset(kind, one, resolve=resolve, **defaults)
            except Exception as exc:  # DatasetError, ValueError, TypeError from a bad spec
                problems.append(f"{where}: {exc}")
                continue
            if len(ds) == 0:
                problems.append(f"{where}: the dataset is empty ({ds.describe()})")


def _check_rewards(cfg: Config, problems: list[str]) -> None:
    rc = cfg.align.reward
    if not rc.enabled:
        return
    if rc.camera_prompts:
        from vist3a_train.common.prompts import load_camera_templates

        p = resolve_path(cfg, rc.camera_prompts)
        try:
            load_camera_templates(p)
        except ConfigError as exc:
            problems.append(f"align.reward.camera_prompts: {exc}")
    for i, spec in enumerate(rc.models):
        typ, where = spec.get("type"), f"align.reward.models[{i}] ({spec.get('type')})"
        if typ == "pickscore":
            d = _HUB_REWARD_DEFAULTS["pickscore"]
            _model_ref(cfg, str(spec.get("model", d["model"])), f"{where} model", ("config.json",), problems)
            _model_ref(cfg, str(spec.get("processor", d["processor"])), f"{where} processor",
                       ("tokenizer.json", "vocab.json", "tokenizer_config.json"), problems)
        elif typ == "clip":
            if "model" not in spec:
                problems.append(f"{where}: needs model: <folder or hub id>")
            else:
                _model_ref(cfg, str(spec["model"]), f"{where} model", ("config.json",), problems)
        elif typ == "open_clip":
            try:
                import open_clip  # noqa: F401
            except ImportError:
                problems.append(f"{where}: the open_clip_torch package is not installed (pip install -e .[train])")
            if spec.get("pretrained"):
                p = resolve_path(cfg, spec["pretrained"])
                if not p.is_file():
                    problems.append(f"{where} pretrained: '{p}' does not exist (the open_clip_pytorch_model.bin file)")
                if not spec.get("architecture"):
                    problems.append(f"{where}: with pretrained: also give architecture: (ViT-H-14-378-quickgelu for DFN5B)")
            else:
                model = str(spec.get("model", "hf-hub:apple/DFN5B-CLIP-ViT-H-14-378"))
                if model.startswith("hf-hub:"):
                    _model_ref(cfg, model[len("hf-hub:"):], f"{where} model",
                               ("open_clip_pytorch_model.bin", "open_clip_model.safetensors"), problems)
        elif typ == "tiny_clip":
            continue
        elif not (isinstance(typ, str) and ":" in typ):
            from vist3a_train.common.rewards import REWARD_TYPES

            if typ not in REWARD_TYPES:
                problems.append(f"{where}: unknown type; use one of {', '.join(REWARD_TYPES)} or 'package.module:factory'")


def find_problems(cfg: Config, steps=("find_layer", "stitch", "align"), out_dir: Path | None = None) -> list[str]:
    """Every problem found, one sentence each (empty: ready to launch)."""
    problems: list[str] = []
    steps = tuple(steps)
    if cfg.run.engine == "deepspeed" and cfg.run.deepspeed_config:
        p = resolve_path(cfg, cfg.run.deepspeed_config)
        shipped = Path(__file__).resolve().parent / "configs" / Path(cfg.run.deepspeed_config).name
        if not p.exists() and not shipped.exists():
            problems.append(f"run.deepspeed_config: '{p}' does not exist (nor vist3a_train/configs/{shipped.name})")
    for check in (lambda: _check_models(cfg, steps, out_dir, problems), lambda: _check_data(cfg, steps, problems),
                  lambda: _check_rewards(cfg, problems) if "align" in steps else None):
        try:
            check()
        except Exception as exc:  # a check must never hide the others
            problems.append(f"check failed unexpectedly: {type(exc).__name__}: {exc}")
    return problems


def _gather(lines: list[str]) -> list[str]:
    """All ranks' lines on every rank (prefixed with rank and host) when launched distributed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return lines
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    rank = dist.get_rank()
    mine = [f"[rank {rank} on {socket.gethostname()}] {x}" for x in lines]
    every: list = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    dist.destroy_process_group()
    return [x for part in every for x in part]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vist3a_train.check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--step", choices=("all", "find_layer", "stitch", "align"), default="all")
    ap.add_argument("--output-dir", default=None, help="the run folder (align: where stitch.py exported the decoder)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        lines = find_problems(cfg, ("find_layer", "stitch", "align") if args.step == "all" else (args.step,),
                              Path(args.output_dir) if args.output_dir else None)
    except ConfigError as exc:
        lines = [str(exc)]
    lines = _gather(lines)
    if int(os.environ.get("RANK", "0")) == 0:
        for line in lines:
            print(line)
        print(f"{len(lines)} problem(s) in {args.config}" if lines else f"{args.config}: no problems found")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
