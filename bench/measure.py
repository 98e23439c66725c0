"""Measurement helpers for the benchmarks: peak FLOP/s tables, Wan FLOP counts and MFU, stage timers,
peak memory, random full-size weights and the versions a figure depends on.

Why here and not in ``vist3a``: only ``bench/`` (and its tests) use them; the library keeps what
inference needs (``vist3a.offload``, ``vist3a.sync``).

* **FLOPs** of the Wan 2.1 transformer are counted from the architecture (every matrix product of one
  forward: patch embedding, time/text embedders, per block self-attention projections and scores,
  cross-attention, feed-forward, output projection; element-wise work is not counted, as usual for
  MFU).  ``tests/test_perf.py`` checks the count against ``torch.utils.flop_counter`` on real modules.
* **Peak FLOP/s** for MFU come from NVIDIA's datasheets, dense (no 2:4 sparsity) tensor-core figures:
  H100 SXM / H200 / GH200 **989.4 TFLOP/s** bf16/fp16, H100 PCIe 756, H100 NVL 835, A100 312, ...
  On a CPU, or a GPU not in the table, the peak is *measured* with a large GEMM and labelled so.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import nn

import common  # noqa: F401  (puts the repository root on sys.path, so `vist3a` imports from a checkout)

from vist3a.offload import GIB, Device  # noqa: F401  (GIB re-exported for the bench scripts)
from vist3a.sync import synchronize

__all__ = [
    "PEAK_TFLOPS",
    "peak_flops",
    "measure_matmul_flops",
    "describe_device",
    "cpu_has_fast_bf16",
    "WanFlops",
    "wan_transformer_flops",
    "mfu",
    "StageTimer",
    "summarize",
    "PeakMemory",
    "materialize_random_",
    "wan_fill_value",
    "versions",
]

# ------------------------------------------------------------------------------------------ peak FLOP/s

# Dense tensor-core peaks in TFLOP/s from NVIDIA's datasheets (the "with sparsity" figures halved).
# Keys are matched against torch.cuda.get_device_name() by `_peak_key` (most specific first).
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 SXM": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 NVL": {"bf16": 835.5, "fp16": 835.5, "tf32": 417.8, "fp32": 60.0},
    "H100 PCIe": {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2},
    "H200": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},  # H200 SXM: same compute as H100 SXM
    "H200 NVL": {"bf16": 835.5, "fp16": 835.5, "tf32": 417.8, "fp32": 60.0},
    "GH200": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "L40S": {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6},
    "RTX 4090": {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6},  # fp32 accumulate
}
_DTYPE_KEY = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def _peak_key(name: str) -> Optional[str]:
    n = name.upper()
    if "GH200" in n:
        return "GH200"
    if "H200" in n:
        return "H200 NVL" if "NVL" in n else "H200"
    if "H100" in n:
        if "PCIE" in n:
            return "H100 PCIe"
        return "H100 NVL" if "NVL" in n else "H100 SXM"  # "H100 80GB HBM3" is the SXM part
    for key in ("A100", "L40S", "RTX 4090"):
        if key.upper() in n:
            return key
    return None


def peak_flops(device: Device, dtype: torch.dtype = torch.bfloat16, *, measure_if_unknown: bool = True) -> tuple[Optional[float], str]:
    """(peak FLOP/s, source) for MFU: the datasheet figure for known GPUs, else a measured GEMM rate.

    The source string says which ("datasheet: H100 SXM bf16 dense" or "measured: ...").
    """
    device = torch.device(device)
    key = _DTYPE_KEY.get(dtype, "bf16")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        table = _peak_key(name)
        if table is not None:
            return PEAK_TFLOPS[table][key] * 1e12, f"datasheet: {table} {key} dense ({name})"
    if not measure_if_unknown:
        return None, "unknown"
    rate = measure_matmul_flops(device, dtype)
    return rate, f"measured: best {key} GEMM rate on {describe_device(device)}"


def measure_matmul_flops(device: Device, dtype: torch.dtype = torch.bfloat16, size: int = 2048,
                         seconds: float = 0.5) -> float:
    """Achieved FLOP/s of a square GEMM (the best of a few timed batches): a practical peak."""
    device = torch.device(device)
    if device.type == "cpu" and size > 1536:
        size = 1536  # a CPU needs no bigger problem to reach its peak, and stays quick
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    flop = 2.0 * size**3
    a @ b
    synchronize(device)
    best, deadline = 0.0, time.perf_counter() + seconds
    while True:
        reps = 4
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        synchronize(device)
        dt = time.perf_counter() - t0
        best = max(best, reps * flop / dt)
        if time.perf_counter() > deadline:
            return best


def describe_device(device: Device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / GIB:.0f} GiB, sm_{props.major}{props.minor})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu: {cpu} ({torch.get_num_threads()} threads)"


def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (AMX or AVX512-BF16); elsewhere bf16 is emulated and slow."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:
        return False


# ---------------------------------------------------------------------------------------- FLOP count


def _cfg_get(config, name, default=None):
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


@dataclass(frozen=True)
class WanFlops:
    """FLOPs (2 per multiply-add) of one `WanTransformer3DModel` forward, by part."""

    embed: float  # patch embedding + time embedder/projection + text embedder
    self_attn_proj: float  # Q, K, V, O of attn1, all blocks
    self_attn_scores: float  # QK^T and AV of attn1, all blocks
    cross_attn: float  # attn2: Q/O on video tokens, K/V on text tokens, scores, all blocks
    ffn: float
    head: float  # output projection
    tokens: int
    text_tokens: int
    batch: int

    @property
    def total(self) -> float:
        return self.embed + self.self_attn_proj + self.self_attn_scores + self.cross_attn + self.ffn + self.head

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total"] = self.total
        return d


def wan_transformer_flops(config, latent_shape: Sequence[int], *, text_tokens: int = 512, batch: Optional[int] = None) -> WanFlops:
    """FLOPs of one forward of the Wan 2.1 transformer on a latent ``[B, C, T, H, W]`` (or ``(C, T, H, W)``
    with ``batch``) and ``text_tokens`` text embeddings (512, the official padding).

    A CFG step is two forwards of batch B (or one of batch 2B): ``2 * total``.
    """
    shape = tuple(int(s) for s in latent_shape)
    if len(shape) == 5:
        b, c, t, h, w = shape
    elif len(shape) == 4:
        b, (c, t, h, w) = 1, shape
    else:
        raise ValueError(f"latent_shape must be [B, C, T, H, W] or [C, T, H, W], got {shape}")
    b = batch if batch is not None else b
    pt, ph, pw = (int(p) for p in _cfg_get(config, "patch_size", (1, 2, 2)))
    heads, head_dim = int(_cfg_get(config, "num_attention_heads")), int(_cfg_get(config, "attention_head_dim"))
    d = heads * head_dim
    ffn, layers = int(_cfg_get(config, "ffn_dim")), int(_cfg_get(config, "num_layers"))
    text_dim, freq_dim = int(_cfg_get(config, "text_dim", 4096)), int(_cfg_get(config, "freq_dim", 256))
    out_ch = int(_cfg_get(config, "out_channels", None) or _cfg_get(config, "in_channels", 16))
    n = (t // pt) * (h // ph) * (w // pw)
    L = int(text_tokens)
    mm = lambda m, k, nn_: 2.0 * m * k * nn_  # noqa: E731  FLOPs of an [m,k] @ [k,n] product
    embed = b * (mm(n, c * pt * ph * pw, d)  # patch embedding (Conv3d with stride = kernel)
                 + mm(1, freq_dim, d) + mm(1, d, d) + mm(1, d, 6 * d)  # time embedder + time projection
                 + mm(L, text_dim, d) + mm(L, d, d))  # text embedder (PixArt-alpha projection)
    self_proj = layers * b * 4 * mm(n, d, d)
    self_scores = layers * b * 2 * mm(n, head_dim, n) * heads
    cross = layers * b * (2 * mm(n, d, d) + 2 * mm(L, d, d) + 2 * mm(n, head_dim, L) * heads)
    ffn_f = layers * b * 2 * mm(n, d, ffn)
    head = b * mm(n, d, out_ch * pt * ph * pw)
    return WanFlops(embed, self_proj, self_scores, cross, ffn_f, head, n, L, b)


def mfu(flops: float, seconds: float, peak: Optional[float]) -> Optional[float]:
    """Model FLOPs utilisation: flops / seconds / peak (None if the peak is unknown)."""
    if not peak or seconds <= 0:
        return None
    return flops / seconds / peak


class StageTimer:
    """Wall time per named stage; with ``sync=True`` the device is synchronised at stage boundaries only
    (never inside a stage), so the figures are device time without adding syncs to inner loops."""

    def __init__(self, device: Device = "cpu", sync: bool = True):
        self.device = torch.device(device)
        self.sync = sync
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.sync:
            synchronize(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                synchronize(self.device)
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0

    @property
    def total(self) -> float:
        return sum(self.times.values())


def summarize(values: Sequence[float]) -> dict:
    """Median, min, max and relative spread ((max - min) / median) of repeated measurements."""
    vals = [float(v) for v in values]
    if not vals:
        return {"n": 0}
    med = statistics.median(vals)
    return {
        "median": med,
        "min": min(vals),
        "max": max(vals),
        "spread": (max(vals) - min(vals)) / med if med else 0.0,
        "n": len(vals),
        "values": vals,
    }


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):  # not Linux
        import resource  # POSIX only, so imported where it is needed (Linux reads /proc above)

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak memory over a ``with`` block.

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset (tensors only).
    CPU: the process RSS, sampled every ``interval`` s by a thread (plus at entry and exit); it
    includes everything the process holds, so compare runs made in the same process state.
    """

    def __init__(self, device: Device = "cpu", interval: float = 0.005):
        self.device = torch.device(device)
        self.interval = interval
        self.base_bytes = 0
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base_bytes = self.peak_bytes = torch.cuda.memory_allocated(self.device)
        else:
            self.base_bytes = self.peak_bytes = _rss_bytes()
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated(self.device))
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB


def wan_fill_value(name: str, shape: Sequence[int], seed: int, device: Device = "cpu") -> torch.Tensor:
    """Deterministic random value for a Wan/UMT5/VAE parameter (fp32), seeded by its name: fan-in scaled
    normal for matrices/kernels, zeros for biases, ones for norm scales, N(0, 1/dim) modulation tables.
    Generated on ``device`` (a GPU makes the 14B model in seconds)."""
    shape = tuple(int(s) for s in shape)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "bias":
        return torch.zeros(shape, device=device)
    if leaf == "gamma" or (leaf == "weight" and len(shape) == 1):
        return torch.ones(shape, device=device)
    g = torch.Generator(device=device).manual_seed((zlib.crc32(name.encode()) + 1_000_003 * int(seed)) % (2**63))
    v = torch.randn(shape, generator=g, device=device)
    if "scale_shift_table" in name:
        return v / math.sqrt(shape[-1])
    if len(shape) >= 2:
        return v / math.sqrt(max(1, math.prod(shape[1:])))
    return v * 0.02


def materialize_random_(module: nn.Module, value_fn: Callable[[str, tuple], torch.Tensor], *, device: Device,
                        dtype_for: Callable[[str], torch.dtype]) -> nn.Module:
    """Give a module built under ``accelerate.init_empty_weights()`` (parameters on meta, buffers real)
    real parameters: ``value_fn(name, shape)`` (fp32), cast to ``dtype_for(name)``, on ``device``.
    Tied parameters stay tied (transformers models are tied first: meta construction skips it);
    buffers move to ``device``."""
    device = torch.device(device)
    if hasattr(module, "tie_weights"):
        module.tie_weights()
    new: dict[int, nn.Parameter] = {}
    for name, p in module.named_parameters(remove_duplicate=True):
        value = value_fn(name, tuple(p.shape)).to(device=device, dtype=dtype_for(name))
        new[id(p)] = nn.Parameter(value, requires_grad=False)
    for name, p in list(module.named_parameters(remove_duplicate=False)):
        owner, _, leaf = name.rpartition(".")
        sub = module.get_submodule(owner) if owner else module
        sub._parameters[leaf] = new[id(p)]
    for owner_name, sub in module.named_modules():
        for leaf, b in list(sub._buffers.items()):
            if b is not None:
                sub._buffers[leaf] = b.to(device)
    return module


def versions() -> dict:
    """Versions of everything a benchmark figure depends on."""

    out = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "platform": platform.platform()}
    for pkg in ("diffusers", "transformers", "peft", "accelerate", "gsplat", "triton", "xformers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out["git_commit"] = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                           timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10).stdout
        out["git_dirty"] = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out
