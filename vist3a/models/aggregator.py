"""VGGT aggregator: DINO patch tokens -> 24 alternating frame/global attention blocks."""

from __future__ import annotations

import torch
from torch import nn

from .config import AnySplatConfig
from .dino import DinoEncoder
from .layers import Block, RotaryEmbedding2D

# ImageNet statistics as the released model applies them: its constructor casts the aggregator to
# bf16, which rounds these (non-persistent) buffers for good, so 0.485 is really 0.484375, etc.
IMAGENET_MEAN = tuple(torch.tensor((0.485, 0.456, 0.406)).bfloat16().float().tolist())
IMAGENET_STD = tuple(torch.tensor((0.229, 0.224, 0.225)).bfloat16().float().tolist())


def _first_and_rest(token: torch.Tensor, B: int, S: int) -> torch.Tensor:
    """[1, 2, X, C] learned tokens -> [B*S, X, C]: slot 0 for the first frame, slot 1 for the others."""
    first = token[:, :1].expand(B, 1, *token.shape[2:])
    rest = token[:, 1:].expand(B, S - 1, *token.shape[2:])
    return torch.cat((first, rest), dim=1).reshape(B * S, *token.shape[2:])


def patch_positions(B: int, rows: int, cols: int, special: int, device) -> torch.Tensor:
    """RoPE positions: (row+1, col+1) for patches, (0, 0) for the camera/register tokens."""
    grid = torch.cartesian_prod(torch.arange(rows, device=device), torch.arange(cols, device=device)) + 1
    pos = torch.cat((torch.zeros(special, 2, dtype=grid.dtype, device=device), grid), dim=0)
    return pos.unsqueeze(0).expand(B, -1, -1).clone()


class Aggregator(nn.Module):
    """Module `encoder.aggregator`."""

    def __init__(self, cfg: AnySplatConfig, first_dino_block: int = 0):
        super().__init__()
        dim = cfg.embed_dim
        self.cfg = cfg
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, cfg.num_register_tokens, dim))
        self.patch_embed = DinoEncoder(cfg, first_block=first_dino_block)
        self.rope = RotaryEmbedding2D(cfg.rope_freq)

        def make_block():
            return Block(dim, cfg.num_heads, cfg.mlp_ratio, qk_norm=True, rope=self.rope)

        self.frame_blocks = nn.ModuleList(make_block() for _ in range(cfg.aa_depth))
        self.global_blocks = nn.ModuleList(make_block() for _ in range(cfg.aa_depth))
        self.patch_start_idx = 1 + cfg.num_register_tokens

    def normalize_images(self, images01: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(IMAGENET_MEAN, dtype=images01.dtype, device=images01.device).view(1, 1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=images01.dtype, device=images01.device).view(1, 1, 3, 1, 1)
        return (images01 - mean) / std

    def forward(self, patch_tokens: torch.Tensor, B: int, S: int, grid: tuple[int, int]) -> list[torch.Tensor]:
        """[B*S, P, C] normed DINO patch tokens -> [B, S, 5+P, 2C] outputs of the intermediate layers."""
        rows, cols = grid
        C = patch_tokens.shape[-1]
        dtype = patch_tokens.dtype
        tokens = torch.cat(
            (
                _first_and_rest(self.camera_token, B, S).to(dtype),
                _first_and_rest(self.register_token, B, S).to(dtype),
                patch_tokens,
            ),
            dim=1,
        )
        P = tokens.shape[1]
        pos = patch_positions(B * S, rows, cols, self.patch_start_idx, tokens.device)
        pos_global = pos.reshape(B, S * P, 2)
        pos_len = max(rows, cols) + 1  # positions run 0..max(rows, cols); known without a device sync
        wanted = set(self.cfg.intermediate_layer_idx) | {self.cfg.aa_depth - 1}
        outputs = []
        for i, (frame_block, global_block) in enumerate(zip(self.frame_blocks, self.global_blocks)):
            tokens = frame_block(tokens.reshape(B * S, P, C), pos=pos, pos_len=pos_len)
            frame_out = tokens.reshape(B, S, P, C)
            tokens = global_block(tokens.reshape(B, S * P, C), pos=pos_global, pos_len=pos_len)
            if i in wanted:
                outputs.append(torch.cat((frame_out, tokens.reshape(B, S, P, C)), dim=-1))
        return outputs
