"""Camera maths of VGGT/AnySplat: pose encoding -> extrinsics/intrinsics, depth unprojection."""

from __future__ import annotations

import torch


def quat_xyzw_to_matrix(q: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Rotation matrix of an (unnormalised) XYZW quaternion; [..., 4] -> [..., 3, 3]."""
    i, j, k, r = q.unbind(-1)
    two_s = 2.0 / ((q * q).sum(-1) + eps)
    m = torch.stack(
        (
            1 - two_s * (j * j + k * k),
            two_s * (i * j - k * r),
            two_s * (i * k + j * r),
            two_s * (i * j + k * r),
            1 - two_s * (i * i + k * k),
            two_s * (j * k - i * r),
            two_s * (i * k - j * r),
            two_s * (j * k + i * r),
            1 - two_s * (i * i + j * j),
        ),
        -1,
    )
    return m.reshape(q.shape[:-1] + (3, 3))


def pose_encoding_to_extri_intri(pose: torch.Tensor, image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, S, 9] -> world-to-camera [B, S, 3, 4] and pixel intrinsics [B, S, 3, 3] (principal point at
    the image centre; the 1e-3 in the focal length is the official formula's)."""
    H, W = image_hw
    R = quat_xyzw_to_matrix(pose[..., 3:7])
    extrinsics = torch.cat((R, pose[..., :3, None]), dim=-1)
    fy = (H / 2.0) / (torch.tan(pose[..., 7] / 2.0) + 1e-3)
    fx = (W / 2.0) / (torch.tan(pose[..., 8] / 2.0) + 1e-3)
    K = torch.zeros(pose.shape[:2] + (3, 3), dtype=pose.dtype, device=pose.device)
    K[..., 0, 0] = fx
    K[..., 1, 1] = fy
    K[..., 0, 2] = W / 2
    K[..., 1, 2] = H / 2
    K[..., 2, 2] = 1.0
    return extrinsics, K


def invert_rigid(w2c: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of [N, 3|4, 4] rigid transforms -> [N, 4, 4]."""
    R, t = w2c[:, :3, :3], w2c[:, :3, 3:]
    Rt = R.transpose(1, 2)
    out = torch.eye(4, dtype=R.dtype, device=R.device).repeat(len(R), 1, 1)
    out[:, :3, :3] = Rt
    out[:, :3, 3:] = -torch.bmm(Rt, t)
    return out


def unproject_depth(depth: torch.Tensor, w2c: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """depth [B, S, H, W(, 1)] + cameras -> world points [B, S, H, W, 3]."""
    if depth.dim() == 5:
        depth = depth.squeeze(-1)
    B, S, H, W = depth.shape
    depth = depth.flatten(0, 1)
    K = K.flatten(0, 1)
    w2c = w2c.flatten(0, 1)
    u = torch.arange(W, device=depth.device)[None, None, :].expand(B * S, H, W)
    v = torch.arange(H, device=depth.device)[None, :, None].expand(B * S, H, W)
    x = (u - K[:, 0, 2, None, None]) * depth / K[:, 0, 0, None, None]
    y = (v - K[:, 1, 2, None, None]) * depth / K[:, 1, 1, None, None]
    cam = torch.stack((x, y, depth, torch.ones_like(depth)), dim=-1).flatten(1, 2)
    world = torch.bmm(invert_rigid(w2c), cam.transpose(1, 2)).transpose(1, 2)[:, :, :3]
    return world.reshape(B, S, H, W, 3)
