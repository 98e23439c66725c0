"""A trained splat scene of a donut, meshed: the mesh must be one ring with one hole (genus 1).

No trained weights exist here, so the scene is trained on the spot, as a 3DGS capture would be: images
of an analytic donut (a torus ray-marched with its exact distance function, pink icing on top, shaded
by a fixed light) from cameras all around it; Gaussians start at random positions, sizes and colours in
the donut's box (within the ball all cameras see) and are fitted to the images with our differentiable torch renderer (Adam, L1, a random
background colour per step so that splats in empty space must turn transparent; no densification or
pruning). The training cameras then play the decoder's predicted cameras for `splats_to_mesh`.

    python bench/mesh_trained_donut.py [--steps 300 --size 48 --gaussians 3000 --views 24 --entropy 0.05] [--out bench/results/mesh_trained_donut.json]

Prints and records the training loss, the mesh topology (pieces, holes, genus) and its Chamfer distance
to the true torus. tests/test_mesh.py meshes the scene a run of this script saved (--save-scene), committed
as tests/fixtures/mesh/donut_trained.ply with its cameras.json (training it there would take minutes).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from mesh_scenes import chamfer, torus

from common import ROOT, command_line, now, write_json  # puts this tree's repository on sys.path, before vist3a

from vist3a.formats import save_ply
from vist3a.gaussians import Gaussians, rgb_to_sh0
from vist3a.mesh import mesh_topology, save_cameras, splats_to_mesh
from vist3a.mesh.views import fibonacci_directions
from vist3a.render import rasterize, world_to_camera
from vist3a.render.cameras import intrinsics_from_fov, look_at
from vist3a.scene_view import CameraSet

RING, TUBE = 1.0, 0.4  # torus radii; ring in the x-z plane, axis y (-y is up, as in OpenCV scenes)
ICING = torch.tensor([0.95, 0.45, 0.7])
DOUGH = torch.tensor([0.75, 0.5, 0.25])
LIGHT = torch.nn.functional.normalize(torch.tensor([0.3, -1.0, -0.4]), dim=0)
DISTANCE, FOV = 4.0, 50.0  # capture cameras: distance from the donut's centre, horizontal field of view


def torus_sdf(p: torch.Tensor) -> torch.Tensor:
    q = torch.sqrt(p[..., 0] ** 2 + p[..., 2] ** 2) - RING
    return torch.sqrt(q * q + p[..., 1] ** 2) - TUBE


def torus_normal(p: torch.Tensor) -> torch.Tensor:
    rho = torch.sqrt(p[..., 0] ** 2 + p[..., 2] ** 2).clamp_min(1e-9)
    ring = torch.stack([p[..., 0] / rho * RING, torch.zeros_like(rho), p[..., 2] / rho * RING], -1)
    return torch.nn.functional.normalize(p - ring, dim=-1)


def capture_cameras(n: int, size: int, distance: float = DISTANCE, fov_deg: float = FOV) -> tuple[torch.Tensor, torch.Tensor]:
    """n cameras all around the donut (a spiral over the sphere), looking at its centre: (c2w, pixel K)."""
    dirs = fibonacci_directions(n).float()
    c2w = torch.stack([look_at(distance * d, torch.zeros(3), (0.0, 0.0, 1.0) if abs(float(d[1])) > 0.95 else (0.0, -1.0, 0.0))
                       for d in dirs])
    return c2w, intrinsics_from_fov(fov_deg, size, size).expand(n, 3, 3).clone()


@torch.no_grad()
def render_donut(c2w: torch.Tensor, K: torch.Tensor, size: int, steps: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray-marched images [C, H, W, 3] and hit masks [C, H, W] of the analytic donut."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    images, masks = [], []
    for i in range(c2w.shape[0]):
        d = torch.stack([(xs - K[i, 0, 2]) / K[i, 0, 0], (ys - K[i, 1, 2]) / K[i, 1, 1], torch.ones_like(xs)], -1)
        d = torch.nn.functional.normalize(d @ c2w[i, :3, :3].T, dim=-1)
        o = c2w[i, :3, 3].expand_as(d)
        t = torch.zeros(size, size)
        for _ in range(steps):  # sphere tracing: the distance bound never oversteps the surface
            t = t + torus_sdf(o + t[..., None] * d).clamp_min(0)
        p = o + t[..., None] * d
        hit = torus_sdf(p).abs() < 1e-3
        n = torus_normal(p)
        base = torch.where((p[..., 1] < -0.1 * TUBE)[..., None], ICING, DOUGH)
        shade = 0.35 + 0.65 * (n @ -LIGHT).clamp_min(0)  # light shines along LIGHT
        images.append(torch.where(hit[..., None], base * shade[..., None], torch.zeros(3)))
        masks.append(hit)
    return torch.stack(images), torch.stack(masks)


def train_donut(steps: int = 300, size: int = 48, gaussians: int = 3000, views: int = 24, batch: int = 4, seed: int = 0,
                entropy: float = 0.05, log=print) -> tuple[Gaussians, CameraSet, dict]:
    """Fit random Gaussians to images of the donut; returns (scene, the training cameras, stats).

    ``entropy``: weight of the opacity entropy term over the second half of the steps, which pushes each
    splat to opaque or gone (as surface-oriented 3DGS training does), so faint leftovers do not haze the surface."""
    g = torch.Generator().manual_seed(seed)
    c2w, K = capture_cameras(views, size)
    target, mask = render_donut(c2w, K, size)
    viewmats = world_to_camera(c2w)
    # random positions in the donut's box (20% margin) cut to the ball every camera sees whole: a splat that
    # some views never see is never told to vanish and stays as a floater
    box = torch.tensor([RING + TUBE, TUBE, RING + TUBE]) * 1.2
    reach = 0.95 * DISTANCE * math.sin(math.radians(FOV / 2))
    points = torch.empty(0, 3)
    while points.shape[0] < gaussians:
        p = (torch.rand(2 * gaussians, 3, generator=g) * 2 - 1) * box
        points = torch.cat([points, p[p.norm(dim=1) < reach]])
    means = points[:gaussians].clone().requires_grad_()
    log_scales = torch.full((gaussians, 3), math.log(0.05)).requires_grad_()
    quats = torch.nn.functional.normalize(torch.randn(gaussians, 4, generator=g), dim=1).requires_grad_()
    logits = torch.zeros(gaussians).requires_grad_()
    colours = rgb_to_sh0(torch.rand(gaussians, 3, generator=g)).requires_grad_()
    opt = torch.optim.Adam([
        {"params": [means], "lr": 0.01}, {"params": [log_scales], "lr": 0.02}, {"params": [quats], "lr": 0.01},
        {"params": [logits], "lr": 0.1}, {"params": [colours], "lr": 0.02},
    ])
    t0, losses = time.perf_counter(), []
    for step in range(steps):
        pick = torch.randint(0, views, (batch,), generator=g)
        bg = torch.rand(batch, 3, generator=g)
        rgb, _, _ = rasterize(means, quats, log_scales.exp(), torch.sigmoid(logits), colours[:, :, None], viewmats[pick],
                              K[pick], size, size, background=bg, near=0.01, far=1e10, backend="torch")
        gt = torch.where(mask[pick][..., None], target[pick], bg[:, None, None, :])
        loss = (rgb - gt).abs().mean()
        if entropy > 0 and step >= steps // 2:
            o = torch.sigmoid(logits).clamp(1e-6, 1 - 1e-6)
            loss = loss + entropy * -(o * o.log() + (1 - o) * (1 - o).log()).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if log and (step % 50 == 0 or step == steps - 1):
            log(f"step {step:4d}  L1 {float(loss.detach()):.4f}  {time.perf_counter() - t0:.0f} s")
    with torch.no_grad():
        scene = Gaussians(means.detach().clone(), log_scales.exp().detach(), torch.nn.functional.normalize(quats.detach(), dim=1),
                          torch.sigmoid(logits.detach()), colours.detach()[:, :, None].clone())
    cams = CameraSet(c2w, K / torch.tensor([size, size, 1.0])[:, None], (size, size))
    stats = {"steps": steps, "size": size, "gaussians": gaussians, "views": views, "batch": batch, "seed": seed, "entropy": entropy,
             "train_seconds": round(time.perf_counter() - t0, 1), "l1_first": losses[0],
             "l1_last": sum(losses[-10:]) / min(10, len(losses))}
    return scene, cams, stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--gaussians", type=int, default=3000)
    ap.add_argument("--views", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--entropy", type=float, default=0.05, help="opacity entropy weight over the second half (0: off)")
    ap.add_argument("--resolution", type=int, default=128, help="mesh voxels along the longest side")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared 2-core machine one thread ran the small renders 4x faster than two)")
    ap.add_argument("--save-scene", help="also keep the trained scene: this .ply plus cameras.json beside it")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "mesh_trained_donut.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    scene, cams, stats = train_donut(args.steps, args.size, args.gaussians, args.views, seed=args.seed, entropy=args.entropy)
    if args.save_scene:
        save_ply(scene, args.save_scene)
        save_cameras(Path(args.save_scene).with_name("cameras.json"), cams.c2w, cams.intrinsics, cams.image_size)
    t0 = time.perf_counter()
    mesh = splats_to_mesh(scene, cams, resolution=args.resolution, image_size=128, extra_views=24)
    mesh_s = time.perf_counter() - t0
    topo = mesh_topology(mesh.vertices, mesh.faces)
    truth = torus(R=RING, r=TUBE)
    score = chamfer(truth, mesh.vertices.astype(np.float64), mesh.faces)
    result = {"command": command_line(), "date": now(), "threads": args.threads, "training": stats, "mesh_seconds": round(mesh_s, 1),
              "mesh_info": mesh.info, "topology": topo.as_dict(), "chamfer_rel": score}
    print(f"mesh: {topo.components} piece(s), {topo.boundary_loops} hole(s), genus {topo.genus:g}, "
          f"Chamfer {score['chamfer']:.4f} of the diagonal; {mesh_s:.0f} s")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
