"""Synthetic multi-view clips: random 3D Gaussian scenes rendered along a known camera path.

Each scene (deterministic in ``seed`` and its index) is a few coloured Gaussian blobs on a floor;
a camera arcs around them looking at the centre, and the clip is rendered with VIST3A's own
differentiable rasteriser at the video size (what the Wan VAE sees) and resized to the context size
(what AnySplat sees), exactly as the real loaders resize photographs. Items carry the true cameras
(camera-to-world, OpenCV axes; intrinsics normalised by image size) and a caption made from the
scene's content, so the same dataset feeds all three training steps without any files.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from vist3a.render import look_at, rasterize, world_to_camera

from ..distributed import generator
from .base import color_jitter, to_signed

__all__ = ["SyntheticMultiView"]

_COLOURS = {
    "red": (0.85, 0.15, 0.12), "green": (0.2, 0.7, 0.25), "blue": (0.15, 0.3, 0.85), "yellow": (0.9, 0.8, 0.2),
    "white": (0.92, 0.92, 0.9), "orange": (0.95, 0.5, 0.1), "purple": (0.55, 0.25, 0.7), "teal": (0.1, 0.6, 0.6),
}
_SHAPES = ("sphere", "pillar", "disc")
_SH_C0 = 0.28209479177387814


class SyntheticMultiView:
    def __init__(self, num_scenes: int = 64, num_views: int = 13, video_size: int = 512, context_size: int = 448,
                 gaussians_per_object: int = 96, floor_gaussians: int = 160, seed: int = 0, arc_degrees=(40.0, 120.0),
                 fov_degrees: float = 55.0, cache: bool = True, color_jitter=None):
        if (num_views - 1) % 4:
            raise ValueError(f"synthetic num_views={num_views}: Wan clips need 4k+1 frames (5, 9, 13, 17, 21)")
        self.num_scenes, self.num_views = int(num_scenes), int(num_views)
        self.video_size, self.context_size = int(video_size), int(context_size)
        self.per_object, self.floor = int(gaussians_per_object), int(floor_gaussians)
        self.seed, self.arc, self.fov = int(seed), tuple(arc_degrees), float(fov_degrees)
        self.cache = {} if cache else None
        self.color_jitter = None if color_jitter is None else tuple(float(v) for v in color_jitter)
        self.root = None

    def __len__(self) -> int:
        return self.num_scenes

    def describe(self) -> str:
        return f"synthetic, {self.num_scenes} scenes"

    # ----------------------------------------------------------------------------------- scenes

    def scene(self, index: int) -> dict:
        g = generator(self.seed, "synthetic-scene", index)
        rnd = random.Random(int(torch.randint(0, 2**31, (1,), generator=g)))
        means, scales, colours, opac, words = [], [], [], [], []
        n_obj = rnd.randint(1, 3)
        for _ in range(n_obj):
            name = rnd.choice(sorted(_COLOURS))
            shape = rnd.choice(_SHAPES)
            centre = torch.tensor([rnd.uniform(-0.6, 0.6), rnd.uniform(-0.1, 0.25), rnd.uniform(-0.6, 0.6)])
            extent = {"sphere": (0.3, 0.3, 0.3), "pillar": (0.15, 0.5, 0.15), "disc": (0.4, 0.08, 0.4)}[shape]
            offs = torch.randn(self.per_object, 3, generator=g) * torch.tensor(extent) * 0.5
            means.append(centre + offs)
            scales.append(torch.exp(torch.empty(self.per_object, 3).uniform_(math.log(0.03), math.log(0.09), generator=g)))
            base = torch.tensor(_COLOURS[name])
            colours.append((base + 0.08 * torch.randn(self.per_object, 3, generator=g)).clamp(0, 1))
            opac.append(torch.empty(self.per_object).uniform_(0.6, 0.95, generator=g))
            words.append(f"{'an' if name[0] in 'aeiou' else 'a'} {name} {shape}")
        floor_y = 0.45  # OpenCV axes: +y points down, so the floor lies below the objects
        fxz = torch.empty(self.floor, 2).uniform_(-1.4, 1.4, generator=g)
        means.append(torch.stack((fxz[:, 0], torch.full((self.floor,), floor_y), fxz[:, 1]), dim=1))
        scales.append(torch.tensor([0.12, 0.01, 0.12]).expand(self.floor, 3) * torch.empty(self.floor, 1).uniform_(0.7, 1.3, generator=g))
        shade = torch.empty(self.floor, 1).uniform_(0.35, 0.55, generator=g)
        colours.append(shade.expand(self.floor, 3).clone())
        opac.append(torch.full((self.floor,), 0.9))
        means, scales, colours, opac = map(torch.cat, (means, scales, colours, opac))
        quats = F.normalize(torch.randn(means.shape[0], 4, generator=g), dim=1)  # wxyz
        quats[-self.floor:] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # flat floor tiles lie in the xz-plane
        sh = ((colours - 0.5) / _SH_C0).unsqueeze(-1)  # degree-0 SH so that colour = sh * C0 + 0.5
        caption = (", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else words[0]) + " on a grey floor"
        # camera path: an arc around the centre at a random height, always looking at the scene
        radius = rnd.uniform(2.4, 3.0)
        elev = math.radians(rnd.uniform(10.0, 30.0))
        arc = math.radians(rnd.uniform(*self.arc))
        az0 = rnd.uniform(0, 2 * math.pi)
        c2w = []
        for i in range(self.num_views):
            az = az0 + arc * i / max(1, self.num_views - 1)
            eye = (radius * math.cos(elev) * math.sin(az), -radius * math.sin(elev), -radius * math.cos(elev) * math.cos(az))
            c2w.append(look_at(eye, (0.0, 0.1, 0.0)))
        f = 0.5 / math.tan(math.radians(self.fov) / 2)
        K = torch.tensor([[f, 0.0, 0.5], [0.0, f, 0.5], [0.0, 0.0, 1.0]]).expand(self.num_views, 3, 3).clone()
        return {"means": means, "quats": quats, "scales": scales, "opacities": opac, "sh": sh,
                "c2w": torch.stack(c2w), "K": K, "caption": caption}

    def render(self, index: int) -> dict:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        s = self.scene(index)
        size = self.video_size
        Ks = s["K"].clone()
        Ks[:, :2] *= size
        with torch.no_grad():
            rgb, _, depth = rasterize(s["means"], s["quats"], s["scales"], s["opacities"], s["sh"],
                                      world_to_camera(s["c2w"]), Ks, size, size, background=(0.75, 0.8, 0.88),
                                      backend="torch")
        frames = rgb.permute(0, 3, 1, 2).clamp(0, 1)  # [T, 3, H, W]
        ctx = F.interpolate(frames, size=(self.context_size, self.context_size), mode="bilinear",
                            align_corners=False, antialias=True)
        out = {"video": to_signed(frames), "context": to_signed(ctx), "c2w": s["c2w"], "K": s["K"],
               "caption": s["caption"]}
        if self.cache is not None:
            self.cache[index] = out
        return out

    def load(self, index: int, rng: random.Random) -> dict:
        r = self.render(index)
        video, context = r["video"], r["context"]
        if self.color_jitter is not None:  # as the real loaders: jitter the video frames, then resize
            frames = color_jitter((video.permute(1, 0, 2, 3) + 1) / 2, self.color_jitter, rng)
            ctx = F.interpolate(frames, size=(self.context_size, self.context_size), mode="bilinear",
                                align_corners=False, antialias=True)
            video, context = to_signed(frames), to_signed(ctx)
        return {"video": video, "context": context, "c2w": r["c2w"], "K": r["K"], "caption": r["caption"]}
