"""The ComfyUI ``SPLAT`` contract and its conversion to and from our :class:`~vist3a.gaussians.Gaussians`.

ComfyUI (2026 and later) has a native splat type, ``comfy_api.latest.Types.SPLAT`` (io type ``"SPLAT"``),
a padded batch in render-ready form:

* ``positions`` (B, N, 3) world centres, ``scales`` (B, N, 3) linear standard deviations,
* ``rotations`` (B, N, 4) unit quaternions **wxyz**, ``opacities`` (B, N, 1) in [0, 1],
* ``sh`` (B, N, K, 3) with K = (degree + 1)^2 and the DC term at ``sh[..., 0, :]``,
* ``counts`` (B,) real lengths of zero-padded rows, or None when every row is full.

Our nodes speak that contract on every ComfyUI: where the native class exists the nodes build it
(``make=Types.SPLAT``), elsewhere they build :class:`SplatBatch`, which has the same fields. Both
directions are exact: the only differences to ``Gaussians`` are layout (SH is channel-major [N, 3, K]
in ``Gaussians``, opacities [N]) and padding; ``Gaussians.covariances`` (derived from scales and
rotations) is not carried. This module never imports ComfyUI.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from .errors import VIST3AError
from .gaussians import Gaussians, sh_degree_from_bases

__all__ = ["SplatContractError", "SplatBatch", "FIELDS", "is_splat", "gaussians_to_splat", "splat_to_gaussians"]

FIELDS = ("positions", "scales", "rotations", "opacities", "sh")


class SplatContractError(VIST3AError, ValueError):
    """A value on a SPLAT socket does not follow the contract; the message says which field and why."""


class SplatBatch:
    """Our stand-in for ``comfy_api.latest.Types.SPLAT`` on ComfyUIs that lack it: the same
    constructor and fields, so code written against either works with both."""

    def __init__(self, positions: torch.Tensor, scales: torch.Tensor, rotations: torch.Tensor,
                 opacities: torch.Tensor, sh: torch.Tensor, counts: Optional[torch.Tensor] = None):
        self.positions = positions
        self.scales = scales
        self.rotations = rotations
        self.opacities = opacities
        self.sh = sh
        self.counts = counts

    def __repr__(self) -> str:
        b, n = self.positions.shape[:2]
        return f"SplatBatch(batch={b}, n={n}, sh_bases={self.sh.shape[2]}, counts={None if self.counts is None else self.counts.tolist()})"


def is_splat(value: Any) -> bool:
    """True for any object with the SPLAT fields (the native class, SplatBatch, or a look-alike)."""
    return all(isinstance(getattr(value, f, None), torch.Tensor) for f in FIELDS)


def gaussians_to_splat(scenes: Sequence[Gaussians], make: Callable[..., Any] = SplatBatch) -> Any:
    """One SPLAT batch holding ``scenes`` (zero-padded to the longest; ``counts`` only when lengths differ).

    All scenes must share an SH degree (a SPLAT has one K); ``make`` builds the object
    (``Types.SPLAT`` on a ComfyUI that has it)."""
    scenes = list(scenes)
    if not scenes:
        raise SplatContractError("There are no scenes to put into a SPLAT batch; the producer returned nothing.")
    bases = {g.sh.shape[2] for g in scenes}
    if len(bases) != 1:
        raise SplatContractError(f"The scenes have different SH sizes {sorted(bases)}; a SPLAT batch needs one SH degree for all.")
    ref = scenes[0]
    lengths = [g.num for g in scenes]
    n, b, k = max(lengths), len(scenes), bases.pop()
    dtype, device = ref.means.dtype, ref.means.device

    def pad(fn, *tail):
        out = torch.zeros((b, n, *tail), dtype=dtype, device=device)
        for i, g in enumerate(scenes):
            out[i, : g.num] = fn(g).to(device=device, dtype=dtype)
        return out

    positions = pad(lambda g: g.means, 3)
    scales = pad(lambda g: g.scales, 3)
    rotations = pad(lambda g: g.rotations, 4)
    opacities = pad(lambda g: g.opacities[:, None], 1)
    sh = pad(lambda g: g.sh.transpose(1, 2), k, 3)  # [N, 3, K] channel-major -> [N, K, 3]
    counts = None if len(set(lengths)) == 1 else torch.tensor(lengths, dtype=torch.int64)
    return make(positions, scales, rotations, opacities, sh, counts=counts)


def _check(splat: Any) -> tuple[int, int, int]:
    missing = [f for f in FIELDS if not isinstance(getattr(splat, f, None), torch.Tensor)]
    if missing:
        raise SplatContractError(
            f"The SPLAT input ({type(splat).__name__}) has no tensor field(s) {', '.join(missing)}; connect a node that outputs SPLAT.")
    p = splat.positions
    if p.ndim != 3 or p.shape[2] != 3:
        raise SplatContractError(f"SPLAT.positions must be (B, N, 3), got {list(p.shape)}.")
    b, n = p.shape[:2]
    sh = splat.sh
    if sh.ndim != 4 or tuple(sh.shape[:2]) != (b, n) or sh.shape[3] != 3:
        raise SplatContractError(f"SPLAT.sh must be (B, N, K, 3) with B={b}, N={n}, got {list(sh.shape)}.")
    try:
        sh_degree_from_bases(sh.shape[2])
    except ValueError as exc:
        raise SplatContractError(f"SPLAT.sh has K={sh.shape[2]} coefficients, not (degree+1)^2.") from exc
    for name, last in (("scales", 3), ("rotations", 4), ("opacities", 1)):
        t = getattr(splat, name)
        if tuple(t.shape) != (b, n, last):
            raise SplatContractError(f"SPLAT.{name} must be (B, N, {last}) = {[b, n, last]}, got {list(t.shape)}.")
    counts = getattr(splat, "counts", None)
    if counts is not None:
        if tuple(counts.shape) != (b,) or bool((counts < 0).any()) or bool((counts > n).any()):
            raise SplatContractError(f"SPLAT.counts must be (B,) = [{b}] lengths in 0..{n}, got {counts.tolist()}.")
    return b, n, sh.shape[2]


def splat_to_gaussians(splat: Any) -> list[Gaussians]:
    """The scenes of a SPLAT batch (native or ours), each cut to its real length, as ``Gaussians``."""
    b, n, _k = _check(splat)
    counts = getattr(splat, "counts", None)
    scenes = []
    for i in range(b):
        end = n if counts is None else int(counts[i])
        scenes.append(Gaussians(
            means=splat.positions[i, :end],
            scales=splat.scales[i, :end],
            rotations=splat.rotations[i, :end],
            opacities=splat.opacities[i, :end, 0],
            sh=splat.sh[i, :end].transpose(1, 2),  # [N, K, 3] -> [N, 3, K] channel-major
        ))
    return scenes
