"""Process-group setup shared by `torchrun` and the `deepspeed` launcher.

Both launchers export RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; a plain
``python script.py`` gets a one-process group on a free local port, so every code path (all-reduce,
barriers, DeepSpeed) is the same with one rank or many. CUDA -> nccl, CPU -> gloo.

Randomness that must not depend on the number of ranks (noise per sample, view counts per step)
comes from :func:`generator` keyed by (seed, purpose, step, global sample index) instead of from
per-rank RNG streams; that is what makes a 2-rank ZeRO run follow the single-process trajectory
and a resumed run repeat the uninterrupted one.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import random
import socket
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "init_distributed",
    "is_main",
    "barrier",
    "all_reduce_",
    "broadcast_object",
    "generator",
    "seed_everything",
    "rng_state",
    "set_rng_state",
    "shutdown",
]


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    deepspeed: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_INFO: Optional[DistInfo] = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pick_device(want: str, local_rank: int) -> torch.device:
    if want not in ("auto", "cpu", "cuda"):
        raise ValueError(f"run.device must be auto, cpu or cuda, got {want!r}")
    if want == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device is 'cuda' but CUDA is not available on this machine; use device: cpu or auto")
    if want != "cpu" and torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def _quiet_deepspeed_cpu() -> None:
    """DeepSpeed's CPU accelerator JIT-compiles a shared-memory all-reduce op (~40 s) at init; gloo is
    plenty for tests, so skip it unless VIST3A_DS_SHM=1. Extensions go to the repo's .cache/."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(_repo_root() / ".cache" / "torch_extensions"))
    if os.environ.get("VIST3A_DS_SHM") == "1":
        return
    try:
        import deepspeed.ops

        ops = getattr(deepspeed.ops, "__compatible_ops__", None)
        if isinstance(ops, dict):
            ops["deepspeed_shm_comm"] = False
    except ImportError:
        pass


def _repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]


def init_distributed(device: str = "auto", use_deepspeed: bool = False, timeout_minutes: int = 60) -> DistInfo:
    """Initialise (once) the process group from the launcher's environment."""
    global _INFO
    if _INFO is not None:
        return _INFO
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = _pick_device(device, local_rank)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    timeout = datetime.timedelta(minutes=timeout_minutes)
    if use_deepspeed:
        if dev.type == "cpu":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
            _quiet_deepspeed_cpu()
        import deepspeed

        deepspeed.init_distributed(dist_backend=backend, timeout=timeout, verbose=False)
    elif not dist.is_initialized():
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timeout, **kwargs)
    _INFO = DistInfo(rank, world, local_rank, dev, backend, use_deepspeed)
    return _INFO


def info() -> DistInfo:
    if _INFO is None:
        raise RuntimeError("init_distributed() has not been called")
    return _INFO


def is_main() -> bool:
    return _INFO is None or _INFO.rank == 0


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_reduce_(t: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    """In-place all-reduce that also works on a CPU tensor in an nccl job (moved to the GPU and back)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return t
    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        tmp = t.to(info().device)
        dist.all_reduce(tmp, op=op)
        t.copy_(tmp.to(t.device))
    else:
        dist.all_reduce(t, op=op)
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src, device=info().device if dist.get_backend() == "nccl" else None)
    return holder[0]


def _key_seed(*parts: Any) -> int:
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(*parts: Any, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded from ``parts`` (e.g. seed, "noise", step, sample index): the same
    numbers on every rank count and after a resume."""
    g = torch.Generator(device=device)
    g.manual_seed(_key_seed(*parts))
    return g


def py_random(*parts: Any) -> random.Random:
    return random.Random(_key_seed(*parts))


def seed_everything(seed: int, rank: int) -> None:
    random.seed(seed + rank)
    np.random.seed((seed + rank) % (2**32))
    torch.manual_seed(seed + rank)


def rng_state() -> dict:
    """Python/numpy/torch(/cuda) RNG states as plain containers (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def shutdown(clean: bool = True) -> None:
    """Tear down the process group (after a barrier when every rank got here normally)."""
    global _INFO
    if dist.is_initialized():
        try:
            if clean:
                barrier()
        finally:
            dist.destroy_process_group()
    _INFO = None
