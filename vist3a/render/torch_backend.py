"""Pure-torch 3D Gaussian rasteriser: differentiable, runs on any device (CPU included).

It follows 3DGS / gsplat "classic" mode so previews made without CUDA look like gsplat renders:
EWA splatting (J W Sigma W^T J^T + 0.3 I), SH colours + 0.5 clamped at 0, front-to-back compositing
in depth order with alpha = min(0.99, o * exp(-0.5 d^T Sigma^-1 d)), alphas below 1/255 skipped and a
pixel finished once its transmittance would drop below 1e-4.

Work and memory follow the actual coverage: each Gaussian is paired only with the pixels in the
bounding box of its alpha >= 1/255 ellipse (opacity-aware, like gsplat), the pairs are composited
front to back in batches of about PAIR_BUDGET carrying each pixel's transmittance, and under
autograd every batch is checkpointed so only its inputs are kept for the backward pass.

What makes it fast on a decoder-sized scene (millions of overlapping splats): a Gaussian whose box
holds only finished pixels is skipped whole (a summed-area table of the finished mask answers that
per box), so after the front layers only a fraction of the scene is paired with pixels at all, and
SH colours are evaluated per batch for the survivors only; the projection runs on contiguous
[N] rows of the R S factor instead of batched 3x3 matrices.
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


def _pixel_pairs(
    boxes: torch.Tensor, rows: torch.Tensor, done: torch.Tensor, width: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(position in ``rows``, pixel) pairs of those Gaussians inside their boxes, skipping finished
    pixels, in row order (front to back: ``rows`` ascend and rows are depth-sorted)."""
    x0, y0, w, h = boxes.index_select(1, rows)
    counts = w * h
    owner = torch.repeat_interleave(torch.arange(rows.shape[0], dtype=counts.dtype, device=rows.device), counts)
    starts = torch.cumsum(counts, 0, dtype=counts.dtype) - counts
    local = torch.arange(owner.shape[0], dtype=counts.dtype, device=rows.device) - _take(starts, owner)
    span_x = _take(w, owner)
    row = torch.div(local, span_x, rounding_mode="floor")
    pix = local.add_(_take(y0 * width + x0, owner)).add_(row * (width - span_x))  # (y0 + row) W + x0 + col
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
    geo: torch.Tensor,  # [7, V]: x, y, conic a, b, c, opacity, depth of the Gaussians in front of the camera
    ranked: torch.Tensor,  # [M] column of geo of each depth-sorted row
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

    Returns (sum of w * [features, depth] [H*W, D+1], new transmittance, new done mask).
    Colours (SH included) are evaluated here, only for the Gaussians that reach a live pixel.
    Per pixel this is the sequential 3DGS loop, vectorised as a segmented cumulative sum of
    log(1 - alpha) over pixel-sorted pairs (float64 keeps the segment differences exact).
    """
    with torch.no_grad():
        owner, pix = _pixel_pairs(boxes, rows, done, width)
    g = geo.index_select(1, _take(ranked, rows))
    gi = _take(src, rows)
    feat = _take(colors, gi)
    if sh_degree is not None:
        feat = sh_to_rgb(feat, _take(means, gi) - campos, sh_degree)
    py = torch.div(pix, width, rounding_mode="floor")
    px = (pix - py * width).to(g.dtype) + 0.5
    py = py.to(g.dtype) + 0.5
    mx, my, ca, cb, cc, op = (_take(g[k], owner) for k in range(6))
    dx, dy = px - mx, py - my
    sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
    alpha = (op * torch.exp(-sigma)).clamp_max(ALPHA_MAX)
    with torch.no_grad():  # skipped pairs leave T alone; the rest sorted by pixel, front to back
        hit = ((alpha >= ALPHA_MIN) & (sigma >= 0)).nonzero().squeeze(1)
        order = torch.sort(_take(pix, hit), stable=True).indices
        hit = _take(hit, order)
    pix, alpha = _take(pix, hit), _take(alpha, hit).double()
    f = _take(torch.cat([feat, g[6:].T], dim=1), _take(owner, hit))  # features..., depth

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
    acc = torch.zeros(trans.shape[0], f.shape[1], dtype=f.dtype, device=f.device)
    acc = acc.index_add(0, pix, weights[:, None] * f)
    kept = torch.zeros_like(trans).index_add(0, pix, torch.where(include, log_keep, torch.zeros_like(log_keep)))
    done = done.clone()
    done[_take(pix, (~include).nonzero().squeeze(1))] = True
    return acc, trans * torch.exp(kept), done


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
) -> torch.Tensor:
    """One camera -> [H, W, D + 2]: accumulated features, accumulated depth, final transmittance."""
    dtype, device = means.dtype, means.device
    d = colors.shape[1] if sh_degree is None else 3
    depth_all = means @ viewmat[2, :3] + viewmat[2, 3]
    valid = (depth_all > near) & (depth_all < far) & (opacities >= ALPHA_MIN)
    idx = valid.nonzero().squeeze(1)
    if factor is not None:
        every = idx.shape[0] == means.shape[0]  # usual for a framed scene: skip the copies
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
        ex, ey = reach * a.clamp_min(0).sqrt() + 0.5, reach * c.clamp_min(0).sqrt() + 0.5
        lo_x, hi_x = mx - ex - 0.5, mx + ex - 0.5
        lo_y, hi_y = my - ey - 0.5, my + ey - 0.5
        seen = (det > 0) & torch.isfinite(lo_x + hi_x + lo_y + hi_y)
        seen &= (hi_x >= 0) & (lo_x <= width - 1) & (hi_y >= 0) & (lo_y <= height - 1)
        sel = seen.nonzero().squeeze(1)
        sel = _take(sel, torch.sort(_take(depth, sel), stable=True).indices)
        # int32 pixel arithmetic halves the memory traffic of the (pixel, Gaussian) pairs
        x0 = _take(lo_x, sel).clamp_(0, width - 1).floor_().int()
        x1 = _take(hi_x, sel).clamp_(0, width - 1).ceil_().int()
        y0 = _take(lo_y, sel).clamp_(0, height - 1).floor_().int()
        y1 = _take(hi_y, sel).clamp_(0, height - 1).ceil_().int()
        boxes = torch.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1])  # [4, M]: x0, y0, w, h

    campos = -viewmat[:3, :3].T @ viewmat[:3, 3]
    inv = 1.0 / torch.where(det > 0, det, torch.ones_like(det))  # culled ones (det <= 0) never gathered
    # [7, visible] rows: x, y, conic (a, b, c), opacity, depth; gathered per batch, in depth order
    geo = torch.stack([mx, my, c * inv, -b * inv, a * inv, opac, depth])
    src = sel if every else _take(idx, sel)

    n_pix = width * height
    acc = torch.zeros(n_pix, d + 1, dtype=dtype, device=device)
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
    return torch.cat([acc, trans.to(dtype)[:, None]], dim=1).reshape(height, width, d + 2)


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
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render C views -> (features [C,H,W,D] without background, alpha [C,H,W,1], sum w*z [C,H,W,1]).

    Inputs are assumed checked by :func:`vist3a.render.rasterize`, which adds the background and
    turns the accumulated depth into expected depth.
    """
    factor = _factor_rows(quats, scales) if covars is None else None
    views = [
        _render_view(means, covars, factor, opacities, colors, sh_degree, viewmats[i], Ks[i], width, height, near, far)
        for i in range(viewmats.shape[0])
    ]
    out = torch.stack(views)
    return out[..., :-2], 1.0 - out[..., -1:], out[..., -2:-1]
