"""Dataset plumbing shared by every loader: errors, image I/O, deterministic streams and batching.

A *stream* turns a finite dataset into an endless, reshuffled-per-epoch sequence of positions
``0, 1, 2, ...``; step ``s`` of a run with global batch ``G`` consumes positions ``s*G .. s*G+G-1``,
rank ``r`` of ``W`` taking its contiguous ``G/W`` of them. The item at a position and any random
choice a loader makes for it (frame window, view subset) depend only on (seed, position), never on
the rank count or on how many workers load it, so the data position saved in a checkpoint is just
the step number and a resumed run sees exactly the batches the uninterrupted one would have.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from ..distributed import generator, py_random

_log = logging.getLogger("vist3a_train.data")

__all__ = [
    "DatasetError",
    "load_image",
    "resize_shorter_crop",
    "resize_square",
    "to_signed",
    "StreamDataset",
    "StepBatchSampler",
    "collate",
    "make_loader",
    "pick_views",
    "color_jitter",
    "BadSampleMonitor",
]


class DatasetError(ValueError):
    """A dataset file or folder is missing or malformed; the message names the path."""

    def __init__(self, message: str, path: Optional[Path | str] = None):
        super().__init__(message)
        self.path = None if path is None else str(path)


def load_image(path: Path) -> torch.Tensor:
    """RGB image as float [3, H, W] in [0, 1]; a missing or unreadable file names its path."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            return data.view(im.height, im.width, 3).permute(2, 0, 1).float() / 255.0
    except FileNotFoundError:
        raise DatasetError(f"image '{path}' does not exist", path) from None
    except Exception as exc:
        raise DatasetError(f"image '{path}' cannot be read ({' '.join(str(exc).split())[:120]})", path) from None


def decode_image_bytes(data: bytes | torch.Tensor, source: str) -> torch.Tensor:
    import io

    from PIL import Image

    if isinstance(data, torch.Tensor):
        data = data.cpu().numpy().tobytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            arr = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            return arr.view(im.height, im.width, 3).permute(2, 0, 1).float() / 255.0
    except Exception as exc:
        raise DatasetError(f"an image in '{source}' cannot be decoded ({' '.join(str(exc).split())[:120]})", source) from None


def resize_shorter_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """[T, 3, H, W] -> [T, 3, size, size]: scale so the shorter side is ``size``, centre-crop the other.

    Bilinear *without* antialiasing, as the official `resize_shorter_crop_square_batch`
    (data/image_preprocessing.py:32-34); on large downscales (ScanNet 1296x968 -> 512) this aliases, and the
    stitched decoder was trained on exactly that."""
    T, C, H, W = images.shape
    scale = size / min(H, W)
    nh, nw = max(size, round(H * scale)), max(size, round(W * scale))
    images = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False)
    y0, x0 = (nh - size) // 2, (nw - size) // 2
    return images[:, :, y0:y0 + size, x0:x0 + size]


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """[T, 3, H, W] -> [T, 3, size, size] without keeping the aspect ratio (as the official caption loader)."""
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def to_signed(frames: torch.Tensor) -> torch.Tensor:
    """[T, 3, H, W] in [0, 1] -> [3, T, H, W] in [-1, 1] (the Wan VAE / decoder layout)."""
    return (frames.clamp(0, 1) * 2 - 1).permute(1, 0, 2, 3).contiguous()


def pick_views(num_available: int, num_views: int, window_max: int, rng: random.Random) -> list[int]:
    """The official frame sampling (data/dl3dv_datasets.py:144-157), with the same draws from ``rng`` in the
    same order: a window of random length in [num_views, window_max], a start in [0, frames - window - 1] (the
    official never starts at the last possible frame), the window's first frame plus ``num_views - 1`` random
    others, sorted. Where the official draw fails (a window as long as the sequence, or longer) the window is
    capped and starts at 0; short sequences repeat their last frame."""
    if num_available <= 0:
        return []
    if num_available < num_views:
        return list(range(num_available)) + [num_available - 1] * (num_views - num_available)
    window = rng.randint(num_views, max(num_views, min(window_max, num_available)))
    start = rng.randint(0, num_available - window - 1) if num_available - window - 1 >= 0 else 0
    picked = sorted(rng.sample(range(1, window), num_views - 1)) if num_views > 1 else []
    return [start] + [start + i for i in picked]


def color_jitter(frames: torch.Tensor, strength, rng: random.Random) -> torch.Tensor:
    """torchvision ``ColorJitter(brightness, contrast, saturation, hue)`` on a clip [T, 3, H, W] in [0, 1]
    (one draw for the whole clip, as the official loaders apply it to the stacked frames), with the
    factors and the order of the four adjustments drawn from ``rng`` so the result depends only on
    (seed, position)."""
    import torchvision.transforms.functional as TF

    b, c, s, h = (float(v) for v in strength)
    ops = []
    if b > 0:
        f = rng.uniform(max(0.0, 1 - b), 1 + b)
        ops.append(lambda x, f=f: TF.adjust_brightness(x, f))
    if c > 0:
        f = rng.uniform(max(0.0, 1 - c), 1 + c)
        ops.append(lambda x, f=f: TF.adjust_contrast(x, f))
    if s > 0:
        f = rng.uniform(max(0.0, 1 - s), 1 + s)
        ops.append(lambda x, f=f: TF.adjust_saturation(x, f))
    if h > 0:
        f = rng.uniform(-h, h)
        ops.append(lambda x, f=f: TF.adjust_hue(x, f))
    rng.shuffle(ops)
    for op in ops:
        frames = op(frames)
    return frames.clamp(0, 1)


class StreamDataset(torch.utils.data.Dataset):
    """Position -> item of ``base`` (a sequence-like with ``load(index, rng)``), reshuffled each epoch."""

    def __init__(self, base, *, seed: int, name: str, shuffle: bool = True):
        if len(base) == 0:
            raise DatasetError(f"dataset '{name}' is empty ({getattr(base, 'describe', lambda: '')()})",
                               getattr(base, "root", None))
        self.base, self.seed, self.name, self.shuffle = base, seed, name, shuffle
        self.max_attempts = 20
        self._perm: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:  # positions are unbounded; DataLoader only needs this for its repr
        return 1 << 62

    def index_of(self, position: int) -> int:
        n = len(self.base)
        epoch, offset = divmod(int(position), n)
        if not self.shuffle:
            return offset
        perm = self._perm.get(epoch)
        if perm is None:
            perm = torch.randperm(n, generator=generator(self.seed, self.name, "epoch", epoch))
            self._perm = {epoch: perm}
        return int(perm[offset])

    def __getitem__(self, position: int) -> dict:
        """The item at ``position``; a sample whose files are missing or unreadable is skipped with a
        warning and another one is drawn (deterministically from (seed, position, attempt), so a resumed
        run makes the same choice). ``bad_samples`` counts the skips; ``bad_paths`` names them."""
        index = self.index_of(position)
        bad: list[str] = []
        tried = {index}
        attempt = 0
        while True:
            try:
                rng = py_random(self.seed, self.name, "item", position, *((attempt,) if attempt else ()))
                item = self.base.load(index, rng)
                break
            except DatasetError as exc:
                bad.append(exc.path or str(exc))
                _log.warning(f"skipped a bad sample of '{self.name}' at position {position}: {exc}")
                attempt += 1
                if attempt >= self.max_attempts or len(tried) == len(self.base):
                    raise DatasetError(f"dataset '{self.name}': {attempt} samples in a row are bad (last: {exc}); "
                                       "check the dataset files", exc.path) from None
                redraw = py_random(self.seed, self.name, "redraw", position, attempt)
                while index in tried:  # another sample, one not yet found bad for this position
                    index = redraw.randrange(len(self.base))
                tried.add(index)
        item["position"] = int(position)
        item["bad_samples"] = len(bad)
        item["bad_paths"] = "\n".join(bad)
        return item


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields this rank's positions for steps ``start_step, start_step + 1, ...`` (endless)."""

    def __init__(self, global_batch: int, rank: int, world: int, start_step: int = 0):
        if global_batch % world:
            raise ValueError(f"batch_size {global_batch} is not divisible by the {world} ranks; use a multiple of {world}")
        self.global_batch, self.rank, self.world = global_batch, rank, world
        self.per_rank = global_batch // world
        self.start_step = start_step

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            base = step * self.global_batch + self.rank * self.per_rank
            yield list(range(base, base + self.per_rank))
            step += 1

    def __len__(self) -> int:
        return 1 << 62


def collate(items: Sequence[dict]) -> dict:
    out: dict[str, Any] = {}
    for key in [k for k in items[0] if all(k in it for it in items)]:
        values = [it[key] for it in items]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], (int, float)):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out


class BadSampleMonitor:
    """Counts skipped samples over all ranks and stops the run past ``max_share`` of those drawn.

    ``update(batch)`` is collective (one all-reduce of two numbers); it returns the running totals for
    the logs and raises :class:`DatasetError` once at least ``min_count`` bad samples make up more than
    ``max_share`` of every sample drawn so far (good ones plus skipped ones)."""

    def __init__(self, name: str, max_share: float, min_count: int = 8):
        self.name, self.max_share, self.min_count = name, float(max_share), int(min_count)
        self.bad = 0
        self.drawn = 0

    def update(self, batch: dict) -> dict:
        from .. import distributed as D

        bad = int(batch["bad_samples"].sum()) if "bad_samples" in batch else 0
        n = len(batch["position"])
        counts = D.all_reduce_(torch.tensor([float(bad), float(n + bad)], dtype=torch.float64))
        self.bad += int(counts[0])
        self.drawn += int(counts[1])
        share = self.bad / max(1, self.drawn)
        if self.bad >= self.min_count and share > self.max_share:
            paths = [p for p in batch.get("bad_paths", []) if p]
            raise DatasetError(f"{self.bad} of {self.drawn} samples drawn from '{self.name}' were bad ({share:.1%} > "
                               f"run.max_bad_sample_share {self.max_share:.1%}); last on this rank: "
                               f"{paths[-1].splitlines()[-1] if paths else 'another rank'}. Fix or remove those files")
        return {"data/bad_samples": float(self.bad), "data/bad_share": share}


def make_loader(stream: StreamDataset, *, global_batch: int, rank: int, world: int, start_step: int,
                num_workers: int = 0) -> Iterator[dict]:
    sampler = StepBatchSampler(global_batch, rank, world, start_step)
    loader = torch.utils.data.DataLoader(
        stream, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate,
        persistent_workers=False, pin_memory=False,
    )
    return iter(loader)


def require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{what} '{path}' does not exist", path)
    if not path.is_dir():
        raise DatasetError(f"{what} '{path}' is not a folder", path)
    return path


def read_json(path: Path, what: str) -> Any:
    import json

    if not path.is_file():
        raise DatasetError(f"{what} '{path}' does not exist", path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"{what} '{path}' is not valid JSON ({' '.join(str(exc).split())[:120]})", path) from None


Loader = Callable[[int, random.Random], dict]
