"""DPT heads on the aggregator's intermediate tokens: depth (+conf) and raw Gaussian parameters."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AnySplatConfig


def _uv_grid(cols: int, rows: int, aspect: float, dtype, device) -> torch.Tensor:
    """Normalised (u, v) per cell, spanning the image diagonal to unit length; [rows, cols, 2]."""
    diag = (aspect**2 + 1.0) ** 0.5
    span_x, span_y = aspect / diag, 1.0 / diag
    xs = torch.linspace(-span_x * (cols - 1) / cols, span_x * (cols - 1) / cols, cols, dtype=dtype, device=device)
    ys = torch.linspace(-span_y * (rows - 1) / rows, span_y * (rows - 1) / rows, rows, dtype=dtype, device=device)
    u, v = torch.meshgrid(xs, ys, indexing="xy")
    return torch.stack((u, v), dim=-1)


def _sincos(dim: int, coords: torch.Tensor, omega0: float = 100.0) -> torch.Tensor:
    omega = torch.arange(dim // 2, dtype=torch.float64, device=coords.device) / (dim / 2.0)
    omega = 1.0 / omega0**omega
    angles = torch.outer(coords.reshape(-1).double(), omega)
    return torch.cat((angles.sin(), angles.cos()), dim=1).float()


def add_uv_embedding(x: torch.Tensor, image_w: int, image_h: int, ratio: float = 0.1) -> torch.Tensor:
    """Add 0.1 x a sin/cos embedding of each cell's (u, v) position to a [N, C, h, w] feature map."""
    N, C, rows, cols = x.shape
    uv = _uv_grid(cols, rows, image_w / image_h, x.dtype, x.device).reshape(-1, 2)
    emb = torch.cat((_sincos(C // 2, uv[:, 0]), _sincos(C // 2, uv[:, 1])), dim=-1).view(rows, cols, C)
    return x + (emb * ratio).permute(2, 0, 1)[None].to(x.dtype)


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(int(s) for s in size), mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    """relu -> conv -> relu -> conv, plus the skip. The official unit applies an in-place ReLU to its
    input first, so the skip carries relu(x), not x; we reproduce that."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FusionBlock(nn.Module):
    def __init__(self, features: int, has_residual: bool = True):
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.has_residual = has_residual
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        if self.has_residual:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = size if size is not None else (x.shape[-2] * 2, x.shape[-1] * 2)
        return self.out_conv(_resize(x, size))


class Scratch(nn.Module):
    def __init__(self, in_channels, features: int):
        super().__init__()
        for i, ch in enumerate(in_channels, start=1):
            setattr(self, f"layer{i}_rn", nn.Conv2d(ch, features, 3, padding=1, bias=False))
        self.refinenet1 = FusionBlock(features)
        self.refinenet2 = FusionBlock(features)
        self.refinenet3 = FusionBlock(features)
        self.refinenet4 = FusionBlock(features, has_residual=False)
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)


class DPTHead(nn.Module):
    """Module `encoder.depth_head` (and the base of the Gaussian head)."""

    def __init__(self, cfg: AnySplatConfig, output_dim: int, hidden: int):
        super().__init__()
        dim_in, oc, features = cfg.head_dim_in, cfg.dpt_out_channels, cfg.dpt_features
        self.patch_size = cfg.patch_size
        self.layer_idx = list(cfg.intermediate_layer_idx)
        self.frames_chunk = cfg.dpt_frames_chunk
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, c, 1) for c in oc)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(oc[3], oc[3], 3, stride=2, padding=1),
            ]
        )
        self.scratch = Scratch(oc, features)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, output_dim, 1)
        )

    def _features(self, aggregated, patch_start: int, frames: slice, H: int, W: int) -> torch.Tensor:
        """Multi-scale fusion of the 4 intermediate layers for a chunk of frames -> [N, F/2, h*4, w*4]."""
        rows, cols = H // self.patch_size, W // self.patch_size
        pyramid = []
        for i, layer in enumerate(self.layer_idx):
            tokens = aggregated[i][:, frames, patch_start:]
            x = self.norm(tokens.reshape(-1, tokens.shape[-2], tokens.shape[-1]))
            x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], rows, cols)
            x = add_uv_embedding(self.projects[i](x), W, H)
            pyramid.append(self.resize_layers[i](x))
        s = self.scratch
        l1, l2, l3, l4 = (getattr(s, f"layer{i}_rn")(p) for i, p in enumerate(pyramid, start=1))
        out = s.refinenet4(l4, size=l3.shape[2:])
        out = s.refinenet3(out, l3, size=l2.shape[2:])
        out = s.refinenet2(out, l2, size=l1.shape[2:])
        out = s.refinenet1(out, l1)
        return s.output_conv1(out)

    def _chunks(self, S: int):
        step = self.frames_chunk if self.frames_chunk and self.frames_chunk < S else S
        return [slice(i, min(i + step, S)) for i in range(0, S, step)]

    def forward(self, aggregated, images: torch.Tensor, patch_start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, S, 3, H, W] (only the shape is used) -> depth [B, S, H, W, 1], conf [B, S, H, W]."""
        B, S, _, H, W = images.shape
        rows, cols = H // self.patch_size, W // self.patch_size
        depths, confs = [], []
        for frames in self._chunks(S):
            x = self._features(aggregated, patch_start, frames, H, W)
            x = _resize(x, (rows * self.patch_size, cols * self.patch_size))
            x = self.scratch.output_conv2(add_uv_embedding(x, W, H))
            x = x.permute(0, 2, 3, 1)
            n = frames.stop - frames.start
            depths.append(torch.exp(x[..., :-1]).reshape(B, n, *x.shape[1:3], -1))
            confs.append((1 + torch.exp(x[..., -1])).reshape(B, n, *x.shape[1:3]))
        return torch.cat(depths, dim=1), torch.cat(confs, dim=1)


class GaussianParamHead(DPTHead):
    """Module `encoder.gaussian_param_head`: DPT features + a 7x7 conv of the RGB context -> raw
    per-pixel Gaussian parameters (density, scale, rotation, SH) and a confidence channel."""

    def __init__(self, cfg: AnySplatConfig):
        merge = cfg.dpt_features // 2
        super().__init__(cfg, output_dim=cfg.raw_gs_dim + 1, hidden=merge)
        self.input_merger = nn.Sequential(nn.Conv2d(3, merge, 7, 1, 3), nn.ReLU())

    def forward(self, aggregated, images: torch.Tensor, patch_start: int) -> torch.Tensor:
        """images [B, S, 3, H, W] in [0, 1] -> raw [B, S, raw_gs_dim + 1, H, W]."""
        B, S, _, H, W = images.shape
        outs = []
        for frames in self._chunks(S):
            x = self._features(aggregated, patch_start, frames, H, W)
            x = _resize(x, (H, W)) + self.input_merger(images[:, frames].flatten(0, 1))
            x = self.scratch.output_conv2(add_uv_embedding(x, W, H))
            outs.append(x.reshape(B, frames.stop - frames.start, *x.shape[1:]))
        return torch.cat(outs, dim=1)
