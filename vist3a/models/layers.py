"""Transformer building blocks shared by the DINOv2 encoder, the VGGT aggregator and the camera head.

Parameter names (norm1, attn.qkv, attn.q_norm, ls1, mlp.fc1, ...) follow the released AnySplat
checkpoint so its state_dict loads with strict=True.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerScale(nn.Module):
    """Per-channel residual scale (`gamma`), as in DINOv2/VGGT."""

    def __init__(self, dim: int, init: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim_in: int, hidden: int, dim_out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim_out or dim_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RotaryEmbedding2D(nn.Module):
    """2-D RoPE of VGGT: the first half of each head rotates with the row index, the second half with
    the column index; frequencies base**(-2i/d) with d = head_dim / 2."""

    def __init__(self, base: float = 100.0):
        super().__init__()
        self.base = float(base)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _tables(self, dim: int, length: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dim, length, device, dtype)
        if key not in self._cache:
            inv_freq = 1.0 / (self.base ** (torch.arange(0, dim, 2, device=device).float() / dim))
            angles = torch.outer(torch.arange(length, device=device, dtype=inv_freq.dtype), inv_freq)
            angles = torch.cat((angles, angles), dim=-1).to(dtype)
            self._cache[key] = (angles.cos().to(dtype), angles.sin().to(dtype))
        return self._cache[key]

    @staticmethod
    def _rotate_1d(x: torch.Tensor, pos: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        cos = F.embedding(pos, cos)[:, None]
        sin = F.embedding(pos, sin)[:, None]
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def forward(self, x: torch.Tensor, pos: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """x: [B, heads, N, head_dim]; pos: [B, N, 2] integer (row, col).

        `length` (> every position) lets callers that know the grid skip reading `pos.max()`, a host
        sync per call on a GPU; the table rows do not depend on it."""
        dim = x.shape[-1] // 2
        cos, sin = self._tables(dim, length if length is not None else int(pos.max()) + 1, x.device, x.dtype)
        rows, cols = x.chunk(2, dim=-1)
        return torch.cat(
            (self._rotate_1d(rows, pos[..., 0], cos, sin), self._rotate_1d(cols, pos[..., 1], cos, sin)), dim=-1
        )


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, rope: RotaryEmbedding2D | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None, pos_len: int | None = None) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and pos is not None:
            q, k = self.rope(q, pos, pos_len), self.rope(k, pos, pos_len)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm transformer block with layer scale: x + ls1(attn(norm1 x)); x + ls2(mlp(norm2 x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-5,
        qk_norm: bool = False,
        rope: RotaryEmbedding2D | None = None,
        layer_scale_init: float = 0.01,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, rope=rope)
        self.ls1 = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale_init)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None, pos_len: int | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos=pos, pos_len=pos_len))
        return x + self.ls2(self.mlp(self.norm2(x)))
