"""What every training script shares: its command line, process-group/device setup, the run folder,
logging, checkpoint discovery and the "resumed from step N" contract.

Command line (all three scripts)::

    --config FILE        YAML/JSON run config (vist3a_train/configs/*.yaml)
    --output-dir DIR     run folder: checkpoints/<script>/, logs/, tensorboard/, export/
    --max-steps N        stop after step N (overrides <script>.max_steps); a later run with a larger
                         N on the same DIR continues from the newest complete checkpoint
    --save-every N       checkpoint every N steps (and always at the last step)
    --set key=value      override any config key (repeatable), e.g. --set run.engine=torch
    --deepspeed-config F shortcut for --set run.deepspeed_config=F
    --local_rank N       accepted (and ignored) for the deepspeed launcher; LOCAL_RANK is read from the env
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from . import distributed as D
from .checkpoint import CheckpointManager
from .config import Config, ConfigError, load_config, resolve_path
from .logs import RunLogger

__all__ = ["Context", "build_parser", "setup", "run_main"]


@dataclass
class Context:
    script: str
    cfg: Config
    args: argparse.Namespace
    out_dir: Path
    dist: D.DistInfo
    bf16: bool
    log: RunLogger
    ckpt: CheckpointManager
    max_steps: int
    save_every: int
    t0: float = field(default_factory=time.time)

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def step_cfg(self) -> Config:
        return self.cfg.section(self.script)

    @property
    def seed(self) -> int:
        return self.cfg.run.seed

    def per_rank(self, global_batch: int, key: str = "") -> int:
        if global_batch % self.dist.world_size:
            raise ConfigError(f"{key or self.script + '.batch_size'} {global_batch} is not divisible by the {self.dist.world_size} "
                              f"ranks; use a multiple of {self.dist.world_size}")
        return global_batch // self.dist.world_size

    def deepspeed_config(self) -> Optional[Path]:
        value = self.cfg.run.deepspeed_config
        if value in (None, ""):
            return None
        p = resolve_path(self.cfg, value)
        if not p.exists():  # a bare name such as zero3.json means the shipped one
            shipped = Path(__file__).resolve().parents[1] / "configs" / Path(str(value)).name
            if shipped.exists():
                p = shipped
        if not p.exists():
            raise ConfigError(f"run.deepspeed_config '{value}' does not exist (looked beside '{self.cfg.path}' "
                              "and in vist3a_train/configs/)")
        return p


def build_parser(script: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"vist3a_train/{script}.py", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="run config (YAML or JSON), e.g. vist3a_train/configs/tiny_cpu.yaml")
    p.add_argument("--output-dir", required=True, help="run folder (checkpoints, logs, tensorboard, export)")
    p.add_argument("--max-steps", type=int, default=None, help=f"last step of this run (default: {script}.max_steps)")
    p.add_argument("--save-every", type=int, default=None, help=f"checkpoint interval in steps (default: {script}.save_every)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--deepspeed-config", default=None, help="DeepSpeed JSON (shortcut for --set run.deepspeed_config=...)")
    p.add_argument("--engine", choices=("deepspeed", "torch"), default=None, help="shortcut for --set run.engine=...")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return p


def setup(script: str, args: argparse.Namespace) -> Context:
    overrides = list(args.set)
    if args.deepspeed_config:
        overrides.append(f"run.deepspeed_config={args.deepspeed_config}")
    if args.engine:
        overrides.append(f"run.engine={args.engine}")
    cfg = load_config(args.config, overrides)
    sc = cfg.section(script)
    max_steps = int(args.max_steps if args.max_steps is not None else sc.max_steps)
    save_every = int(args.save_every if args.save_every is not None else sc.save_every)
    if max_steps < 0 or save_every < 1:
        raise ConfigError(f"--max-steps must be >= 0 and --save-every >= 1 (got {max_steps}, {save_every})")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[2] / ".cache" / "torch_extensions"))
    info = D.init_distributed(cfg.run.device, use_deepspeed=cfg.run.engine == "deepspeed",
                              timeout_minutes=cfg.run.timeout_minutes)
    precision = cfg.run.precision
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"run.precision must be auto, fp32 or bf16, got {precision!r}")
    bf16 = precision == "bf16" or (precision == "auto" and info.device.type == "cuda")
    if bf16 and info.device.type != "cuda":
        raise ConfigError("run.precision bf16 needs CUDA; use fp32 (or auto) on the CPU")
    if info.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    D.seed_everything(cfg.run.seed, info.rank)
    out_dir = Path(args.output_dir).expanduser().resolve()
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    D.barrier()
    log = RunLogger(out_dir, script, tensorboard=cfg.run.tensorboard)
    ckpt = CheckpointManager(out_dir / "checkpoints" / script, keep=cfg.run.keep_checkpoints)
    log.info(f"rank 0 of {info.world_size} ({info.backend}, {info.device}, {'bf16' if bf16 else 'fp32'}, "
             f"engine {cfg.run.engine}); output {out_dir}")
    return Context(script, cfg, args, out_dir, info, bf16, log, ckpt, max_steps, save_every)


def resume(ctx: Context, engine=None) -> tuple[int, Optional[Path], dict]:
    """Load the newest complete checkpoint (if any); returns (step, folder, state)."""
    folder = ctx.ckpt.latest()
    ctx.ckpt.cleanup_partial()
    D.barrier()
    if folder is None:
        ctx.log.start(0)
        return 0, None, {}
    state = ctx.ckpt.load(folder, engine=engine)
    step = int(state["step"])
    ctx.log.start(step)
    ctx.log.info(f"resumed from step {step} ({folder})")
    return step, folder, state


def run_main(script: str, description: str, body, argv=None) -> int:
    """Parse, set up, run ``body(ctx)``, tear down; config/data errors -> one line, exit code 2."""
    from vist3a.errors import VIST3AError

    from .data import DatasetError

    args = build_parser(script, description).parse_args(argv)
    ctx = None
    clean = False
    try:
        ctx = setup(script, args)
        body(ctx)
        ctx.log.info(f"done in {time.time() - ctx.t0:.1f} s")
        clean = True
        return 0
    except (ConfigError, DatasetError, VIST3AError) as exc:
        print(f"vist3a_train/{script}.py: error: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        if ctx is not None:
            ctx.log.close()
        D.shutdown(clean)
