"""Saving rendered views: PNG contact sheets and orbit animations (.webp, .gif, .mp4), atomically.

Images are [N, H, W, 3] floats in 0..1 (torch or numpy), as :func:`vist3a.render.rasterize` returns.
Animated WebP and GIF need only Pillow; .mp4 needs imageio with imageio-ffmpeg.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
from PIL import Image

from ..atomic import atomic_path, atomic_save_bytes

__all__ = ["to_uint8", "save_png_grid", "save_orbit_video", "save_gif", "mp4_available"]

PathLike = Union[str, os.PathLike]


def to_uint8(images) -> np.ndarray:
    """[N, H, W, 3] (or [H, W, 3]) floats in 0..1 -> uint8 [N, H, W, 3], rounded and clipped."""
    if hasattr(images, "detach"):
        images = images.detach().float().cpu().numpy()
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or images.shape[0] == 0:
        raise ValueError(f"expected images [N, H, W, 3] with N >= 1, got {list(images.shape)}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return (np.clip(np.nan_to_num(images[..., :3]), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _grid(frames: np.ndarray, cols: Optional[int]) -> np.ndarray:
    n, h, w, _ = frames.shape
    if not cols:
        # Prefer a full grid (8 views -> 4x2) when that stays within 4:1, else about square.
        rows = next((r for r in range(int(math.sqrt(n)), 0, -1) if n % r == 0), 1)
        cols = n // rows if n // rows <= 4 * rows else math.ceil(math.sqrt(n))
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    sheet = np.full((rows * h, cols * w, 3), 255, dtype=np.uint8)  # empty cells match the white background
    for i, frame in enumerate(frames):
        r, c = divmod(i, cols)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = frame
    return sheet


def save_png_grid(images, path: PathLike, cols: Optional[int] = None) -> Path:
    """Tile the views into one PNG (``cols`` per row, default about square), written atomically."""
    buf = io.BytesIO()
    Image.fromarray(_grid(to_uint8(images), cols)).save(buf, format="PNG")
    return atomic_save_bytes(path, buf.getvalue())


def _pil_frames(images) -> List[Image.Image]:
    return [Image.fromarray(frame) for frame in to_uint8(images)]


def save_orbit_video(images, path: PathLike, fps: float = 12.0) -> Path:
    """Save the views as a looping animation; the format follows the suffix (.webp, .gif or .mp4)."""
    path = Path(path)
    suffix = path.suffix.lower()
    duration_ms = max(1, round(1000.0 / fps))
    if suffix in (".webp", ".gif"):
        frames = _pil_frames(images)
        buf = io.BytesIO()
        options = {"lossless": False, "quality": 90, "method": 4} if suffix == ".webp" else {"disposal": 2}
        frames[0].save(
            buf,
            format=suffix[1:].upper(),
            save_all=True,
            append_images=frames[1:],
            duration=duration_ms,
            loop=0,
            **options,
        )
        return atomic_save_bytes(path, buf.getvalue())
    if suffix == ".mp4":
        return _save_mp4(to_uint8(images), path, fps)
    raise ValueError(f"cannot write an animation as '{suffix or path.name}': use .webp, .gif or .mp4")


def save_gif(images, path: PathLike, fps: float = 12.0) -> Path:
    """Save the views as a looping GIF (widest compatibility, 256 colours)."""
    if Path(path).suffix.lower() != ".gif":
        raise ValueError(f"save_gif writes .gif files, got {path}")
    return save_orbit_video(images, path, fps)


def mp4_available() -> bool:
    """True if imageio and its ffmpeg plugin are installed (needed for .mp4 only)."""
    return all(importlib.util.find_spec(name) is not None for name in ("imageio", "imageio_ffmpeg"))


def _save_mp4(frames: np.ndarray, path: Path, fps: float) -> Path:
    if not mp4_available():
        raise RuntimeError(
            f"writing {path.name} needs imageio and imageio-ffmpeg (pip install imageio imageio-ffmpeg); "
            "save the orbit as .webp or .gif instead"
        )
    import imageio.v2 as imageio

    h, w = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # yuv420p needs even sizes
    with atomic_path(path, suffix=".mp4") as tmp:
        with imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=1) as writer:
            for frame in frames:
                writer.append_data(frame)
    return path
