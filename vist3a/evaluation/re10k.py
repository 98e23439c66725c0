"""RealEstate10K test scenes in the layout the official NVS benchmark reads, and a synthetic set in that layout.

Layout (official `evaluation/datasets/re10k_nvs.py`):

    DATA/<sequence>/annotations.json   [{"idx", "filepath" (relative to DATA), "intrinsics" 3x3, "extrinsics" 4x4}, ...]
    DATA/<sequence>/<images>            whatever `filepath` points to

plus the official test list (`re10k_test.txt`, one sequence per line) and index map (`re10k_indexmap.json`:
sequence -> the 12 frame positions used, in order: the first 8 are context, the last 4 targets, read in
reverse). Users point to the official files; none are shipped here.

Image preparation reproduces the official `rescale_image_w_crop` exactly, including its quirk: it reads
PIL's (width, height) into variables named (H, W), so the first resize swaps the aspect ratio (a 640x360
frame becomes 512x910) before the centre crop to `load_size`; then it is resized to `context_size`
(both Lanczos). The paper's numbers come from these images, so we keep it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import VIST3AError

LANCZOS = Image.Resampling.LANCZOS


def official_resize_crop(image: Image.Image, load_size: int, context_size: int) -> tuple[Image.Image, Image.Image]:
    """-> (context image `context_size`^2, VAE image `load_size`^2), as the official loader makes them."""
    a, b = (float(v) for v in image.size)  # (width, height), named (H, W) officially
    scale = load_size / min(a, b)
    first = image.resize((round(b * scale), round(a * scale)), resample=LANCZOS)  # (new_w, new_h) = swapped
    w, h = first.size
    x0, y0 = max((w - load_size) // 2, 0), max((h - load_size) // 2, 0)
    first = first.crop((x0, y0, x0 + load_size, y0 + load_size))
    a, b = (float(v) for v in first.size)
    scale = context_size / min(a, b)
    second = first.resize((round(b * scale), round(a * scale)), resample=LANCZOS)
    return second, first


def to_tensor01(image: Image.Image) -> torch.Tensor:
    """PIL -> [3, H, W] float32 in [0, 1] (as torchvision's ToTensor for 8-bit RGB)."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255)


@dataclass
class Views:
    context: torch.Tensor  # [N, 3, c, c] context-size images in [0, 1] (the decoder's RGB input)
    vae: torch.Tensor  # [N, 3, l, l] load-size images in [0, 1] (what the Wan VAE encodes)


class Re10KTest:
    """The official test scenes: `sequences` in order, `views(seq)` loads the 12 indexed frames."""

    def __init__(self, root: str | Path, index: str | Path, seq_file: str | Path | None = None,
                 load_size: int = 512, context_size: int = 448):
        self.root = Path(root)
        if not self.root.is_dir():
            raise VIST3AError(f"NVS data folder {self.root} does not exist; give the RealEstate10K test folder "
                              "(one sub-folder per sequence with annotations.json)")
        index = Path(index)
        if not index.is_file():
            raise VIST3AError(f"index map {index} does not exist; pass --index PATH to the official "
                              "evaluation/datasets/re10k_indexmap.json")
        try:
            self.index = {k: [int(i) for i in v] for k, v in json.loads(index.read_text()).items()}
        except (ValueError, TypeError, AttributeError) as exc:
            raise VIST3AError(f"index map {index} is not a JSON object of sequence -> list of frame positions ({exc})") from None
        if seq_file is not None:
            seq_path = Path(seq_file)
            if not seq_path.is_file():
                raise VIST3AError(f"sequence list {seq_path} does not exist; pass --seq-file PATH to the official "
                                  "evaluation/datasets/re10k_test.txt, or leave it out to use every sequence of the index")
            self.sequences = [s.strip() for s in seq_path.read_text().splitlines() if s.strip()]
        else:
            self.sequences = sorted(self.index)
        # The official re10k_test.txt lists 1719 sequences, its re10k_indexmap.json 1715. The official loop looks
        # every sequence it loaded up in the index map (nvs_eval.py:176), so its numbers can only come from indexed
        # sequences: the others are skipped here, and the CLI says so in one line.
        self.skipped = [s for s in self.sequences if s not in self.index]
        self.sequences = [s for s in self.sequences if s in self.index]
        if not self.sequences:
            raise VIST3AError(f"none of the listed sequences has an entry in the index map {index}; "
                              "check that --seq-file and --index belong together")
        missing = [s for s in self.sequences if not (self.root / s / "annotations.json").is_file()]
        if missing:
            raise VIST3AError(f"{len(missing)} of {len(self.sequences)} test sequences are missing from {self.root} "
                              f"(first: {missing[0]}/annotations.json); download the full test split or pass a shorter --seq-file")
        self.load_size, self.context_size = load_size, context_size

    def __len__(self) -> int:
        return len(self.sequences)

    def views(self, seq: str) -> Views:
        annos = json.loads((self.root / seq / "annotations.json").read_text())
        ids = self.index[seq]
        if max(ids) >= len(annos):
            raise VIST3AError(f"{seq}: the index map asks for frame {max(ids)} but annotations.json has {len(annos)}")
        ctx, vae = [], []
        for i in ids:
            path = self.root / annos[i]["filepath"]
            try:
                img = Image.open(path)
                img.load()
            except (OSError, ValueError) as exc:
                raise VIST3AError(f"{seq}: cannot read {path} ({exc})") from None
            c, v = official_resize_crop(img.convert("RGB"), self.load_size, self.context_size)
            ctx.append(to_tensor01(c))
            vae.append(to_tensor01(v))
        return Views(torch.stack(ctx), torch.stack(vae))


def write_synthetic_re10k(root: str | Path, sequences: int = 2, frames: int = 14, width: int = 80, height: int = 45,
                          seed: int = 0) -> tuple[Path, Path, Path]:
    """A small dataset in the official layout: smooth coloured frames of a camera panning over a textured
    plane, PNGs + annotations.json per sequence, an index map and a sequence list.
    Returns (data folder, index map, sequence list)."""
    root = Path(root)
    g = np.random.default_rng(seed)
    index, names = {}, []
    for s in range(sequences):
        name = f"{s:016x}"
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        texture = g.random((4, 4, 3))
        big = np.asarray(Image.fromarray((texture * 255).astype(np.uint8)).resize((width * 3, height * 2), Image.Resampling.BICUBIC))
        annos = []
        for f in range(frames):
            x0 = int(f * width / frames)
            frame = big[:height, x0:x0 + width]
            rel = f"{name}/{f:05d}.png"
            Image.fromarray(frame).save(root / rel)
            ext = np.eye(4)
            ext[0, 3] = f * 0.05
            K = [[0.9 * width, 0, width / 2], [0, 0.9 * width, height / 2], [0, 0, 1]]
            annos.append({"idx": f, "filepath": rel, "intrinsics": K, "extrinsics": ext.tolist()})
        (folder / "annotations.json").write_text(json.dumps(annos))
        index[name] = [int(i) for i in g.permutation(frames)[:12]]
        names.append(name)
    index_path, seq_path = root / "index.json", root / "test.txt"
    index_path.write_text(json.dumps(index))
    seq_path.write_text("\n".join(names) + "\n")
    return root, index_path, seq_path
