"""Raw head channels -> Gaussians (AnySplat's pose-free "unified" adapter) and voxel fusion."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .geometry import quat_xyzw_to_matrix


def sh_mask(degree: int) -> torch.Tensor:
    """Per-coefficient damping of the predicted SH: 1 for the DC term, 0.1 * 0.25**l for degree l."""
    mask = torch.ones((degree + 1) ** 2)
    for l in range(1, degree + 1):
        mask[l * l : (l + 1) ** 2] = 0.1 * 0.25**l
    return mask


def opacity_from_density(density: torch.Tensor, mapping=(0.0, 0.0, 1), step: int = 0) -> torch.Tensor:
    """AnySplat's opacity mapping of sigmoid(density); identity for the released config (x = 0)."""
    initial, final, warm_up = mapping
    x = initial + min(step / warm_up, 1) * (final - initial)
    e = 2**x
    return 0.5 * (1 - (1 - density) ** e + density ** (1 / e))


@dataclass
class RawGaussians:
    """AnySplat's Gaussian fields, batched [B, N, ...]; rotations are XYZW quaternions."""

    means: torch.Tensor
    covariances: torch.Tensor
    harmonics: torch.Tensor  # [B, N, 3, d_sh]
    opacities: torch.Tensor
    scales: torch.Tensor
    rotations: torch.Tensor


def covariance(scales: torch.Tensor, rotations_xyzw: torch.Tensor) -> torch.Tensor:
    R = quat_xyzw_to_matrix(rotations_xyzw, eps=1e-8)
    S = scales.diag_embed()
    return R @ S @ S.transpose(-1, -2) @ R.transpose(-1, -2)


def adapt_gaussians(means, features, opacities, sh_degree: int, eps: float = 1e-8) -> RawGaussians:
    """features [..., 7 + 3*d_sh] = scale(3) | rotation(4) | SH (xyz-major) -> Gaussians."""
    d_sh = (sh_degree + 1) ** 2
    scales, rotations, sh = features.split((3, 4, 3 * d_sh), dim=-1)
    scales = (0.001 * F.softplus(scales)).clamp_max(0.3)
    rotations = rotations / (rotations.norm(dim=-1, keepdim=True) + eps)
    sh = sh.reshape(*sh.shape[:-1], 3, d_sh) * sh_mask(sh_degree).to(sh)
    return RawGaussians(
        means=means.float(),
        covariances=covariance(scales, rotations).float(),
        harmonics=sh.float(),
        opacities=opacities.float(),
        scales=scales.float(),
        rotations=rotations.float(),
    )


def voxelize(features: torch.Tensor, points: torch.Tensor, conf: torch.Tensor, voxel_size: float):
    """Merge per-pixel Gaussians that fall in the same voxel (softmax-of-confidence weights).

    features [V, C, H, W], points [V, 3, H, W], conf [V, H, W] -> (points [M, 3], features [M, C]).
    Voxels are ordered lexicographically by integer voxel coordinate (torch.unique), like the
    official torch_scatter implementation; this uses only torch ops.
    """
    pts = points.permute(0, 2, 3, 1).reshape(-1, 3)
    feats = features.permute(0, 2, 3, 1).reshape(pts.shape[0], -1)
    conf = conf.reshape(-1)
    ids = (pts / voxel_size).round().int()
    _, inverse = torch.unique(ids, dim=0, return_inverse=True)
    M = int(inverse.max()) + 1
    conf_max = torch.full((M,), float("-inf"), dtype=conf.dtype, device=conf.device)
    conf_max = conf_max.scatter_reduce(0, inverse, conf, reduce="amax", include_self=True)
    w = torch.exp(conf - conf_max[inverse])
    total = torch.zeros(M, dtype=w.dtype, device=w.device).index_add_(0, inverse, w)
    w = (w / (total[inverse] + 1e-6)).unsqueeze(-1)
    out_pts = torch.zeros(M, 3, dtype=pts.dtype, device=pts.device).index_add_(0, inverse, pts * w)
    out_feats = torch.zeros(M, feats.shape[1], dtype=feats.dtype, device=feats.device).index_add_(
        0, inverse, feats * w
    )
    return out_pts, out_feats
