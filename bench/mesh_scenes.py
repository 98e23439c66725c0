"""Analytic scenes made of splats, with their true surfaces, for judging splat-to-mesh conversion.

Each scene is a surface covered by flat splats (tangent discs, thickness a fifth of their radius),
coloured by position, plus the exact distance from any point to that surface and uniform samples on
it, so a mesh can be scored by Chamfer distance (relative to the scene's bounding-box diagonal), holes
(boundary loops) and genus. Cameras that play the decoder's predicted ones come with each scene:
an arc of 13 views around the sphere and the torus (the orbit a generated video shows), 13 views
standing inside the room looking at its walls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

import common  # noqa: F401  (before vist3a: puts this tree's repository on sys.path)

from vist3a.gaussians import Gaussians, rgb_to_sh0
from vist3a.render.cameras import intrinsics_from_fov, look_at
from vist3a.scene_view import CameraSet


@dataclass
class AnalyticScene:
    name: str
    gaussians: Gaussians
    cameras: CameraSet
    distance: Callable[[np.ndarray], np.ndarray]  # |points [M, 3]| -> distance to the true surface [M]
    sample: Callable[[int, np.random.Generator], np.ndarray]  # uniform points on the true surface [M, 3]
    diagonal: float  # bounding-box diagonal of the true surface
    genus: int  # of the true surface
    closed: bool = True


def _frame(normals: torch.Tensor) -> torch.Tensor:
    """wxyz quaternions rotating local z onto each unit normal [N, 3]."""
    z = torch.tensor([0.0, 0.0, 1.0], dtype=normals.dtype)
    axis = torch.cross(z.expand_as(normals), normals, dim=1)
    w = 1.0 + normals[:, 2]
    q = torch.cat([w[:, None], axis], dim=1)
    flip = w < 1e-6  # normal = -z: half turn about x
    q[flip] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=normals.dtype)
    return torch.nn.functional.normalize(q, dim=1)


def _splats(points: torch.Tensor, normals: torch.Tensor, rgb: torch.Tensor, area: float, opacity: float = 0.95) -> Gaussians:
    n = points.shape[0]
    radius = 0.9 * math.sqrt(area / n)  # discs overlap so the surface is closed to the eye
    scales = torch.tensor([radius, radius, 0.2 * radius]).expand(n, 3).contiguous()
    return Gaussians(points.float(), scales.float(), _frame(normals.double()).float(), torch.full((n,), opacity),
                     rgb_to_sh0(rgb.float().clamp(0, 1))[:, :, None].contiguous())


def _arc_cameras(center, distance: float, n: int = 13, arc_deg: float = 120.0, elevation_deg: float = 15.0,
                 size: int = 448, fov_deg: float = 50.0) -> CameraSet:
    """n cameras on an arc around ``center`` at one elevation (y up is -y, OpenCV), as a video orbit sees it."""
    c = torch.as_tensor(center, dtype=torch.float32)
    c2w = []
    for i in range(n):
        az = math.radians(-arc_deg / 2 + arc_deg * i / (n - 1))
        el = math.radians(elevation_deg)
        eye = c + distance * torch.tensor([math.cos(el) * math.sin(az), -math.sin(el), -math.cos(el) * math.cos(az)])
        c2w.append(look_at(eye, c))
    K = intrinsics_from_fov(fov_deg, size, size) / torch.tensor([size, size, 1.0])[:, None]
    return CameraSet(torch.stack(c2w), K.expand(n, 3, 3).clone(), (size, size))


def _uniform_sphere(n: int, rng: np.random.Generator) -> np.ndarray:
    d = rng.normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def sphere(n: int = 40_000, radius: float = 1.0, seed: int = 0) -> AnalyticScene:
    rng = np.random.default_rng(seed)
    p = torch.from_numpy(_uniform_sphere(n, rng)).double()
    rgb = torch.stack([0.5 + 0.4 * p[:, 0], 0.5 + 0.4 * p[:, 1], 0.5 - 0.4 * p[:, 2]], 1)
    g = _splats(p * radius, p, rgb, 4 * math.pi * radius**2)
    return AnalyticScene(
        "sphere", g, _arc_cameras((0, 0, 0), 3.2 * radius),
        distance=lambda x: np.abs(np.linalg.norm(x, axis=1) - radius),
        sample=lambda m, r: _uniform_sphere(m, r) * radius,
        diagonal=2 * math.sqrt(3) * radius, genus=0)


def _torus_points(n: int, R: float, r: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform by area on the torus (ring in the x-z plane, axis y): rejection on the tube angle."""
    pts = []
    while sum(len(p) for p in pts) < n:
        u = rng.uniform(0, 2 * np.pi, 2 * n)
        v = rng.uniform(0, 2 * np.pi, 2 * n)
        keep = rng.uniform(0, R + r, 2 * n) < R + r * np.cos(v)
        pts.append(np.stack([u[keep], v[keep]], 1))
    uv = np.concatenate(pts)[:n]
    u, v = uv[:, 0], uv[:, 1]
    normal = np.stack([np.cos(v) * np.cos(u), np.sin(v), np.cos(v) * np.sin(u)], 1)
    centre = np.stack([R * np.cos(u), np.zeros_like(u), R * np.sin(u)], 1)
    return centre + r * normal, normal


def torus(n: int = 40_000, R: float = 1.0, r: float = 0.4, seed: int = 0) -> AnalyticScene:
    rng = np.random.default_rng(seed)
    p, nrm = _torus_points(n, R, r, rng)
    top = (p[:, 1] < -0.1 * r)[:, None]  # -y is up: icing on top
    rgb = torch.from_numpy(np.where(top, [0.95, 0.45, 0.7], [0.75, 0.5, 0.25]))
    g = _splats(torch.from_numpy(p), torch.from_numpy(nrm), rgb, 4 * math.pi**2 * R * r)

    def distance(x):
        q = np.hypot(x[:, 0], x[:, 2]) - R
        return np.abs(np.hypot(q, x[:, 1]) - r)

    return AnalyticScene("torus", g, _arc_cameras((0, 0, 0), 3.5 * (R + r), elevation_deg=30.0), distance,
                         lambda m, rr: _torus_points(m, R, r, rr)[0],
                         diagonal=float(np.linalg.norm([2 * (R + r), 2 * r, 2 * (R + r)])), genus=1)


def _box_points(n: int, half: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniform by area on the faces of the box [-half, half]; face index (0..5: -x +x -y +y -z +z) too."""
    areas = np.array([half[1] * half[2]] * 2 + [half[0] * half[2]] * 2 + [half[0] * half[1]] * 2)
    face = rng.choice(6, size=n, p=areas / areas.sum())
    p = rng.uniform(-half, half, size=(n, 3))
    axis, sign = face // 2, np.where(face % 2 == 1, 1.0, -1.0)
    p[np.arange(n), axis] = sign * half[axis]
    normal = np.zeros((n, 3))
    normal[np.arange(n), axis] = -sign  # facing into the room
    return p, normal, face


def room(n: int = 60_000, half=(2.0, 1.2, 2.0), seed: int = 0) -> AnalyticScene:
    rng = np.random.default_rng(seed)
    h = np.asarray(half, dtype=np.float64)
    p, nrm, face = _box_points(n, h, rng)
    palette = np.array([[0.8, 0.3, 0.3], [0.3, 0.7, 0.3], [0.9, 0.9, 0.85], [0.45, 0.35, 0.25], [0.3, 0.4, 0.8], [0.85, 0.75, 0.3]])
    checker = ((np.floor(p[:, 0] * 2) + np.floor(p[:, 1] * 2) + np.floor(p[:, 2] * 2)) % 2)[:, None]
    rgb = torch.from_numpy(palette[face] * (0.8 + 0.2 * checker))
    area = 8 * (h[0] * h[1] + h[1] * h[2] + h[0] * h[2])
    g = _splats(torch.from_numpy(p), torch.from_numpy(nrm), rgb, float(area))
    # 13 views from near the middle of the room, turning once around (a walk-through video)
    size, c2w = 448, []
    for i in range(13):
        az = 2 * math.pi * i / 13
        eye = torch.tensor([0.3 * math.cos(az), 0.1, 0.3 * math.sin(az)])
        c2w.append(look_at(eye, eye + torch.tensor([math.sin(az), 0.15, -math.cos(az)])))
    K = intrinsics_from_fov(70.0, size, size) / torch.tensor([size, size, 1.0])[:, None]
    cams = CameraSet(torch.stack(c2w), K.expand(13, 3, 3).clone(), (size, size))

    def distance(x):
        inner = h[None, :] - np.abs(x)  # > 0 inside along each axis
        outside = np.linalg.norm(np.clip(-inner, 0, None), axis=1)
        return np.where((inner > 0).all(axis=1), inner.min(axis=1), outside)

    return AnalyticScene("room", g, cams, distance, lambda m, r: _box_points(m, h, r)[0],
                         diagonal=float(2 * np.linalg.norm(h)), genus=0)


SCENES = {"sphere": sphere, "torus": torus, "room": room}


def sample_mesh(vertices: np.ndarray, faces: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` points uniform by area on a triangle mesh."""
    tri = vertices[faces].astype(np.float64)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    pick = rng.choice(len(faces), size=m, p=area / area.sum())
    a, b = rng.uniform(size=(2, m))
    flip = a + b > 1
    a[flip], b[flip] = 1 - a[flip], 1 - b[flip]
    t = tri[pick]
    return t[:, 0] + a[:, None] * (t[:, 1] - t[:, 0]) + b[:, None] * (t[:, 2] - t[:, 0])


def chamfer(scene: AnalyticScene, vertices: np.ndarray, faces: np.ndarray, m: int = 200_000, seed: int = 0) -> dict:
    """Mean distances mesh -> true surface (exact) and true surface -> mesh (to dense mesh samples), relative
    to the scene's bounding-box diagonal; their mean is the Chamfer distance reported."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    on_mesh = sample_mesh(vertices, faces, m, rng)
    to_true = scene.distance(on_mesh)
    on_true = scene.sample(m // 2, rng)
    to_mesh, _ = cKDTree(on_mesh).query(on_true, workers=-1)
    d = scene.diagonal
    return {"mesh_to_true": float(to_true.mean() / d), "true_to_mesh": float(to_mesh.mean() / d),
            "chamfer": float((to_true.mean() + to_mesh.mean()) / 2 / d),
            "true_to_mesh_p95": float(np.percentile(to_mesh, 95) / d), "mesh_to_true_p95": float(np.percentile(to_true, 95) / d)}
