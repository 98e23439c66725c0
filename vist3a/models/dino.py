"""DINOv2-L patch encoder (with registers) as VGGT/AnySplat use it, cuttable at any block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AnySplatConfig
from .layers import Block


class PatchConv(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class DinoEncoder(nn.Module):
    """Module `encoder.aggregator.patch_embed`.

    `first_block` > 0 builds the stitched variant: the 14x14 patch conv and blocks before the cut are
    absent (their keys too), and tokens enter through `forward_tokens`.
    """

    def __init__(self, cfg: AnySplatConfig, first_block: int = 0):
        super().__init__()
        dim = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.num_register_tokens = cfg.num_register_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.pos_embed_grid**2 + 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused at inference, kept for strict loading
        if first_block == 0:
            self.patch_embed = PatchConv(cfg.patch_size, dim)
        self.blocks = nn.ModuleList(
            Block(dim, cfg.num_heads, cfg.mlp_ratio, norm_eps=1e-6, layer_scale_init=1.0)
            for _ in range(cfg.dino_depth - first_block)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def interpolated_pos_embed(self, num_patches: int, size: tuple[int, int]) -> torch.Tensor:
        """Bicubic, antialiased resize of the 37x37 grid to `size` (computed in fp32).

        `size` is passed through as the official call sites do: (rows, cols) on the RGB path but
        (width, height) on the stitched path; both agree for square inputs.
        """
        grid = self.pos_embed.shape[1] - 1
        if num_patches == grid and size[0] == size[1]:
            return self.pos_embed
        pos = self.pos_embed.float()
        side = int(round(grid**0.5))
        dim = pos.shape[-1]
        patch_pos = pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=size, mode="bicubic", antialias=True)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((pos[:, :1], patch_pos), dim=1).to(self.pos_embed.dtype)

    def forward_tokens(self, patch_tokens: torch.Tensor, pos_size: tuple[int, int]) -> torch.Tensor:
        """[N, P, C] patch tokens -> normed [N, 1 + registers + P, C] after the remaining blocks."""
        x = torch.cat((self.cls_token.expand(patch_tokens.shape[0], -1, -1), patch_tokens), dim=1)
        x = x + self.interpolated_pos_embed(patch_tokens.shape[1], pos_size).to(x.dtype)
        x = torch.cat((x[:, :1], self.register_tokens.expand(x.shape[0], -1, -1).to(x.dtype), x[:, 1:]), dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_images(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] normalised images -> normed tokens (RGB entry, full model only)."""
        if not hasattr(self, "patch_embed"):
            raise RuntimeError("this encoder was cut for stitching and has no image patch embedding")
        H, W = images.shape[-2:]
        tokens = self.patch_embed(images)
        return self.forward_tokens(tokens, (H // self.patch_size, W // self.patch_size))
