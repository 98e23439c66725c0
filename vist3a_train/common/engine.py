"""One training-step interface over DeepSpeed ZeRO-2/3 and plain torch data parallelism.

Both engines take the model with its frozen parameters already marked ``requires_grad=False``,
optimise only the trainable ones with a plain ``torch.optim.AdamW`` (no compiled DeepSpeed ops, so
nothing is built on the machine), clip gradients to ``grad_clip`` and step an LR schedule:

* ``deepspeed``: ``deepspeed.initialize`` with a shipped ZeRO JSON (``configs/zero2.json`` /
  ``zero3.json``); "auto" entries are filled from the run (micro batch, clipping, bf16). ZeRO-3
  partitions every parameter, frozen ones included, which is what lets Wan 14B fit.
* ``torch``: the model is replicated; gradients of the trainable parameters are all-reduced (averaged)
  in one flat buffer after ``backward``. Unlike DDP this allows any number of forward calls per step
  (align.py calls the transformer many times per step).

Checkpoints hold only the trainable state (frozen weights come from the base model files):
DeepSpeed's own per-rank layout (``exclude_frozen_parameters=True``) or, for ``torch``, a
safetensors file of the trainable parameters plus the optimizer/scheduler state dicts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from . import distributed as D

__all__ = ["TrainEngine", "LRSchedule", "load_deepspeed_config"]


class LRSchedule:
    """Linear warm-up then cosine decay to 0 at ``total`` steps (transformers' cosine-with-warmup),
    or constant after warm-up. A picklable callable, so LambdaLR's state dict holds plain numbers."""

    def __init__(self, kind: str, warmup: int, total: int):
        if kind not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {kind!r}")
        self.kind, self.warmup, self.total = kind, int(warmup), int(total)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return float(step) / float(max(1, self.warmup))
        if self.kind == "constant":
            return 1.0
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def load_deepspeed_config(path: Path, *, micro_batch: int, grad_clip: float, bf16: bool) -> dict:
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"DeepSpeed config '{path}' cannot be read ({exc})") from None
    if not isinstance(cfg.get("zero_optimization"), dict) or "stage" not in cfg["zero_optimization"]:
        raise ValueError(f"DeepSpeed config '{path}' has no zero_optimization.stage")

    def fill(d: dict, key: str, value: Any) -> None:
        if d.get(key, "auto") == "auto":
            d[key] = value

    fill(cfg, "train_micro_batch_size_per_gpu", micro_batch)
    fill(cfg, "gradient_accumulation_steps", 1)
    fill(cfg, "gradient_clipping", grad_clip)
    cfg.pop("train_batch_size", None)  # derived by DeepSpeed from the two above and the world size
    cfg.setdefault("bf16", {})
    fill(cfg["bf16"], "enabled", bool(bf16))
    cfg.setdefault("fp16", {"enabled": False})
    if cfg["fp16"].get("enabled") == "auto":
        cfg["fp16"]["enabled"] = False
    cfg.setdefault("zero_allow_untested_optimizer", True)
    cfg.setdefault("steps_per_print", 1 << 30)
    return cfg


class TrainEngine:
    """``engine(*args)`` runs the model, ``backward(loss)``, ``step()`` -> {"grad_norm", "lr", "skipped"}."""

    def __init__(
        self,
        model: nn.Module,
        *,
        kind: str,
        lr: float,
        weight_decay: float,
        betas=(0.9, 0.999),
        schedule: LRSchedule,
        grad_clip: float,
        micro_batch: int = 1,
        deepspeed_config: Optional[Path] = None,
        bf16_params: bool = False,
        external_params=(),
    ):
        """``external_params``: parameters the model reads outside their owning module's ``forward``
        (e.g. the DINO tokens read by ``forward_tokens``); ZeRO-3 then gathers them for the whole
        forward/backward of ``model``."""
        if kind not in ("deepspeed", "torch"):
            raise ValueError(f"run.engine must be 'deepspeed' or 'torch', got {kind!r}")
        self.kind = kind
        self.module = model
        self.grad_clip = float(grad_clip)
        self.named_trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not self.named_trainable:
            raise ValueError("the model has no trainable parameters")
        params = [p for _, p in self.named_trainable]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas))
        self.stage = None
        if kind == "deepspeed":
            import deepspeed

            if deepspeed_config is None:
                raise ValueError("run.engine is 'deepspeed' but no run.deepspeed_config was given")
            ds_cfg = load_deepspeed_config(deepspeed_config, micro_batch=micro_batch, grad_clip=grad_clip, bf16=bf16_params)
            self.stage = int(ds_cfg["zero_optimization"]["stage"])
            if self.stage == 3:
                for p in external_params:
                    deepspeed.zero.register_external_parameter(model, p)
            self.ds, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=model,
                optimizer=optimizer,
                lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
                config=ds_cfg,
                dist_init_required=False,
            )
        else:
            self.ds = None
            self.optimizer = optimizer
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    # ----------------------------------------------------------------------------------- stepping

    def __call__(self, *args, **kwargs):
        return (self.ds or self.module)(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        if self.ds is not None:
            self.ds.backward(loss)
        else:
            loss.backward()

    def _all_reduce_grads(self) -> None:
        params = [p for _, p in self.named_trainable]
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        if world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i, g in enumerate(grads):
            by_dtype.setdefault(g.dtype, []).append(i)
        for idx in by_dtype.values():
            flat = torch._utils._flatten_dense_tensors([grads[i] for i in idx])
            D.all_reduce_(flat)
            flat.div_(world)
            for i, g in zip(idx, torch._utils._unflatten_dense_tensors(flat, [grads[i] for i in idx])):
                if params[i].grad is None:
                    params[i].grad = g.clone()
                else:
                    params[i].grad.copy_(g)

    def step(self) -> dict:
        if self.ds is not None:
            # DeepSpeed's ZeRO optimizers detect a non-finite global norm themselves (all ranks agree),
            # drop the update and leave the LR scheduler alone; we step the scheduler anyway so the LR
            # stays a function of the step count, as on the torch path.
            self.ds.step()
            norm = self.ds.get_global_grad_norm()
            norm = float(norm) if norm is not None else float("nan")
            skipped = not self.ds.was_step_applied()
            if skipped:
                self.scheduler.step()
            elif not math.isfinite(norm):
                import deepspeed

                raise RuntimeError(f"DeepSpeed {deepspeed.__version__} applied an optimizer step with a non-finite "
                                   f"gradient norm ({norm}); the weights are now invalid. Use deepspeed >= 0.19, "
                                   "whose ZeRO optimizers skip such steps, or run.engine: torch")
            return {"grad_norm": norm, "lr": self.lr, "skipped": skipped}
        self._all_reduce_grads()
        params = [p for _, p in self.named_trainable]
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip > 0 else float("inf"))
        skipped = not bool(torch.isfinite(norm))
        if not skipped:  # a non-finite gradient would poison Adam's moments: drop the step
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"grad_norm": float(norm), "lr": self.lr, "skipped": skipped}

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    # ------------------------------------------------------------------------------- full values

    def full_trainable_state(self) -> dict[str, torch.Tensor]:
        """Every trainable parameter as a full fp32 tensor (collective under ZeRO: call on all ranks)."""
        out = {}
        if self.ds is not None:
            from deepspeed.utils import safe_get_full_fp32_param

            for name, p in self.named_trainable:
                full = safe_get_full_fp32_param(p)
                out[name] = (full if full is not None else p.detach()).float().clone()
        else:
            for name, p in self.named_trainable:
                out[name] = p.detach().float().clone()
        return out

    # ------------------------------------------------------------------------------ checkpoints

    def save(self, folder: Path) -> None:
        """Collective: every rank calls it with the same folder."""
        folder.mkdir(parents=True, exist_ok=True)
        if self.ds is not None:
            self.ds.save_checkpoint(str(folder), tag="deepspeed", client_state={}, save_latest=False,
                                    exclude_frozen_parameters=True)
            return
        if D.is_main():
            from vist3a.weights import save_safetensors_atomic, save_torch_atomic

            save_safetensors_atomic({n: p.detach().float() for n, p in self.named_trainable}, folder / "trainable.safetensors")
            save_torch_atomic(self.optimizer.state_dict(), folder / "optimizer.pt")
            save_torch_atomic(self.scheduler.state_dict(), folder / "scheduler.pt")

    def load(self, folder: Path) -> None:
        if self.ds is not None:
            path, _ = self.ds.load_checkpoint(str(folder), tag="deepspeed", load_module_strict=False,
                                              load_optimizer_states=True, load_lr_scheduler_states=True)
            if path is None:
                raise RuntimeError(f"DeepSpeed could not load the checkpoint in '{folder}'")
            return
        from safetensors.torch import load_file

        saved = load_file(str(folder / "trainable.safetensors"))
        missing = [n for n, _ in self.named_trainable if n not in saved]
        if missing:
            raise RuntimeError(f"checkpoint '{folder}' lacks trainable parameter '{missing[0]}' "
                               f"(and {len(missing) - 1} more); was it written by another configuration?")
        with torch.no_grad():
            for n, p in self.named_trainable:
                p.copy_(saved[n].to(p.dtype))
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
        self.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", map_location="cpu", weights_only=True))

    def train(self, mode: bool = True) -> "TrainEngine":
        self.module.train(mode)
        return self


def autocast_context(device: torch.device, bf16: bool) -> Callable:
    """``torch.autocast`` in bf16 on CUDA when asked, else a no-op context."""
    import contextlib

    if bf16 and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext
