"""Pure-torch 3D Gaussian rasteriser: differentiable, runs on any device (CPU included).

It follows 3DGS / gsplat "classic" mode so previews made without CUDA look like gsplat renders:
EWA splatting (J W Sigma W^T J^T + 0.3 I), SH colours + 0.5 clamped at 0, front-to-back compositing
in depth order with alpha = min(0.99, o * exp(-0.5 d^T Sigma^-1 d)), alphas below 1/255 skipped and a
pixel finished once its transmittance would drop below 1e-4. Gaussians are culled by gsplat's rules:
centre z outside [near, far], opacity below 1/255, or both projected radii <= ``radius_clip``, with the
radius per axis ceil(min(3.33, sqrt(2 ln(255 o))) * sqrt(variance of the blurred 2D covariance)).

Work and memory follow the actual coverage: each Gaussian is paired only with the pixels in the
bounding box of its alpha >= 1/255 ellipse (opacity-aware, like gsplat), the pairs are composited
front to back in batches of about PAIR_BUDGET carrying each pixel's transmittance, and under
autograd every batch is checkpointed so only its inputs are kept for the backward pass.

What makes it fast on a decoder-sized scene (millions of overlapping splats): a Gaussian whose box
holds only finished pixels is skipped whole (a summed-area table of the finished mask answers that
per box), so after the front layers only a fraction of the scene is paired with pixels at all, and
SH colours are evaluated per batch for the survivors only; the projection runs on contiguous
[N] rows of the R S factor instead of batched 3x3 matrices; each box row is cut to the ellipse's
span on it (a third of the box pairs); the depth order comes from a radix sort of the depths' bit
patterns; per-pair work gathers whole rows and accumulates with int64 indices along dim 1 (torch's
fast paths on the CPU). bench/render_torch.py records the figures.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

__all__ = [
    "ALPHA_MAX",
    "sh_basis",
    "sh_to_rgb",
    "quat_to_rotmat",
    "covariance_from_quat_scale",
    "project_gaussians",
    "rasterize_torch",
]

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99  # original 3DGS; gsplat's CUDA kernels use 0.999, visible only on near-opaque splats
T_MIN = 1e-4
EPS_2D = 0.3
MAX_EXTENT = 3.33  # gsplat 1.5's cap on the opacity-aware extent (in standard deviations) of a projected radius
PAIR_BUDGET = 1 << 20  # (pixel, Gaussian) pairs composited at once: bounds the memory
WINDOW = 16  # rows culled together, in batch budgets of their (uncut) boxes
PAIRS_PER_PIXEL = 4  # smaller batches on small images: finished pixels are found (and skipped) sooner

# Real SH constants as in 3DGS (degrees 0-3) and plenoxels/gsplat (degree 4).
C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
    -0.4570457994644658, 1.445305721320277, -0.5900435899266435,
)
C4 = (
    2.5033429417967046, -1.7701307697799304, 0.9461746957575601, -0.6690465435572892,
    0.10578554691520431, -0.6690465435572892, 0.47308734787878004, -1.7701307697799304,
    0.6258357354491761,
)


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """Real SH basis [..., (degree+1)^2] at unit directions [..., 3] (3DGS sign convention)."""
    if not 0 <= degree <= 4:
        raise ValueError(f"SH degree must be 0..4, got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [
            C2[0] * xy,
            C2[1] * yz,
            C2[2] * (2 * zz - xx - yy),
            C2[3] * xz,
            C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            C3[0] * y * (3 * xx - yy),
            C3[1] * xy * z,
            C3[2] * y * (4 * zz - xx - yy),
            C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            C3[4] * x * (4 * zz - xx - yy),
            C3[5] * z * (xx - yy),
            C3[6] * x * (xx - 3 * yy),
        ]
    if degree >= 4:
        out += [
            C4[0] * xy * (xx - yy),
            C4[1] * yz * (3 * xx - yy),
            C4[2] * xy * (7 * zz - 1),
            C4[3] * yz * (7 * zz - 3),
            C4[4] * (zz * (35 * zz - 30) + 3),
            C4[5] * xz * (7 * zz - 3),
            C4[6] * (xx - yy) * (7 * zz - 1),
            C4[7] * xz * (xx - 3 * yy),
            C4[8] * (xx * (xx - 3 * yy) - yy * (3 * xx - yy)),
        ]
    return torch.stack(out, dim=-1)


def sh_to_rgb(sh: torch.Tensor, dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Colours [N, 3] = clamp_min(SH . basis + 0.5, 0) for sh [N, 3, K] (K >= (degree+1)^2)."""
    k = (degree + 1) ** 2
    basis = sh_basis(degree, F.normalize(dirs, dim=-1))  # [N, k]
    return (torch.einsum("nck,nk->nc", sh[:, :, :k], basis) + 0.5).clamp_min(0.0)


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] from wxyz quaternions [..., 4] (normalised here)."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


def covariance_from_quat_scale(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """3D covariances [N, 3, 3] = R S S^T R^T from wxyz quaternions and linear scales."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project_gaussians(
    means: torch.Tensor,  # [N, 3] world
    covars: torch.Tensor,  # [N, 3, 3] world
    viewmat: torch.Tensor,  # [4, 4] world-to-camera, OpenCV axes
    K: torch.Tensor,  # [3, 3] pixels
    width: int,
    height: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EWA projection: pixel means [N, 2], 2D covariances [N, 2, 2] (with the 0.3 low-pass), depths [N].

    Like 3DGS/gsplat, the Jacobian is evaluated at the mean clamped to 1.3x the field of view so
    Gaussians far outside the image do not blow up.
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    mc = means @ R.T + t
    cov_c = R @ covars @ R.T
    tx, ty, tz = mc.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    jx = tz * torch.clamp(tx / tz, min=-lim_xn, max=lim_xp)
    jy = tz * torch.clamp(ty / tz, min=-lim_yn, max=lim_yp)
    zero = torch.zeros_like(tz)
    J = torch.stack(
        [fx / tz, zero, -fx * jx / (tz * tz), zero, fy / tz, -fy * jy / (tz * tz)], dim=-1
    ).reshape(-1, 2, 3)
    cov2d = J @ cov_c @ J.transpose(-1, -2)
    cov2d = cov2d + EPS_2D * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)
    means2d = torch.stack([fx * tx / tz + cx, fy * ty / tz + cy], dim=-1)
    return means2d, cov2d, tz


def _factor_rows(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """[9, N]: entry 3 j + k is (R S)_jk, the covariance factor laid out as contiguous rows
    (the projection then runs on [N] vectors instead of many tiny 3x3 matrices)."""
    w, x, y, z = F.normalize(quats, dim=-1).T.contiguous()
    sx, sy, sz = scales.T.contiguous()
    return torch.stack([
        (1 - 2 * (y * y + z * z)) * sx, 2 * (x * y - w * z) * sy, 2 * (x * z + w * y) * sz,
        2 * (x * y + w * z) * sx, (1 - 2 * (x * x + z * z)) * sy, 2 * (y * z - w * x) * sz,
        2 * (x * z - w * y) * sx, 2 * (y * z + w * x) * sy, (1 - 2 * (x * x + y * y)) * sz,
    ])


def _project_factored(
    means: torch.Tensor,  # [N, 3] world
    factor: torch.Tensor,  # [9, N] rows of M with covariance M M^T (R S), see _factor_rows
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
) -> Tuple[torch.Tensor, ...]:
    """:func:`project_gaussians` from a covariance factor, on [N] vectors instead of 3x3 matmuls.

    The 2D covariance is T T^T with T = J W M; row r of J W is (f_r / z)(W_r - (j_r / z) W_2), one
    3-vector per Gaussian. Returns pixel x, y, a, b, c, depth [N] each with [[a, b], [b, c]] the 2D
    covariance including the 0.3 low-pass.
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    tx, ty, tz = torch.addmm(t[:, None], R, means.T)  # [3, N], contiguous rows
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    rz = 1.0 / tz
    ux, uy = tx * rz, ty * rz
    mx, my = fx * ux + cx, fy * uy + cy
    ux = torch.clamp(ux, min=-lim_xn, max=lim_xp)
    uy = torch.clamp(uy, min=-lim_yn, max=lim_yp)
    fxr, fyr = fx * rz, fy * rz
    p = (R @ factor.reshape(3, -1)).reshape(3, 3, -1)  # W M: rows [3, N] of the camera-space factor
    t0 = p[0] * fxr - p[2] * (ux * fxr)  # rows of T = J W M, [3, N] each
    t1 = p[1] * fyr - p[2] * (uy * fyr)
    a = (t0 * t0).sum(0) + EPS_2D
    b = (t0 * t1).sum(0)
    c = (t1 * t1).sum(0) + EPS_2D
    return mx, my, a, b, c, tz


def _take(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """t[index] along dim 0; index_select is much faster than advanced indexing on the CPU."""
    return t.index_select(0, index)


def _expand(counts: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """For ``counts[i]`` items per owner i: (owner, position within its owner) of every item."""
    owner = torch.repeat_interleave(torch.arange(counts.shape[0], dtype=counts.dtype, device=counts.device), counts)
    starts = torch.cumsum(counts, 0, dtype=counts.dtype) - counts
    local = torch.arange(owner.shape[0], dtype=counts.dtype, device=counts.device) - _take(starts, owner)
    return owner, local


def _pixel_pairs(
    g: torch.Tensor, boxes: torch.Tensor, rows: torch.Tensor, done: torch.Tensor, width: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(position in ``rows``, pixel) pairs of those Gaussians with the pixels their alpha >= 1/255
    ellipse may reach, skipping finished pixels, in row order (front to back: ``rows`` ascend and
    rows are depth-sorted). ``g`` holds the [7, B] geometry rows of ``rows`` (see _composite_batch).

    Each box row is cut to the ellipse's span on that row (solving sigma(dx) = log(255 o) for the
    row's dy, in float64 and widened by a bound on the float rounding of the exact test that
    follows): about a third of a box's pixels fail the alpha test, and every pair costs the same.
    """
    x0, y0, w, h = boxes.index_select(1, rows)
    line_owner, line = _expand(h)  # one entry per (Gaussian, box row)
    mx, my, ca, cb, cc, op = g[:, :6].double().unbind(1)
    s = torch.log(op * 255.0)  # sigma <= s  <=>  alpha >= 1/255
    det = (ca * cc - cb * cb).clamp_min(1e-300)
    half_x, half_y = (2.0 * s.clamp_min(0) * cc / det).sqrt() + 1, (2.0 * s.clamp_min(0) * ca / det).sqrt() + 1
    terms = 0.5 * ca * half_x * half_x + 0.5 * cc * half_y * half_y + cb.abs() * half_x * half_y
    s = s + 1e-6 * (1.0 + terms)  # float32 sigma is exact to a few ulp of its largest term
    y = _take(y0, line_owner) + line
    dy = (y.double() + 0.5) - _take(my, line_owner)
    a_l, b_dy = _take(ca, line_owner), _take(cb, line_owner) * dy
    # 0.5 a dx^2 + (b dy) dx + (0.5 c dy^2 - s) <= 0, a > 0
    disc = b_dy * b_dy - a_l * (_take(cc, line_owner) * dy * dy - 2.0 * _take(s, line_owner))
    root = disc.clamp_min(0).sqrt()
    centre = _take(mx, line_owner) - 0.5 - b_dy / a_l  # pixel x whose centre is at the vertex
    lo = torch.maximum(torch.ceil(centre - root / a_l), _take(x0, line_owner).double())
    hi = torch.minimum(torch.floor(centre + root / a_l), _take(x0 + w - 1, line_owner).double())
    span = torch.where(disc >= 0, (hi - lo + 1).clamp_min(0), torch.zeros_like(hi)).to(h.dtype)
    start = (y * width).to(lo.dtype).add_(lo).to(h.dtype)  # pixel of each span's first entry
    which, col = _expand(span)
    pix = _take(start, which).add_(col)
    owner = _take(line_owner, which)
    live = (~_take(done, pix)).nonzero().squeeze(1)
    return _take(owner, live), _take(pix, live)


def _live_in_boxes(box: torch.Tensor, done: torch.Tensor, width: int) -> torch.Tensor:
    """Unfinished pixels inside each x0, y0, w, h box, from a summed-area table of the live mask:
    a Gaussian whose box holds only finished pixels can change nothing, so it is skipped whole."""
    live = (~done).reshape(-1, width).to(torch.int32)
    sat = F.pad(live.cumsum(0, dtype=torch.int32).cumsum(1, dtype=torch.int32), (1, 0, 1, 0)).reshape(-1)
    w1 = width + 1
    x0, y0, w, h = box
    lo, hi = y0 * w1, (y0 + h) * w1
    x1 = x0 + w
    return _take(sat, hi + x1) - _take(sat, lo + x1) - _take(sat, hi + x0) + _take(sat, lo + x0)


def _composite_batch(
    geo: torch.Tensor,  # [V, 7]: x, y, conic a, b, c, opacity, depth of the Gaussians in front of the camera
    ranked: torch.Tensor,  # [M] row of geo of each depth-sorted Gaussian
    boxes: torch.Tensor,  # [4, M] int32: x0, y0, w, h pixel boxes of the alpha >= 1/255 ellipses
    rows: torch.Tensor,  # [B] ascending (depth-sorted) rows to composite now
    src: torch.Tensor,  # [M] index of each row in the caller's Gaussians
    colors: torch.Tensor,  # [N, D] features or SH [N, 3, K]
    means: torch.Tensor,  # [N, 3] (view directions of SH)
    campos: torch.Tensor,  # [3]
    sh_degree: Optional[int],
    trans: torch.Tensor,  # [H*W] float64 transmittance so far
    done: torch.Tensor,  # [H*W] bool, pixel terminated (3DGS: T would fall below 1e-4)
    width: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composite the depth-sorted Gaussians ``rows`` behind what is already accumulated.

    Returns (sum of w * [features, depth] [D+1, H*W], new transmittance, new done mask).
    Colours (SH included) are evaluated here, only for the Gaussians that reach a live pixel.
    Per pixel this is the sequential 3DGS loop, vectorised as a segmented cumulative sum of
    log(1 - alpha) over pixel-sorted pairs (float64 keeps the segment differences exact).
    """
    g = _take(geo, _take(ranked, rows))  # [B, 7]: gathering whole rows beats 7 separate gathers
    with torch.no_grad():
        owner, pix = _pixel_pairs(g.detach(), boxes, rows, done, width)
    gi = _take(src, rows)
    feat = _take(colors, gi)
    if sh_degree is not None:
        feat = sh_to_rgb(feat, _take(means, gi) - campos, sh_degree)
    py = torch.div(pix, width, rounding_mode="floor")
    px = (pix - py * width).to(g.dtype) + 0.5
    py = py.to(g.dtype) + 0.5
    mx, my, ca, cb, cc, op = _take(g[:, :6], owner).unbind(1)
    dx, dy = px - mx, py - my
    sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
    alpha = (op * torch.exp(-sigma)).clamp_max(ALPHA_MAX)
    with torch.no_grad():  # skipped pairs leave T alone; the rest sorted by pixel, front to back
        hit = ((alpha >= ALPHA_MIN) & (sigma >= 0)).nonzero().squeeze(1)
        order = torch.sort(_take(pix, hit), stable=True).indices
        hit = _take(hit, order)
    pix, alpha = _take(pix, hit), _take(alpha, hit).double()
    f = _take(torch.cat([feat, g[:, 6:]], dim=1), _take(owner, hit))  # features..., depth

    log_keep = torch.log1p(-alpha)
    inclusive = torch.cumsum(log_keep, 0)
    with torch.no_grad():
        first = torch.ones_like(pix, dtype=torch.bool)
        first[1:] = pix[1:] != pix[:-1]
        segment_start = _take(first.nonzero().squeeze(1), torch.cumsum(first, 0) - 1)
    log_after = inclusive - _take(inclusive - log_keep, segment_start)
    t0 = _take(trans, pix)
    after = t0 * torch.exp(log_after)
    before = t0 * torch.exp(log_after - log_keep)
    include = after >= T_MIN  # a prefix of each pixel's list: `after` only decreases
    weights = torch.where(include, alpha * before, torch.zeros_like(alpha)).to(f.dtype)
    # index_add along dim 1 is ~3x faster than along 0, and 14x slower with int32 indices
    pix = pix.long()
    acc = torch.zeros(f.shape[1], trans.shape[0], dtype=f.dtype, device=f.device)
    acc = acc.index_add(1, pix, (weights[:, None] * f).T.contiguous())
    kept = torch.zeros_like(trans).index_add(0, pix, torch.where(include, log_keep, torch.zeros_like(log_keep)))
    done = done.clone()
    done[_take(pix, (~include).nonzero().squeeze(1))] = True
    return acc, trans * torch.exp(kept), done


def _depth_keys(depth: torch.Tensor) -> torch.Tensor:
    """Integer keys that sort like the (positive) depths: the IEEE bit patterns of non-negative
    floats are ordered like their values, and torch sorts integers by radix, ~15x faster on the CPU
    than a float sort of millions of Gaussians. Negative depths (only below a negative ``near``)
    fall back to the float values."""
    if depth.dtype not in (torch.float32, torch.float64) or bool((depth < 0).any()):
        return depth
    return (depth + 0.0).view(torch.int32 if depth.dtype == torch.float32 else torch.int64)  # -0.0 -> +0.0


def _batches(counts: torch.Tensor, budget: int) -> List[Tuple[int, int]]:
    """Split rows into consecutive ranges of about ``budget`` pixel pairs (one row at least)."""
    cum = torch.cumsum(counts, 0)
    ranges, start, n = [], 0, counts.shape[0]
    while start < n:
        base = int(cum[start - 1]) if start else 0
        end = max(int(torch.searchsorted(cum, base + budget, right=True)), start + 1)
        ranges.append((start, end))
        start = end
    return ranges


def _render_view(
    means: torch.Tensor,
    covars: Optional[torch.Tensor],
    factor: Optional[torch.Tensor],
    opacities: torch.Tensor,
    colors: torch.Tensor,
    sh_degree: Optional[int],
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    near: float,
    far: float,
    radius_clip: float = 0.0,
) -> torch.Tensor:
    """One camera -> [H, W, D + 2]: accumulated features, accumulated depth, final transmittance."""
    dtype, device = means.dtype, means.device
    d = colors.shape[1] if sh_degree is None else 3
    depth_all = means @ viewmat[2, :3] + viewmat[2, 3]
    # gsplat culls z < near and z > far: a centre exactly on a plane is kept
    valid = (depth_all >= near) & (depth_all <= far) & (opacities >= ALPHA_MIN)
    idx = valid.nonzero().squeeze(1)
    if factor is not None:
        # Project every Gaussian when most are valid (a framed scene; only the faint ones fall out)
        # and mask the rest below: copying millions of rows costs more than projecting a few extra.
        # Not under autograd, where an invalid one (depth 0) could put 0 * inf into the gradients.
        graph = torch.is_grad_enabled() and any(t.requires_grad for t in (means, factor, opacities))
        every = idx.shape[0] == means.shape[0] or (not graph and 2 * idx.shape[0] >= means.shape[0])
        m_vis, f_vis = (means, factor) if every else (_take(means, idx), factor.index_select(1, idx))
        mx, my, a, b, c, depth = _project_factored(m_vis, f_vis, viewmat, K, width, height)
    else:
        every = False
        means2d, cov2d, depth = project_gaussians(means[idx], covars[idx], viewmat, K, width, height)
        mx, my = means2d.T
        a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    det = a * c - b * b
    opac = opacities if every else _take(opacities, idx)

    with torch.no_grad():  # pixel boxes of the alpha >= 1/255 ellipses (exact extent, 0.5 px margin)
        reach = torch.sqrt(2.0 * torch.log(opac * 255.0).clamp_min(0.0))
        sd_x, sd_y = a.clamp_min(0).sqrt(), c.clamp_min(0).sqrt()
        ex, ey = reach * sd_x + 0.5, reach * sd_y + 0.5
        lo_x, hi_x = mx - ex - 0.5, mx + ex - 0.5
        lo_y, hi_y = my - ey - 0.5, my + ey - 0.5
        seen = (det > 0) & torch.isfinite(lo_x + hi_x + lo_y + hi_y)
        if 0 <= radius_clip < 1:  # the 0.3 blur makes sd >= 0.55 px: radii are 0 only where reach is
            seen &= reach > 0
        elif radius_clip >= 1:  # gsplat's rule: dropped when both whole-pixel radii are <= radius_clip
            extent = reach.clamp_max(MAX_EXTENT)
            seen &= ((extent * sd_x).ceil_() > radius_clip) | ((extent * sd_y).ceil_() > radius_clip)
        if every and idx.shape[0] != means.shape[0]:
            seen &= valid
        seen &= (hi_x >= 0) & (lo_x <= width - 1) & (hi_y >= 0) & (lo_y <= height - 1)
        sel = seen.nonzero().squeeze(1)
        sel = _take(sel, torch.sort(_depth_keys(_take(depth, sel)), stable=True).indices)
        # int32 pixel arithmetic halves the memory traffic of the (pixel, Gaussian) pairs
        x0 = _take(lo_x, sel).clamp_(0, width - 1).floor_().int()
        x1 = _take(hi_x, sel).clamp_(0, width - 1).ceil_().int()
        y0 = _take(lo_y, sel).clamp_(0, height - 1).floor_().int()
        y1 = _take(hi_y, sel).clamp_(0, height - 1).ceil_().int()
        boxes = torch.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1])  # [4, M]: x0, y0, w, h

    campos = -viewmat[:3, :3].T @ viewmat[:3, 3]
    inv = 1.0 / torch.where(det > 0, det, torch.ones_like(det))  # culled ones (det <= 0) never gathered
    # [7, visible] rows: x, y, conic (a, b, c), opacity, depth; gathered per batch, in depth order
    geo = torch.stack([mx, my, c * inv, -b * inv, a * inv, opac, depth], dim=1)
    src = sel if every else _take(idx, sel)

    n_pix = width * height
    acc = torch.zeros(d + 1, n_pix, dtype=dtype, device=device)
    trans = torch.ones(n_pix, dtype=torch.float64, device=device)
    done = torch.zeros(n_pix, dtype=torch.bool, device=device)
    use_checkpoint = torch.is_grad_enabled() and (geo.requires_grad or colors.requires_grad or means.requires_grad)
    counts = boxes[2] * boxes[3]
    cum = torch.cumsum(counts, 0)
    budget = max(1, min(PAIR_BUDGET, PAIRS_PER_PIXEL * n_pix))
    pos, total = 0, boxes.shape[1]
    while pos < total and not bool(done.all()):
        # A window of rows, culled whole where their boxes hold only finished pixels (finished
        # pixels stay finished, so a culled Gaussian could never contribute later either).
        base = int(cum[pos - 1]) if pos else 0
        end = max(int(torch.searchsorted(cum, base + WINDOW * budget, right=True)), pos + 1)
        with torch.no_grad():
            rows = pos + (_live_in_boxes(boxes[:, pos:end], done, width) > 0).nonzero().squeeze(1)
        pos = end
        if rows.numel() == 0:
            continue
        for i, (r0, r1) in enumerate(_batches(_take(counts, rows), budget)):
            batch = rows[r0:r1]
            if i:
                with torch.no_grad():
                    batch = _take(batch, (_live_in_boxes(boxes.index_select(1, batch), done, width) > 0).nonzero().squeeze(1))
                if batch.numel() == 0:
                    continue
            args = (geo, sel, boxes, batch, src, colors, means, campos, sh_degree, trans, done, width)
            if use_checkpoint:
                part, trans, done = checkpoint(_composite_batch, *args, use_reentrant=False)
            else:
                part, trans, done = _composite_batch(*args)
            acc = acc + part
            if bool(done.all()):
                break
    return torch.cat([acc, trans.to(dtype)[None]]).T.reshape(height, width, d + 2)


def rasterize_torch(
    means: torch.Tensor,  # [N, 3]
    quats: Optional[torch.Tensor],  # [N, 4] wxyz (ignored when covars is given)
    scales: Optional[torch.Tensor],  # [N, 3] linear
    opacities: torch.Tensor,  # [N]
    colors: torch.Tensor,  # [N, D] or SH [N, 3, K] when sh_degree is set
    viewmats: torch.Tensor,  # [C, 4, 4] world-to-camera, OpenCV axes
    Ks: torch.Tensor,  # [C, 3, 3] pixels
    width: int,
    height: int,
    sh_degree: Optional[int] = None,
    near: float = 0.01,
    far: float = 1e10,
    covars: Optional[torch.Tensor] = None,  # [N, 3, 3]
    radius_clip: float = 0.0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render C views -> (features [C,H,W,D] without background, alpha [C,H,W,1], sum w*z [C,H,W,1]).

    Inputs are assumed checked by :func:`vist3a.render.rasterize`, which adds the background and
    turns the accumulated depth into expected depth.
    """
    factor = _factor_rows(quats, scales) if covars is None else None
    views = [
        _render_view(means, covars, factor, opacities, colors, sh_degree, viewmats[i], Ks[i], width, height, near, far,
                     radius_clip)
        for i in range(viewmats.shape[0])
    ]
    out = torch.stack(views)
    return out[..., :-2], 1.0 - out[..., -1:], out[..., -2:-1]
