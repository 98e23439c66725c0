"""Axis conventions between splat containers: the sign each SH coefficient takes when axes are flipped.

3DGS PLYs are right-down-front (RDF), glTF is left-up-front (LUF) and the SPZ payload is right-up-back
(RUB). Going from one to another negates two of the three axes, a half turn about the third. Positions
take the axis signs; a half turn ``M`` composes with each Gaussian's rotation; the real spherical
harmonics follow from their polynomial form: the basis function of degree ``l`` and order ``m`` is
``P(z) * Re|Im (x + i y)^|m|`` with ``P`` of parity ``l - |m|``, so under ``(sx*x, sy*y, sz*z)`` it takes
``sz^(l-|m|) * sx^|m|``, negated once more for ``m < 0`` when ``sx != sy`` (the imaginary part of a
conjugate). Coefficients are in the 3DGS / glTF order: index ``l*l + l + m``.
"""

from __future__ import annotations

import numpy as np

from ..gaussians import sh_degree_from_bases

__all__ = ["sh_flip_signs", "HALF_TURN_Z", "RDF_TO_RUB"]

HALF_TURN_Z = (-1.0, -1.0, 1.0)
"""PLY (RDF) to glTF (LUF): x and y negated, a half turn about z (as PlayCanvas splat-transform places PLY scenes)."""

RDF_TO_RUB = (1.0, -1.0, -1.0)
"""PLY (RDF) to the SPZ payload's RUB: y and z negated, a half turn about x."""


def sh_flip_signs(flip: tuple, num_bases: int) -> np.ndarray:
    """float32 [num_bases]: the sign of each real SH coefficient (order ``l*l + l + m``) under the axis signs
    ``flip`` = (sx, sy, sz), each +-1; the signs are exact, so flipping twice gives back the same coefficients."""
    sx, sy, sz = (1 if s > 0 else -1 for s in flip)
    signs = np.empty(num_bases, np.float32)
    for degree in range(sh_degree_from_bases(num_bases) + 1):
        for m in range(-degree, degree + 1):
            sign = sz ** (degree - abs(m)) * sx ** abs(m)
            signs[degree * degree + degree + m] = -sign if m < 0 and sx != sy else sign
    return signs
