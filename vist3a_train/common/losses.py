"""Distillation losses of the stitched fine-tune (stitch.py): L1 between the stitched decoder on Wan
latents and the frozen AnySplat on the same frames.

Terms and default weights are the official ones (``TaskLossAnySplat``): depth 1, depth gradient
0.005, Gaussian means / covariances / SH / opacities / rotations 1 and scales 10, Gaussian-head
confidence 0.01, depth confidence 0.01, raw Gaussian-head features ("anchor feats") 0.1, predicted
context poses (camera-to-world and normalised intrinsics) 1 each, and the camera head's per-iteration
pose encodings 1 (averaged over iterations). Gaussians are compared per pixel (no voxelisation).

The depth-gradient term is a multi-scale (4 scales, stride 2^s) L1 on the x/y finite differences of
the depth error, clamped at 100 and normalised per pixel. (The official code indexes a 5-D
``[B, S, H, W, 1]`` depth as if it were ``[B, H, W, C]``, i.e. takes differences along views and rows;
this implementation uses rows and columns of each view, which is what the term is meant to measure.)
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

__all__ = ["LOSS_TERMS", "gradient_loss_multiscale", "distillation_losses"]

LOSS_TERMS = (
    "depth", "depth_grad", "gaussian_means", "gaussian_covariances", "gaussian_harmonics", "gaussian_opacities",
    "gaussian_scales", "gaussian_rotations", "conf", "depth_conf", "anchor_feats", "pose_extrinsics",
    "pose_intrinsics", "pose_enc_list",
)


def gradient_loss_multiscale(pred: torch.Tensor, target: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """pred/target [B, S, H, W(, 1)] -> scalar."""
    if pred.dim() == 5:
        pred, target = pred[..., 0], target[..., 0]
    diff = (pred - target).flatten(0, 1)  # [N, H, W]
    total = diff.new_zeros(())
    for s in range(scales):
        d = diff[:, :: 2**s, :: 2**s]
        gx = (d[:, :, 1:] - d[:, :, :-1]).abs().clamp(max=100)
        gy = (d[:, 1:, :] - d[:, :-1, :]).abs().clamp(max=100)
        total = total + (gx.sum() + gy.sum()) / d.numel()
    return total / scales


def _cat(gs, field: str) -> torch.Tensor:
    return torch.cat([getattr(g, field).reshape(-1) for g in gs])


def distillation_losses(student, teacher, weights: Mapping[str, float], raw_gs_dim: int) -> dict[str, torch.Tensor]:
    """Weighted terms (``loss/<name>``) and their sum (``loss``). ``student``/``teacher`` are SplatOutputs."""
    unknown = [k for k in weights if k not in LOSS_TERMS]
    if unknown:
        raise ValueError(f"stitch.loss_weights has unknown term '{unknown[0]}' (known: {', '.join(LOSS_TERMS)})")
    s, t = student, teacher
    terms = {
        "depth": lambda: F.l1_loss(s.depth, t.depth),
        "depth_grad": lambda: gradient_loss_multiscale(s.depth, t.depth),
        "conf": lambda: F.l1_loss(s.raw_gs[:, :, raw_gs_dim], t.raw_gs[:, :, raw_gs_dim]),
        "depth_conf": lambda: F.l1_loss(s.depth_conf, t.depth_conf),
        "anchor_feats": lambda: F.l1_loss(s.raw_gs[:, :, :raw_gs_dim], t.raw_gs[:, :, :raw_gs_dim]),
        "pose_extrinsics": lambda: F.l1_loss(s.extrinsics, t.extrinsics),
        "pose_intrinsics": lambda: F.l1_loss(s.intrinsics, t.intrinsics),
        "pose_enc_list": lambda: sum(F.l1_loss(a, b) for a, b in zip(s.pose_enc_list, t.pose_enc_list)) / len(s.pose_enc_list),
    }
    for field in ("means", "covariances", "harmonics", "opacities", "scales", "rotations"):
        terms[f"gaussian_{field}"] = (lambda f=field: F.l1_loss(_cat(s.gaussians, f), _cat(t.gaussians, f)))
    out = {}
    total = None
    for name in LOSS_TERMS:
        w = float(weights.get(name, 0.0))
        if w == 0.0:
            continue
        value = terms[name]().float() * w
        out[f"loss/{name}"] = value
        total = value if total is None else total + value
    out["loss"] = total
    return out
