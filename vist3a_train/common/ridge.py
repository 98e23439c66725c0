"""Streaming ridge regression of the Conv3d stitching layer (find_layer.py).

The stitching conv ``Conv3d(16 -> C, k=(5,3,3), s=(1,2,2), p=(2,1,1), padding_mode="replicate")`` on the
temporally upsampled latent is linear in its weights: every output voxel is ``x . W + b`` where
``x`` is the flattened ``16 x 5 x 3 x 3 = 720`` patch of the padded input under the kernel
(:func:`unfold_conv3d`). So the least-squares conv is a ridge regression, solved from accumulated
statistics without ever holding the design matrix.

As in the official search (find_layer_for_stitching.py:36, ``unfold3d``), the fit pads with *zeros*, while
the MSE it reports runs the fitted conv itself, which pads by replicating (:36 vs :353): with
``separate_eval`` the replicate-padded rows are accumulated as a second design matrix (``XeX``, ``XeY``,
``sxe``) for that MSE. Statistics of the fit:

    XtX += X^T X, XtY += X^T Y, sx += sum(x), sy += sum(y), syy += sum(y * y), n += rows   (float64)

per batch (and all-reduced across ranks), then ``W = (XtX + ridge I)^-1 XtY`` and ``b = mean(y - xW)``
(the official two-step fit: ridge on W without intercept, bias from the mean residual). The training
MSE of that solution follows from the statistics of the evaluation rows ``e`` (the fit's own rows without
``separate_eval``):
``sum||y - eW - b||^2 = syy - 2 tr(W^T XeY) + tr(W^T XeX W) - 2 b.sy + 2 b.(sxe W) + n ||b||^2``.
One design matrix serves every candidate layer (same latents), so XtX is shared and only XtY, sy, syy
are per layer.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from vist3a.models import upsample_latent  # the decoder's own, so the fit sees what it will see

from . import distributed as D

__all__ = ["upsample_latent", "unfold_conv3d", "RidgeStats", "solve_ridge"]


def unfold_conv3d(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                  padding_mode: str = "replicate") -> torch.Tensor:
    """Rows of the design matrix: [B, C, T, H, W] -> [B * To * Ho * Wo, C * kT * kH * kW].

    Row order is (batch, t, y, x) -- the order of ``conv(x).permute(0, 2, 3, 4, 1)`` -- and column order
    (c, kt, ky, kx), the flattening of a Conv3d weight ``[out, C, kT, kH, kW]``.
    """
    pT, pH, pW = padding
    mode = "constant" if padding_mode == "zeros" else padding_mode
    x = F.pad(x, (pW, pW, pH, pH, pT, pT), mode=mode)
    kT, kH, kW = kernel
    sT, sH, sW = stride
    patches = x.unfold(2, kT, sT).unfold(3, kH, sH).unfold(4, kW, sW)  # B, C, To, Ho, Wo, kT, kH, kW
    B, C, To, Ho, Wo = patches.shape[:5]
    return patches.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(B * To * Ho * Wo, C * kT * kH * kW)


class RidgeStats:
    """Accumulated float64 statistics for several target layers sharing one design matrix (and, with
    ``separate_eval``, the rows the reported MSE is computed on)."""

    def __init__(self, d: int, out_dim: int, layers: Sequence[str], device="cpu", separate_eval: bool = False):
        f64 = dict(dtype=torch.float64, device=device)
        self.layers = list(layers)
        self.separate_eval = separate_eval
        self.XtX = torch.zeros(d, d, **f64)
        self.sx = torch.zeros(d, **f64)
        self.n = torch.zeros((), **f64)
        self.XtY = {k: torch.zeros(d, out_dim, **f64) for k in self.layers}
        self.sy = {k: torch.zeros(out_dim, **f64) for k in self.layers}
        self.syy = {k: torch.zeros((), **f64) for k in self.layers}
        if separate_eval:
            self.XeX = torch.zeros(d, d, **f64)
            self.sxe = torch.zeros(d, **f64)
            self.XeY = {k: torch.zeros(d, out_dim, **f64) for k in self.layers}

    def add(self, X: torch.Tensor, Ys: dict[str, torch.Tensor], X_eval: torch.Tensor | None = None) -> None:
        """X [rows, d] (fit rows); Ys[layer] [rows, out_dim] (rows in the same order); X_eval [rows, d] the
        rows the MSE is computed on (required with ``separate_eval``)."""
        if self.separate_eval != (X_eval is not None):
            raise ValueError("X_eval must be given exactly when the statistics keep separate evaluation rows")
        X = X.to(self.XtX.device, torch.float64)
        self.XtX += X.T @ X
        self.sx += X.sum(0)
        self.n += X.shape[0]
        if X_eval is not None:
            X_eval = X_eval.to(self.XtX.device, torch.float64)
            self.XeX += X_eval.T @ X_eval
            self.sxe += X_eval.sum(0)
        for k, Y in Ys.items():
            Y = Y.to(self.XtX.device, torch.float64)
            if Y.shape[0] != X.shape[0]:
                raise ValueError(f"layer {k}: {Y.shape[0]} target rows for {X.shape[0]} latent rows")
            self.XtY[k] += X.T @ Y
            self.sy[k] += Y.sum(0)
            self.syy[k] += (Y * Y).sum()
            if X_eval is not None:
                self.XeY[k] += X_eval.T @ Y

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"XtX": self.XtX, "sx": self.sx, "n": self.n}
        if self.separate_eval:
            out["XeX"], out["sxe"] = self.XeX, self.sxe
        for k in self.layers:
            out[f"XtY.{k}"], out[f"sy.{k}"], out[f"syy.{k}"] = self.XtY[k], self.sy[k], self.syy[k]
            if self.separate_eval:
                out[f"XeY.{k}"] = self.XeY[k]
        return out

    def load_tensors(self, saved: dict[str, torch.Tensor]) -> None:
        for name, t in self.tensors().items():
            if name not in saved:
                raise RuntimeError(f"saved ridge statistics lack '{name}' (candidate layers changed?)")
            t.copy_(saved[name].to(t.device, t.dtype))

    def all_reduced(self) -> "RidgeStats":
        """A copy summed over all ranks."""
        out = RidgeStats(self.XtX.shape[0], next(iter(self.XtY.values())).shape[1], self.layers, self.XtX.device,
                         self.separate_eval)
        for (_, src), (_, dst) in zip(self.tensors().items(), out.tensors().items()):
            dst.copy_(src)
            D.all_reduce_(dst)
        return out


def solve_ridge(stats: RidgeStats, layer: str, ridge: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(W [d, out], b [out], mse) for one layer, all float64; mse is per element over every output."""
    XtX, XtY = stats.XtX, stats.XtY[layer]
    n = stats.n
    if float(n) == 0:
        raise ValueError("no data was accumulated for the ridge regression")
    A = XtX.clone()
    A.diagonal().add_(ridge)
    W = torch.linalg.solve(A, XtY)
    sy = stats.sy[layer]
    b = (sy - stats.sx @ W) / n
    XeX, XeY, sxe = (stats.XeX, stats.XeY[layer], stats.sxe) if stats.separate_eval else (XtX, XtY, stats.sx)
    sse = (stats.syy[layer] - 2 * (W * XeY).sum() + (W * (XeX @ W)).sum() - 2 * (b * sy).sum()
           + 2 * (b * (sxe @ W)).sum() + n * (b * b).sum())
    mse = float(sse.clamp_min(0) / (n * XtY.shape[1]))
    return W, b, mse
