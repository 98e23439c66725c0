"""Loaders for DL3DV, ScanNet and RealEstate10K in their published on-disk layouts.

Every multi-view item is ``{"video": [3, V, S, S], "context": [3, V, s, s]}`` in [-1, 1] (the Wan VAE
input at ``video_size`` and AnySplat's at ``context_size``), plus ``caption`` for captioned data
and ``c2w``/``K`` (camera-to-world in OpenCV axes, intrinsics normalised by image size) where the
layout stores cameras. Images are resized so the shorter side is ``video_size`` and centre-cropped,
then resized to ``context_size`` (the official stitching preprocessing). Missing or malformed files
raise :class:`DatasetError` naming the path, at construction where possible.

Layouts
-------
DL3DV (``DL3DV-ALL-960P`` / ``-480P`` downloads)::

    ROOT/<1K|2K|...|11K>/<scene hash>/images_4/frame_00001.png ...
                                      transforms.json       (nerfstudio: fl_x, fl_y, cx, cy, w, h, frames[].transform_matrix, OpenGL c2w)

DL3DV captions (the official ``dl3dv_text_label_980P.json``): a JSON list of
``{"scene_name": "<scene hash>", "caption": {"<anything>_<first frame>_<last frame>": "text", ...}}``;
each entry's key names the inclusive frame range its text describes.

ScanNet (the official unlabeled-video layout)::

    ROOT/<scene0000_00>/frames/color/0.jpg 1.jpg ...        (optional split_file: JSON list of scene names)

RealEstate10K, either the pixelSplat/AnySplat chunk layout::

    ROOT/<train|test>/000000.torch ... index.json           (index.json: {key: chunk file name}; a chunk is a list of
                                                             {"key", "url", "timestamps", "cameras" [N, 18], "images": [JPEG bytes]})

(cameras: fx fy cx cy (normalised) 0 0 then the 3x4 world-to-camera matrix, row-major), or the
per-sequence layout of the official evaluation::

    ROOT/<sequence>/annotations.json                         (list of {"idx", "filepath", "intrinsics", "extrinsics"})
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from .base import (
    DatasetError,
    color_jitter,
    decode_image_bytes,
    load_image,
    pick_views,
    read_json,
    require_dir,
    resize_shorter_crop,
    resize_square,
    to_signed,
)

__all__ = ["DL3DV", "DL3DVCaptioned", "ScanNet", "RE10K"]

_FRAME_RE = re.compile(r"^frame_(\d+)\.(png|jpg|jpeg)$", re.IGNORECASE)
_OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def _frames(images: torch.Tensor, video_size: int, context_size: int, square: bool = False,
            jitter=None, rng: Optional[random.Random] = None) -> dict:
    """Resize (and optionally colour-jitter, before the context resize, as the official loaders) a clip."""
    video = resize_square(images, video_size) if square else resize_shorter_crop(images, video_size)
    if jitter is not None:
        video = color_jitter(video.clamp(0, 1), jitter, rng)
    context = F.interpolate(video, size=(context_size, context_size), mode="bilinear", align_corners=False,
                            antialias=True)
    return {"video": to_signed(video), "context": to_signed(context)}


def _crop_intrinsics(K: torch.Tensor, w: float, h: float) -> torch.Tensor:
    """Pixel intrinsics of a (w, h) image -> normalised intrinsics after the shorter-side centre crop."""
    side = min(w, h)
    K = K.clone()
    K[..., 0, 2] -= (w - side) / 2
    K[..., 1, 2] -= (h - side) / 2
    K[..., :2, :] /= side
    return K


class _MultiViewBase:
    def __init__(self, root, num_views: int, video_size: int, context_size: int, window: Optional[int] = None,
                 color_jitter=None):
        self.root = Path(root).expanduser()
        self.color_jitter = None if color_jitter is None else tuple(float(v) for v in color_jitter)
        self.num_views, self.video_size, self.context_size = int(num_views), int(video_size), int(context_size)
        self.window = int(window or num_views)
        if (self.num_views - 1) % 4:
            raise ValueError(f"num_views={num_views}: Wan clips need 4k+1 frames (5, 9, 13, 17, 21)")

    def describe(self) -> str:
        return f"{type(self).__name__} at {self.root}"


class DL3DV(_MultiViewBase):
    def __init__(self, root, num_views: int = 13, video_size: int = 512, context_size: int = 448,
                 window: Optional[int] = None, images_dir: str = "images_4", subsets: Optional[list] = None,
                 load_cameras: bool = True, color_jitter=None):
        super().__init__(root, num_views, video_size, context_size, window, color_jitter)
        require_dir(self.root, "DL3DV root")
        self.images_dir, self.load_cameras = images_dir, load_cameras
        groups = [self.root / s for s in subsets] if subsets else sorted(p for p in self.root.iterdir() if p.is_dir())
        for g in groups:
            require_dir(g, "DL3DV subset folder")
        self.scenes = sorted(s for g in groups for s in g.iterdir() if (s / images_dir).is_dir())
        if not self.scenes:
            raise DatasetError(
                f"DL3DV root '{self.root}' has no <subset>/<scene>/{images_dir}/ folders; expected the DL3DV-ALL "
                f"layout (e.g. {self.root}/1K/<scene hash>/{images_dir}/frame_00001.png)", self.root)

    def __len__(self) -> int:
        return len(self.scenes)

    def frame_files(self, scene: Path) -> list[Path]:
        folder = scene / self.images_dir
        files = sorted((p for p in folder.iterdir() if _FRAME_RE.match(p.name)),
                       key=lambda p: int(_FRAME_RE.match(p.name).group(1)))
        if not files:
            raise DatasetError(f"DL3DV scene folder '{folder}' has no frame_XXXXX.png images", folder)
        return files

    def cameras(self, scene: Path, files: list[Path]) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        path = scene / "transforms.json"
        if not self.load_cameras or not path.is_file():
            return None
        meta = read_json(path, "DL3DV transforms file")
        try:
            by_name = {Path(f["file_path"]).name: torch.tensor(f["transform_matrix"], dtype=torch.float32)
                       for f in meta["frames"]}
            fx, fy, cx, cy = (float(meta[k]) for k in ("fl_x", "fl_y", "cx", "cy"))
            w, h = float(meta["w"]), float(meta["h"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"DL3DV transforms file '{path}' is malformed (missing or bad {exc}); expected the "
                               "nerfstudio fields fl_x, fl_y, cx, cy, w, h and frames[].file_path/transform_matrix", path) from None
        c2w = []
        for f in files:
            m = by_name.get(f.name)
            if m is None or m.shape != (4, 4):
                raise DatasetError(f"DL3DV transforms file '{path}' has no 4x4 transform_matrix for {f.name}", path)
            c2w.append(m @ _OPENGL_TO_OPENCV)
        # transforms.json describes the full-resolution images; images_4 is the same frame scaled down
        K = torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
        return torch.stack(c2w), _crop_intrinsics(K, w, h).expand(len(files), 3, 3).clone()

    def load(self, index: int, rng: random.Random) -> dict:
        scene = self.scenes[index]
        files = self.frame_files(scene)
        picked = pick_views(len(files), self.num_views, self.window, rng)
        images = torch.stack([load_image(files[i]) for i in picked])
        item = _frames(images, self.video_size, self.context_size, jitter=self.color_jitter, rng=rng)
        cams = self.cameras(scene, files)
        if cams is not None:
            item["c2w"], item["K"] = cams[0][picked], cams[1][picked]
        return item


class DL3DVCaptioned(DL3DV):
    """DL3DV clips with the official captions (align.py's flow-matching data).

    Each item is one captioned scene, as in the official ``DL3DVTextPairedDataset`` (data/dl3dv_datasets.py:
    227-284): loading it picks one of the scene's caption entries uniformly (``rng.choice`` over the entries in
    file order, the official ``random.choice(keys)``), so every scene is equally likely however many captions
    it has. The entry key names the frame range; ``num_views`` frames are taken from it (the first and last
    always, the others by ``rng.sample``), resized to ``video_size`` squares; ranges shorter than ``num_views``
    repeat their last frame. With an rng seeded like the official global ``random`` the draws are identical.
    """

    def __init__(self, root, captions, num_views: int = 13, video_size: int = 512, images_dir: str = "images_4",
                 subsets: Optional[list] = None):
        super().__init__(root, num_views, video_size, video_size, None, images_dir, subsets, load_cameras=False)
        self.captions_path = Path(captions).expanduser()
        data = read_json(self.captions_path, "DL3DV caption file")
        if not isinstance(data, list):
            raise DatasetError(f"DL3DV caption file '{self.captions_path}' must hold a JSON list of "
                               "{scene_name, caption} entries", self.captions_path)
        by_name = {}
        for i, entry in enumerate(data):
            if not (isinstance(entry, dict) and isinstance(entry.get("scene_name"), str)
                    and isinstance(entry.get("caption"), dict)):
                raise DatasetError(f"DL3DV caption file '{self.captions_path}': entry {i} is not "
                                   "{\"scene_name\": str, \"caption\": {\"<name>_<start>_<end>\": text}}", self.captions_path)
            for key, text in entry["caption"].items():
                parts = key.split("_")
                if len(parts) < 2 or not parts[-1].isdigit() or not parts[-2].isdigit() or not isinstance(text, str):
                    raise DatasetError(f"DL3DV caption file '{self.captions_path}': scene {entry['scene_name']} has "
                                       f"caption key {key!r}; keys must end in _<start frame>_<end frame>", self.captions_path)
            by_name[entry["scene_name"]] = entry["caption"]
        self.items = [(scene, list(by_name[scene.name].items())) for scene in self.scenes
                      if by_name.get(scene.name)]
        if not self.items:
            raise DatasetError(f"none of the {len(self.scenes)} DL3DV scenes under '{self.root}' has a caption in "
                               f"'{self.captions_path}' (scene folder names must equal the entries' scene_name)", self.captions_path)

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int, rng: random.Random) -> dict:
        scene, entries = self.items[index]
        key, text = rng.choice(entries)
        start, end = int(key.split("_")[-2]), int(key.split("_")[-1])
        files = [f for f in self.frame_files(scene) if start <= int(_FRAME_RE.match(f.name).group(1)) <= end]
        if not files:
            raise DatasetError(f"DL3DV scene '{scene}' has no frames {start}..{end} named by caption key {key!r}", scene)
        n = len(files)
        if n <= self.num_views:
            picked = list(range(n)) + [n - 1] * (self.num_views - n)
        else:
            inner = sorted(rng.sample(range(1, n - 1), self.num_views - 2)) if self.num_views > 2 else []
            picked = [0] + inner + [n - 1][: self.num_views - 1]
        images = torch.stack([load_image(files[i]) for i in picked])
        return {"video": to_signed(resize_square(images, self.video_size)), "caption": text}


class ScanNet(_MultiViewBase):
    def __init__(self, root, num_views: int = 13, video_size: int = 512, context_size: int = 448,
                 window: Optional[int] = None, split_file: Optional[str] = None, color_jitter=None):
        super().__init__(root, num_views, video_size, context_size, window, color_jitter)
        require_dir(self.root, "ScanNet root")
        scenes = sorted(p for p in self.root.iterdir() if (p / "frames" / "color").is_dir())
        if split_file:
            names = read_json(Path(split_file).expanduser(), "ScanNet split file")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise DatasetError(f"ScanNet split file '{split_file}' must be a JSON list of scene names", split_file)
            keep = set(names)
            scenes = [s for s in scenes if s.name in keep]
        if not scenes:
            raise DatasetError(f"ScanNet root '{self.root}' has no <scene>/frames/color/ folders"
                               + (f" named in '{split_file}'" if split_file else ""), self.root)
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def load(self, index: int, rng: random.Random) -> dict:
        folder = self.scenes[index] / "frames" / "color"
        files = [p for p in folder.iterdir() if p.stem.isdigit() and p.suffix.lower() in (".jpg", ".jpeg", ".png")]
        if not files:
            raise DatasetError(f"ScanNet folder '{folder}' has no <number>.jpg frames", folder)
        files.sort(key=lambda p: int(p.stem))
        picked = pick_views(len(files), self.num_views, self.window, rng)
        return _frames(torch.stack([load_image(files[i]) for i in picked]), self.video_size, self.context_size,
                       jitter=self.color_jitter, rng=rng)


class RE10K(_MultiViewBase):
    def __init__(self, root, num_views: int = 13, video_size: int = 512, context_size: int = 448,
                 window: Optional[int] = None, split: str = "train", layout: str = "auto", color_jitter=None):
        super().__init__(root, num_views, video_size, context_size, window, color_jitter)
        require_dir(self.root, "RealEstate10K root")
        if layout == "auto":
            layout = "chunks" if (self.root / split / "index.json").is_file() else "annotations"
        if layout == "chunks":
            self.chunk_dir = self.root / split
            index = read_json(self.chunk_dir / "index.json", "RealEstate10K chunk index")
            if not isinstance(index, dict) or not all(isinstance(v, str) for v in index.values()):
                raise DatasetError(f"RealEstate10K chunk index '{self.chunk_dir / 'index.json'}' must map sequence "
                                   "keys to chunk file names", self.chunk_dir / "index.json")
            self.items = sorted(index.items())
        elif layout == "annotations":
            self.items = sorted((p.name, str(p / "annotations.json")) for p in self.root.iterdir()
                                if (p / "annotations.json").is_file())
            if not self.items:
                raise DatasetError(f"RealEstate10K root '{self.root}' has neither {split}/index.json (chunk layout) "
                                   "nor <sequence>/annotations.json folders", self.root)
        else:
            raise ValueError(f"RE10K layout must be auto, chunks or annotations, got {layout!r}")
        self.layout = layout
        self._chunk_cache: tuple[str, dict] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _chunk_entry(self, key: str, chunk_name: str) -> dict:
        path = self.chunk_dir / chunk_name
        if self._chunk_cache is None or self._chunk_cache[0] != chunk_name:
            if not path.is_file():
                raise DatasetError(f"RealEstate10K chunk '{path}' (listed in index.json for {key}) does not exist", path)
            try:
                chunk = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise DatasetError(f"RealEstate10K chunk '{path}' cannot be read ({' '.join(str(exc).split())[:120]})", path) from None
            if not isinstance(chunk, list):
                raise DatasetError(f"RealEstate10K chunk '{path}' must hold a list of sequences", path)
            self._chunk_cache = (chunk_name, {e.get("key"): e for e in chunk if isinstance(e, dict)})
        entry = self._chunk_cache[1].get(key)
        if entry is None or "images" not in entry or "cameras" not in entry:
            raise DatasetError(f"RealEstate10K chunk '{path}' has no sequence {key!r} with images and cameras", path)
        return entry

    def load(self, index: int, rng: random.Random) -> dict:
        key, where = self.items[index]
        if self.layout == "chunks":
            entry = self._chunk_entry(key, where)
            cams = torch.as_tensor(entry["cameras"], dtype=torch.float32)
            n = min(len(entry["images"]), cams.shape[0])
            picked = pick_views(n, self.num_views, self.window, rng)
            images = torch.stack([decode_image_bytes(entry["images"][i], str(self.chunk_dir / where)) for i in picked])
            item = _frames(images, self.video_size, self.context_size, jitter=self.color_jitter, rng=rng)
            h, w = images.shape[-2:]
            K = torch.zeros(len(picked), 3, 3)
            c = cams[picked]
            K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = c[:, 0] * w, c[:, 1] * h, c[:, 2] * w, c[:, 3] * h, 1
            w2c = torch.eye(4).repeat(len(picked), 1, 1)
            w2c[:, :3] = c[:, 6:].reshape(-1, 3, 4)
            item["c2w"], item["K"] = torch.linalg.inv(w2c), _crop_intrinsics(K, float(w), float(h))
            return item
        path = Path(where)
        annos = read_json(path, "RealEstate10K annotations file")
        try:
            files = []
            for a in sorted(annos, key=lambda a: a["idx"]):
                f = Path(a["filepath"])
                if not f.is_absolute():  # relative to the sequence folder, else to the dataset root
                    f = path.parent / f if (path.parent / f).exists() else self.root / f
                files.append(f)
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"RealEstate10K annotations file '{path}' is malformed (entries need idx and filepath; {exc})", path) from None
        picked = pick_views(len(files), self.num_views, self.window, rng)
        return _frames(torch.stack([load_image(files[i]) for i in picked]), self.video_size, self.context_size,
                       jitter=self.color_jitter, rng=rng)
