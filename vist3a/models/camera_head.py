"""VGGT camera head: 4 refinement steps of an adaLN-modulated trunk over the camera tokens.

Pose encoding per frame (9 values): translation T(3) | quaternion XYZW(4) | field of view (h, w) in
radians; FoV goes through a ReLU, the rest is linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AnySplatConfig
from .layers import Block, Mlp

POSE_DIM = 9


class CameraHead(nn.Module):
    """Module `encoder.camera_head`."""

    def __init__(self, cfg: AnySplatConfig):
        super().__init__()
        dim = cfg.head_dim_in
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_DIM))
        self.trunk = nn.Sequential(
            *(Block(dim, cfg.camera_num_heads, cfg.mlp_ratio) for _ in range(cfg.camera_trunk_depth))
        )
        self.token_norm = nn.LayerNorm(dim)
        self.trunk_norm = nn.LayerNorm(dim)
        self.embed_pose = nn.Linear(POSE_DIM, dim)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        self.adaln_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim, dim // 2, POSE_DIM)

    def forward(self, aggregated: list[torch.Tensor], iterations: int = 4) -> list[torch.Tensor]:
        """Returns the activated pose encoding [B, S, 9] after each iteration."""
        tokens = self.token_norm(aggregated[-1][:, :, 0])
        B, S, _ = tokens.shape
        normed = self.adaln_norm(tokens)
        pose = None
        out = []
        for _ in range(iterations):
            source = self.empty_pose_tokens.expand(B, S, -1) if pose is None else pose.detach()
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(source)).chunk(3, dim=-1)
            x = gate * (normed * (1 + scale) + shift) + tokens
            delta = self.pose_branch(self.trunk_norm(self.trunk(x)))
            pose = delta if pose is None else pose + delta
            out.append(torch.cat((pose[..., :7], F.relu(pose[..., 7:])), dim=-1))
        return out
