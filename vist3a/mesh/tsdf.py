"""Truncated signed distance fusion of depth maps into a voxel grid, and its zero surface.

Why a TSDF: rendered depth of a splat scene is noisy where splats overlap and blends foreground and
background at silhouettes; averaging the signed distance to the observed surface over many views (as
KinectFusion and Open3D do) cancels both, and free space seen by one view erases what another view
put there by mistake. The surface is the zero level set, extracted with scikit-image's marching cubes.

Conventions: cameras are camera-to-world [4, 4] with OpenCV axes (x right, y down, z forward) and
pixel intrinsics [3, 3] (pixel ``i`` covers [i, i+1), as the renderer draws it); depth is camera-space
z. Each pixel of a view is a surface at its depth, free space along its whole ray, or says nothing
(the caller decides which, see :mod:`vist3a.mesh.build`). Voxels no view has seen are left out of the
extraction, so an unseen region leaves a hole instead of inventing a wall.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

__all__ = ["TSDFVolume"]

SLAB_VOXELS = 1 << 21  # voxels processed at once: bounds the temporaries (a few dozen bytes per voxel)


class TSDFVolume:
    """A box-shaped grid of truncated signed distances (+1 in front of surfaces, -1 behind).

    ``lo``/``hi`` [3] are the box corners; ``resolution`` voxels along its longest side (cubic voxels);
    ``truncation`` (world units, default 4 voxels) is how far behind an observed surface a view still
    writes, and the distance that maps to +-1.
    """

    def __init__(self, lo, hi, resolution: int = 256, truncation: Optional[float] = None):
        lo = torch.as_tensor(lo, dtype=torch.float64).reshape(3)
        hi = torch.as_tensor(hi, dtype=torch.float64).reshape(3)
        extent = hi - lo
        if not bool((extent > 0).all()) or not math.isfinite(float(extent.max())):
            raise ValueError(f"TSDF box must have positive finite size, got {extent.tolist()}")
        if resolution < 8:
            raise ValueError(f"TSDF resolution must be at least 8 voxels, got {resolution}")
        self.voxel = float(extent.max()) / resolution
        self.dims = tuple(max(4, int(math.ceil(float(e) / self.voxel))) for e in extent)
        self.origin = lo  # corner of voxel (0, 0, 0); voxel centres sit at origin + (i + 0.5) * voxel
        self.truncation = float(truncation) if truncation is not None else 4.0 * self.voxel
        self.tsdf = torch.ones(self.dims, dtype=torch.float32)
        self.weight = torch.zeros(self.dims, dtype=torch.float32)
        self._axes = [((torch.arange(n, dtype=torch.float64) + 0.5) * self.voxel + float(o)) for n, o in zip(self.dims, lo)]

    def integrate(self, depth: torch.Tensor, surface: torch.Tensor, empty: torch.Tensor, c2w: torch.Tensor,
                  K: torch.Tensor, near: float = 0.0, weight: Optional[torch.Tensor] = None) -> None:
        """Fuse one view: ``depth`` [H, W] camera-space z, used where ``surface`` [H, W] is True; rays of pixels
        where ``empty`` [H, W] is True are free space all along; other pixels say nothing. ``c2w`` [4, 4], ``K`` [3, 3].
        ``weight`` [H, W] (default 1) is how much each pixel's observation counts in the running average."""
        H, W = depth.shape
        kind = torch.zeros(H * W, dtype=torch.uint8)  # 0: no information, 1: surface, 2: free ray
        kind[surface.reshape(-1).cpu()] = 1
        kind[empty.reshape(-1).cpu() & (kind == 0)] = 2
        pixel_w = torch.ones(H * W) if weight is None else weight.detach().reshape(-1).float().cpu()
        depth = depth.detach().reshape(-1).float().cpu()
        c2w = c2w.detach().double().cpu()
        R = c2w[:3, :3].T  # world -> camera
        t = -R @ c2w[:3, 3]
        K = K.detach().double().cpu()
        fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
        # camera coordinates are affine in each voxel index: p = R[:, 0] x_i + R[:, 1] y_j + R[:, 2] z_k + t
        ax = (R[:, 0][None, :] * self._axes[0][:, None]).float()  # [nx, 3]
        ay = (R[:, 1][None, :] * self._axes[1][:, None]).float()
        az = (R[:, 2][None, :] * self._axes[2][:, None] + t[None, :]).float()
        nx, ny, nz = self.dims
        step = max(1, SLAB_VOXELS // (ny * nz))
        trunc = self.truncation
        for x0 in range(0, nx, step):
            x1 = min(nx, x0 + step)
            p = ax[x0:x1, None, None, :] + ay[None, :, None, :] + az[None, None, :, :]  # [s, ny, nz, 3]
            z = p[..., 2]
            ok = z > max(near, 1e-9)
            zs = torch.where(ok, z, torch.ones_like(z))
            u = torch.floor(p[..., 0] / zs * fx + cx)
            v = torch.floor(p[..., 1] / zs * fy + cy)
            ok &= (u >= 0) & (u < W) & (v >= 0) & (v < H)
            if not bool(ok.any()):
                continue
            idx = torch.where(ok, v * W + u, torch.zeros_like(u)).long()
            k = kind[idx]
            sdf = depth[idx] - z
            hit = ok & (k == 1) & (sdf > -trunc)
            seen = hit | (ok & (k == 2))
            value = torch.where(hit, (sdf / trunc).clamp(max=1.0), torch.ones_like(sdf))
            w = torch.where(seen, pixel_w[idx], torch.zeros_like(sdf))
            w_old = self.weight[x0:x1]
            w_new = w_old + w
            d_old = self.tsdf[x0:x1]
            self.tsdf[x0:x1] = torch.where(w > 0, (d_old * w_old + value * w) / w_new.clamp_min(1e-12), d_old)
            self.weight[x0:x1] = w_new

    def observed_cubes(self) -> np.ndarray:
        """Bool [nx, ny, nz], the mask scikit-image's marching cubes takes: True at (x+1, y+1, z+1) when all
        eight corners of the cube between voxel (x, y, z) and (x+1, y+1, z+1) have been seen (its Lewiner
        implementation tests the mask at a cube's far corner; tests/test_mesh.py checks that it still does)."""
        seen = self.weight > 0
        cube = seen[:-1] & seen[1:]
        cube = cube[:, :-1] & cube[:, 1:]
        cube = cube[:, :, :-1] & cube[:, :, 1:]
        mask = torch.zeros_like(seen)
        mask[1:, 1:, 1:] = cube
        return mask.numpy()

    def extract(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Marching cubes on the zero level, seen voxels only: (vertices [V, 3] world, faces [F, 3], normals [V, 3]).

        Normals point out of the surface (towards free space). Empty arrays when there is no surface.
        """
        from skimage.measure import marching_cubes

        volume = self.tsdf.numpy()
        mask = self.observed_cubes()
        if not mask.any() or volume[mask].min() > 0 or volume[mask].max() < 0:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.float32)
        try:
            verts, faces, normals, _ = marching_cubes(volume, level=0.0, spacing=(self.voxel,) * 3, mask=mask,
                                                      allow_degenerate=False, gradient_direction="ascent")
        except (ValueError, RuntimeError):  # no crossing inside the mask
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.float32)
        verts = verts + (self.origin.numpy() + 0.5 * self.voxel)[None, :]
        # scikit-image winds the faces and points the normals towards decreasing values here; the free space
        # is where the TSDF grows, so both are turned (tests/test_mesh.py checks the result on a sphere)
        faces = faces[:, ::-1]
        return verts.astype(np.float32), np.ascontiguousarray(faces, dtype=np.int64), (-normals).astype(np.float32)
