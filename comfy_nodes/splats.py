"""Splat nodes: Render Views (-> IMAGE), Preview Splats (interactive viewer in the node, web/),
Save PLY (+ .splat / .spz) with ComfyUI's counter naming, Load PLY."""

from __future__ import annotations

import math
import os
import uuid

import torch

import folder_paths
from comfy_api.latest import io

from . import common as C

BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "gray": (0.5, 0.5, 0.5)}
MODES = ["orbit", "predicted cameras"]


class RenderViews(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VIST3ARenderViews",
            display_name="Render Views (VIST3A)",
            category=C.SPLATS,
            description="Renders the Gaussians into an IMAGE batch: an orbit around the scene or the predicted cameras. "
                        "Feed it to Preview Image, Save Image or Create Video.",
            inputs=[
                io.Custom("GAUSSIANS").Input("gaussians", tooltip="From Decode Splats, Images to Splats or Load PLY."),
                io.Combo.Input("mode", options=MODES, default="orbit",
                               tooltip="orbit: 'views' cameras circling the scene centre. predicted cameras: the poses the decoder "
                                       "predicted for each frame (needs the cameras input)."),
                io.Int.Input("views", default=24, min=1, max=720, tooltip="Number of orbit views (ignored for predicted cameras)."),
                io.Int.Input("width", default=512, min=16, max=4096, step=8, tooltip="Image width in pixels."),
                io.Int.Input("height", default=512, min=16, max=4096, step=8, tooltip="Image height in pixels."),
                io.Float.Input("fov", default=50.0, min=5.0, max=150.0, step=1.0, tooltip="Horizontal field of view of the orbit cameras, degrees."),
                io.Float.Input("elevation", default=15.0, min=-89.0, max=89.0, step=1.0, tooltip="Orbit elevation above the scene centre, degrees."),
                io.Combo.Input("background", options=list(BACKGROUNDS), default="white", tooltip="Background colour behind the splats."),
                io.Custom("CAMERAS").Input("cameras", optional=True, tooltip="Predicted cameras from Decode Splats / Images to Splats (for 'predicted cameras')."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="Rendered views [N, H, W, 3], all scenes one after another.")],
        )

    @classmethod
    @C.friendly("Render Views")
    def execute(cls, gaussians, mode, views, width, height, fov, elevation, background, cameras=None) -> io.NodeOutput:
        from vist3a.render import cameras_from_normalized_intrinsics, intrinsics_from_fov, orbit_cameras, render_gaussians, scene_bounds

        scenes = C.check_gaussians(gaussians)
        cams = C.check_cameras(cameras)
        if mode == "predicted cameras" and cams is None:
            raise C.NodeError("Render Views is set to 'predicted cameras' but nothing is connected to 'cameras'; connect "
                              "Decode Splats' cameras output or switch mode to orbit.")
        device = C.pick_device("auto")
        bg = BACKGROUNDS[background]
        jobs = []
        for i, g in enumerate(scenes):
            if mode == "orbit":
                center, radius = scene_bounds(g)
                half = min(math.radians(fov) / 2, math.atan(math.tan(math.radians(fov) / 2) * height / width))
                c2w, K = orbit_cameras(center, 1.1 * radius / math.sin(half), views, elevation, fov, width, height)
            else:
                cs = cams[min(i, len(cams) - 1)]
                c2w, K = cameras_from_normalized_intrinsics(cs.c2w, cs.intrinsics, width, height)
            jobs.append((g, c2w, K))
        total = sum(j[1].shape[0] for j in jobs)
        bar = C.Progress(total)
        out = []
        chunk = 4
        for g, c2w, K in jobs:
            gd = g.to(device)
            for s in range(0, c2w.shape[0], chunk):
                C.check_cancel()
                with torch.no_grad():
                    rgb, _, _ = render_gaussians(gd, c2w[s:s + chunk].to(device), K[s:s + chunk].to(device), width, height, background=bg)
                out.append(rgb.clamp(0, 1).float().cpu())
                bar.step(rgb.shape[0])
        return io.NodeOutput(torch.cat(out, 0))


def _camera_json(cs: C.CameraSet, index: int = 0) -> dict:
    """First predicted camera for the viewer's start view: c2w (OpenCV) and vertical fov."""
    H, W = cs.image_size
    K = cs.intrinsics[index]
    fy = float(K[1, 1]) * H
    fov_y = 2 * math.degrees(math.atan(H / (2 * fy))) if fy > 0 else 50.0
    return {"c2w": cs.c2w[index].tolist(), "fov_y": fov_y, "aspect": W / H}


class PreviewSplats(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VIST3APreviewSplats",
            display_name="Preview Splats (VIST3A)",
            category=C.SPLATS,
            description="Shows the Gaussians in an interactive 3D viewer (Spark) inside the node: drag to orbit, right-drag or "
                        "shift-drag to pan, wheel to zoom, double-click or R to reset, U or the up button to change the up axis, "
                        "F or the button for full screen.",
            is_output_node=True,
            inputs=[
                io.Custom("GAUSSIANS").Input("gaussians", tooltip="From Decode Splats, Images to Splats or Load PLY."),
                io.Int.Input("max_splats", default=1_000_000, min=1000, max=20_000_000, step=1000,
                             tooltip="Show at most this many Gaussians (the most visible ones) to keep the browser fast."),
                io.Custom("CAMERAS").Input("cameras", optional=True,
                                           tooltip="Predicted cameras: they give the scene's up axis and the side the viewer starts from "
                                                   "(otherwise the up axis is guessed from the splats)."),
            ],
            outputs=[],
        )

    @classmethod
    @C.friendly("Preview Splats")
    def execute(cls, gaussians, max_splats, cameras=None) -> io.NodeOutput:
        from vist3a.atomic import atomic_save_bytes
        from vist3a.scene_view import view_hint
        from vist3a.splat_formats import spz_bytes

        scenes = C.check_gaussians(gaussians)
        cams = C.check_cameras(cameras)
        temp = folder_paths.get_temp_directory()
        sub = "vist3a"
        os.makedirs(os.path.join(temp, sub), exist_ok=True)
        items = []
        for i, g in enumerate(scenes):
            n = g.num
            if n == 0:
                raise C.NodeError("There are no Gaussians to preview (all pruned?); lower min_opacity.")
            if n > max_splats:
                score = g.opacities * g.scales.prod(dim=1).clamp_min(0) ** (1 / 3)
                g = g.select(torch.topk(score, max_splats).indices)
            cs = cams[min(i, len(cams) - 1)] if cams else None
            # .spz keeps SH up to degree 3 for the viewer (Spark); fast gzip, it is a temp file
            name = f"preview_{uuid.uuid4().hex[:12]}.spz"
            atomic_save_bytes(os.path.join(temp, sub, name), spz_bytes(g, 3, _fractional_bits(g), compresslevel=1))
            item = {"filename": name, "subfolder": sub, "type": "temp", "format": "spz", "count": int(g.num), "total": int(n),
                    **view_hint(g, cs.c2w if cs is not None else None)}
            if cs is not None:
                item["camera"] = _camera_json(cs)
            items.append(item)
        return io.NodeOutput(ui={"vist3a_splats": items})


def _fractional_bits(g) -> int:
    """Most .spz fixed-point fraction bits that still fit the scene's coordinates in 24 bits."""
    extent = float(g.means.detach().abs().max()) if g.num else 0.0
    return int(max(0, min(12, 22 - math.ceil(math.log2(extent + 1.0)))))


SH_CHOICES = ["full", "3", "2", "1", "0"]


class SavePLY(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VIST3ASavePLY",
            display_name="Save PLY (VIST3A)",
            category=C.SPLATS,
            description="Saves the Gaussians as a standard 3DGS .ply in ComfyUI's output folder (prefix_00001_.ply, ...), "
                        "readable by SuperSplat, gsplat and Blender add-ons; optionally also the compact .splat and .spz.",
            is_output_node=True,
            inputs=[
                io.Custom("GAUSSIANS").Input("gaussians", tooltip="From Decode Splats, Images to Splats or Load PLY."),
                io.String.Input("filename_prefix", default="VIST3A/splat",
                                tooltip="File name prefix inside output/; may contain a subfolder and %date% style tokens like Save Image."),
                io.Combo.Input("sh_degree", options=SH_CHOICES, default="full",
                               tooltip="Spherical-harmonic bands to write: full keeps all (AnySplat: degree 4); many viewers read at most 3; "
                                       "0 gives the smallest file (view-independent colour)."),
                io.Boolean.Input("also_splat", default=False, tooltip="Also write a .splat (antimatter15 format, 32 bytes per Gaussian, colour only)."),
                io.Boolean.Input("also_spz", default=False, tooltip="Also write an .spz (Niantic's compressed format, SH up to degree 3, ~10x smaller)."),
            ],
            outputs=[io.String.Output(display_name="ply_path", tooltip="Full path of the (first) saved .ply.")],
        )

    @classmethod
    @C.friendly("Save PLY")
    def execute(cls, gaussians, filename_prefix, sh_degree, also_splat, also_spz) -> io.NodeOutput:
        from vist3a.gaussians import save_ply, save_splat
        from vist3a.splat_formats import save_spz

        scenes = C.check_gaussians(gaussians)
        out_dir = folder_paths.get_output_directory()
        try:
            folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir)
        except Exception as exc:
            raise C.NodeError(f"filename_prefix '{filename_prefix}' cannot be used ({exc}); keep it inside the output folder.") from exc
        os.makedirs(folder, exist_ok=True)
        saved, first = [], None
        for g in scenes:
            degree = None if sh_degree == "full" else min(int(sh_degree), g.sh_degree)
            base = f"{filename}_{counter:05}_"
            ply = os.path.join(folder, base + ".ply")
            save_ply(g, ply, sh_degree=degree)
            first = first or ply
            saved.append({"filename": base + ".ply", "subfolder": subfolder, "type": "output"})
            if also_splat:
                save_splat(g, os.path.join(folder, base + ".splat"))
                saved.append({"filename": base + ".splat", "subfolder": subfolder, "type": "output"})
            if also_spz:
                save_spz(g, os.path.join(folder, base + ".spz"), sh_degree=degree)
                saved.append({"filename": base + ".spz", "subfolder": subfolder, "type": "output"})
            counter += 1
        return io.NodeOutput(first, ui={"vist3a_files": saved, "text": [first]})


class LoadPLY(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        files = C.input_and_output_files((".ply", ".spz")) or [C.NONE]
        return io.Schema(
            node_id="VIST3ALoadPLY",
            display_name="Load PLY (VIST3A)",
            category=C.SPLATS,
            description="Loads 3D Gaussians from a standard 3DGS .ply (or .spz) in ComfyUI's input/ or output/ folder, or from a path.",
            inputs=[
                io.Combo.Input("file", options=files, default=files[0],
                               tooltip="A .ply/.spz in input/, or one saved in output/ (marked [output]). Refresh (press R) to see new files."),
                io.String.Input("path", default="", optional=True,
                                tooltip="Optional absolute path to a .ply/.spz anywhere on disk; overrides 'file' when set."),
            ],
            outputs=[io.Custom("GAUSSIANS").Output(display_name="gaussians", tooltip="The loaded Gaussians.")],
        )

    @classmethod
    def _resolve(cls, file, path):
        if path and path.strip():
            return os.path.expanduser(path.strip())
        if file == C.NONE:
            raise C.NodeError("No .ply file in input/ or output/; save one with Save PLY, copy one into input/, or give a path.")
        return folder_paths.get_annotated_filepath(file)

    @classmethod
    def fingerprint_inputs(cls, file, path=""):
        try:
            p = cls._resolve(file, path)
            return f"{p}:{os.path.getmtime(p)}"
        except Exception:
            return float("nan")

    @classmethod
    @C.friendly("Load PLY")
    def execute(cls, file, path="") -> io.NodeOutput:
        from vist3a.gaussians import load_ply
        from vist3a.splat_formats import load_spz

        p = cls._resolve(file, path)
        if not os.path.isfile(p):
            raise C.NodeError(f"The file {p} does not exist; check the path or pick a file from the list.")
        g = load_spz(p) if p.lower().endswith(".spz") else load_ply(p)
        return io.NodeOutput([g])


NODES = [RenderViews, PreviewSplats, SavePLY, LoadPLY]
