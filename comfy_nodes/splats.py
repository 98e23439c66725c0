"""Splat nodes: Render Views (-> IMAGE), Preview Splats (interactive viewer in the node, web/),
Save PLY (+ .splat / .spz / .glb) with ComfyUI's counter naming, Load PLY (.ply / .spz / .splat / .glb), and 3D Viewer
Camera (a camera_info that frames the scene in ComfyUI's own 3D nodes)."""

from __future__ import annotations

import os
import uuid

import torch

import folder_paths
from comfy_api.latest import io

from vist3a.formats import OPACITY_MODES

from .errors import NodeError, friendly
from .model_files import NONE, allowed_read_roots, input_and_output_files, output_folder
from .model_memory import pick_device
from .progress import NodeText, Progress, StageTimer, check_cancel, node_text, running_node_id
from .sockets import SPLATS, Cameras, Splat, check_cameras, check_splat, sh_input, to_splat

BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "gray": (0.5, 0.5, 0.5)}
MODES = ["orbit", "predicted cameras", "trajectory", "trajectory depth"]
SPLAT_TIP = ("Any SPLAT, batches too: Decode Splats, Images to Splats, Load PLY, or a ComfyUI splat node "
             "(Get Splat, Transform Splat, Merge Splat...).")


class RenderViews(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VIST3ARenderViews",
            display_name="Render Views (VIST3A)",
            category=SPLATS,
            description="Renders the Gaussians into an IMAGE batch: an orbit around the scene, the predicted cameras, or the "
                        "official trajectory video (10 views interpolated between each pair of predicted cameras) and its "
                        "depth video. Feed it to Preview Image, Save Image or Create Video.",
            inputs=[
                Splat.Input("splat", tooltip=SPLAT_TIP),
                io.Combo.Input("mode", options=MODES, default="orbit",
                               tooltip="orbit: 'views' cameras circling the scene centre. predicted cameras: the poses the decoder "
                                       "predicted for each frame. trajectory / trajectory depth: the official inference's videos, 10 views "
                                       "interpolated between neighbouring predicted cameras, colour or Turbo-coloured depth (need the cameras input)."),
                io.Int.Input("views", default=24, min=1, max=720, tooltip="Number of orbit views (ignored for predicted cameras)."),
                io.Int.Input("width", default=512, min=16, max=4096, step=8, tooltip="Image width in pixels."),
                io.Int.Input("height", default=512, min=16, max=4096, step=8, tooltip="Image height in pixels."),
                io.Float.Input("fov", default=50.0, min=5.0, max=150.0, step=1.0, tooltip="Horizontal field of view of the orbit cameras, degrees."),
                io.Float.Input("elevation", default=15.0, min=-89.0, max=89.0, step=1.0, tooltip="Orbit elevation above the scene centre, degrees."),
                io.Combo.Input("background", options=list(BACKGROUNDS), default="white", tooltip="Background colour behind the splats."),
                Cameras.Input("cameras", optional=True, tooltip="Predicted cameras from Decode Splats / Images to Splats (for 'predicted cameras')."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="Rendered views [N, H, W, 3], all scenes one after another.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @friendly("Render Views")
    def execute(cls, splat, mode, views, width, height, fov, elevation, background, cameras=None) -> io.NodeOutput:
        from vist3a.render import (
            cameras_from_normalized_intrinsics,
            framing_orbit,
            render_gaussians,
        )

        scenes = check_splat(splat)
        cams = check_cameras(cameras)
        if mode != "orbit" and cams is None:
            raise NodeError(f"Render Views is set to '{mode}' but nothing is connected to 'cameras'; connect "
                              "Decode Splats' cameras output or switch mode to orbit.")
        if mode.startswith("trajectory"):
            return io.NodeOutput(cls._trajectory(scenes, cams, mode, width, height, BACKGROUNDS[background]))
        device = pick_device("auto")
        bg = BACKGROUNDS[background]
        jobs = []
        for i, g in enumerate(scenes):
            if mode == "orbit":
                c2w, K = framing_orbit(g, views, width, height, fov, elevation)
            else:
                cs = cams[min(i, len(cams) - 1)]
                c2w, K = cameras_from_normalized_intrinsics(cs.c2w, cs.intrinsics, width, height)
            jobs.append((g, c2w, K))
        total = sum(j[1].shape[0] for j in jobs)
        bar = Progress(total)
        views_done = StageTimer(bar, NodeText(running_node_id(cls)), "Rendering", 0, total, "view")
        out = []
        chunk = 4
        for g, c2w, K in jobs:
            gd = g.to(device)
            for s in range(0, c2w.shape[0], chunk):
                check_cancel()
                with torch.no_grad():
                    rgb, _, _ = render_gaussians(gd, c2w[s:s + chunk].to(device), K[s:s + chunk].to(device), width, height, background=bg)
                out.append(rgb.clamp(0, 1).float().cpu())
                views_done(sum(o.shape[0] for o in out), total)
        return io.NodeOutput(torch.cat(out, 0))


    @classmethod
    def _trajectory(cls, scenes, cams, mode, width, height, bg) -> torch.Tensor:
        from vist3a.render import cameras_from_normalized_intrinsics
        from vist3a.render.trajectory import render_trajectory

        device = pick_device("auto")
        bar = Progress(len(scenes) * 1000)
        text = NodeText(running_node_id(cls))
        out = []
        for i, g in enumerate(scenes):
            cs = cams[min(i, len(cams) - 1)]
            c2w, K = cameras_from_normalized_intrinsics(cs.c2w, cs.intrinsics, width, height)
            views_done = StageTimer(bar, text, f"Rendering scene {i + 1} of {len(scenes)}", i * 1000, (i + 1) * 1000, "view")

            def step(done, total, views_done=views_done):
                check_cancel()
                views_done(done, total)

            rgb, depth = render_trajectory(g.to(device), c2w.to(device), K.to(device), width, height, background=bg, progress=step)
            out.append(depth if mode == "trajectory depth" else rgb)
        return torch.cat(out, 0)


class PreviewSplats(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VIST3APreviewSplats",
            display_name="Preview Splats (VIST3A)",
            category=SPLATS,
            description="Shows the Gaussians in an interactive 3D viewer (Spark) inside the node: drag to orbit, right-drag or "
                        "shift-drag to pan, wheel to zoom, double-click or R to reset, U or the up button to change the up axis, "
                        "F or the button for full screen.",
            is_output_node=True,
            inputs=[
                Splat.Input("splat", tooltip=SPLAT_TIP),
                io.Int.Input("max_splats", default=1_000_000, min=1000, max=20_000_000, step=1000,
                             tooltip="Show at most this many Gaussians (the most visible ones) to keep the browser fast."),
                Cameras.Input("cameras", optional=True,
                                tooltip="Predicted cameras: they give the scene's up axis and the side the viewer starts from "
                                        "(otherwise the up axis is guessed from the splats)."),
            ],
            outputs=[],
        )

    @classmethod
    @friendly("Preview Splats")
    def execute(cls, splat, max_splats, cameras=None) -> io.NodeOutput:
        from vist3a.atomic import atomic_save_bytes
        from vist3a.scene_view import preview_scene

        scenes = check_splat(splat)
        cams = check_cameras(cameras)
        temp = folder_paths.get_temp_directory()
        sub = "vist3a"
        os.makedirs(os.path.join(temp, sub), exist_ok=True)
        items = []
        for i, g in enumerate(scenes):
            if g.num == 0:
                raise NodeError("There are no Gaussians to preview (all pruned?); lower min_opacity.")
            preview = preview_scene(g, max_splats, cams[min(i, len(cams) - 1)] if cams else None)
            name = f"preview_{uuid.uuid4().hex[:12]}.spz"
            atomic_save_bytes(os.path.join(temp, sub, name), preview.spz)
            items.append({"filename": name, "subfolder": sub, "type": "temp", **preview.fields()})
        return io.NodeOutput(ui={"vist3a_splats": items})


SH_CHOICES = ["full", "3", "2", "1", "0"]
GLB_CHOICES = ["none", ".glb", ".spz.glb"]


class SavePLY(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VIST3ASavePLY",
            display_name="Save PLY (VIST3A)",
            category=SPLATS,
            description="Saves the Gaussians as a standard 3DGS .ply in ComfyUI's output folder (prefix_00001_.ply, ...), "
                        "readable by SuperSplat, gsplat and Blender add-ons; optionally also the compact .splat and .spz, "
                        "a glTF .glb (KHR_gaussian_splatting) for Babylon.js, PlayCanvas, Cesium and other glTF viewers, and an .html "
                        "page that shows the scene offline from one file.",
            is_output_node=True,
            inputs=[
                Splat.Input("splat", tooltip=SPLAT_TIP),
                io.String.Input("filename_prefix", default="VIST3A/splat",
                                tooltip="File name prefix inside output/; may contain a subfolder and %date% style tokens like Save Image."),
                io.Combo.Input("sh_degree", options=SH_CHOICES, default="3",
                               tooltip="Spherical-harmonic bands to write: 3 (default) is the most SuperSplat, Spark and the 3DGS viewers "
                                       "read; full keeps all the SPLAT carries (degree 4 from AnySplat when its producer's sh_degree is "
                                       "full; refused by those viewers); 0 gives the smallest file."),
                io.Boolean.Input("also_splat", default=False, tooltip="Also write a .splat (antimatter15 format, 32 bytes per Gaussian, colour only)."),
                io.Boolean.Input("also_spz", default=False, tooltip="Also write an .spz (Niantic's compressed format, SH up to degree 3, ~10x smaller)."),
                io.Combo.Input("also_glb", options=GLB_CHOICES, default="none", optional=True,
                               tooltip="Also write a glTF .glb with Khronos KHR_gaussian_splatting (Babylon.js, PlayCanvas, Cesium; SH up to "
                                       "degree 3, full float precision), or .spz.glb: the same with SPZ compression inside (draft extension, ~10x smaller)."),
                io.Boolean.Input("also_html", default=False, optional=True,
                                 tooltip="Also write an .html page with the viewer and the scene inside: one file to share, opens "
                                         "offline with a double-click in any current browser (SH up to degree 3)."),
                Cameras.Input("cameras", optional=True, tooltip="Predicted cameras: the .html page starts from their side and up axis."),
            ],
            outputs=[io.String.Output(display_name="ply_path", tooltip="Full path of the (first) saved .ply.")],
        )

    @classmethod
    @friendly("Save PLY")
    def execute(cls, splat, filename_prefix, sh_degree, also_splat, also_spz, also_glb="none", also_html=False,
                cameras=None) -> io.NodeOutput:
        from vist3a.formats import save_ply, save_splat, write_splats
        from vist3a.formats.spz import save_spz
        from vist3a.share_html import save_html

        scenes = check_splat(splat)
        cams = check_cameras(cameras)
        folder, filename, counter, subfolder = output_folder(filename_prefix)
        saved, first = [], None
        for i, g in enumerate(scenes):
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
            if also_glb in (".glb", ".spz.glb"):
                write_splats(g, os.path.join(folder, base + also_glb), sh_degree=degree)
                saved.append({"filename": base + also_glb, "subfolder": subfolder, "type": "output"})
            if also_html:
                cs = cams[min(i, len(cams) - 1)] if cams else None
                save_html(g, os.path.join(folder, base + ".html"), sh_degree=degree, cameras=cs)
                saved.append({"filename": base + ".html", "subfolder": subfolder, "type": "output"})
            counter += 1
        return io.NodeOutput(first, ui={"vist3a_files": saved, "text": [first]})


class LoadPLY(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        files = input_and_output_files((".ply", ".spz", ".splat", ".glb")) or [NONE]
        return io.Schema(
            node_id="VIST3ALoadPLY",
            display_name="Load PLY (VIST3A)",
            category=SPLATS,
            description="Loads 3D Gaussians from a standard 3DGS .ply (or .spz, .splat, or a glTF .glb with KHR_gaussian_splatting) in ComfyUI's "
                        "input/ or output/ folder, or from a path inside ComfyUI's folders.",
            inputs=[
                io.Combo.Input("file", options=files, default=files[0],
                               tooltip="A .ply/.spz/.splat/.glb in input/, or one saved in output/ (marked [output]). Refresh (press R) to see new files."),
                io.String.Input("path", default="", optional=True,
                                tooltip="Optional path to a .ply/.spz/.splat/.glb (absolute, or relative to input/); overrides 'file' when set. Only ComfyUI's "
                                        "input/output/temp and model folders are readable, plus folders the server operator lists in VIST3A_EXTRA_READ_ROOTS."),
                io.Combo.Input("opacity", options=list(OPACITY_MODES), default="auto", optional=True,
                               tooltip="How a .ply stores opacity: logit (standard 3DGS), linear (the official VIST3A exporter, DC colour "
                                       "only), auto: linear when there is no f_rest and every opacity lies in [0, 1]."),
                sh_input(),
            ],
            outputs=[Splat.Output(display_name="splat", tooltip="The loaded Gaussians (SPLAT, connects to ComfyUI's splat nodes too).")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def _resolve(cls, file, path):
        """The file to read, resolved and inside ComfyUI's folders (or the operator's extra roots)."""
        from vist3a.read_roots import check_read_path

        if path and path.strip():
            p = os.path.join(folder_paths.get_input_directory(), os.path.expanduser(path.strip()))  # relative: to input/
        elif file == NONE:
            raise NodeError("No .ply file in input/ or output/; save one with Save PLY, copy one into input/, or give a path.")
        else:
            p = folder_paths.get_annotated_filepath(file)
        return str(check_read_path(p, allowed_read_roots()))

    @classmethod
    def fingerprint_inputs(cls, file, path="", opacity="auto", sh_degree="3"):
        try:
            p = cls._resolve(file, path)
            return f"{p}:{os.path.getmtime(p)}:{opacity}:{sh_degree}"
        except Exception:
            return float("nan")

    @classmethod
    @friendly("Load PLY")
    def execute(cls, file, path="", opacity="auto", sh_degree="3") -> io.NodeOutput:
        from vist3a.formats import read_splats

        p = cls._resolve(file, path)
        if not os.path.isfile(p):
            raise NodeError(f"The file {p} does not exist; check the path or pick a file from the list.")
        g = read_splats(p, opacity=opacity, report=cls._say)  # the format follows the extension
        return io.NodeOutput(to_splat([g], sh_degree))

    @classmethod
    def _say(cls, message: str) -> None:
        """Show a reading note on the node (progress text) and in the console."""
        print(f"[VIST3A] Load PLY: {message}")
        node_text(message, running_node_id(cls))


class ViewerCamera(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VIST3AViewerCamera",
            display_name="3D Viewer Camera (VIST3A)",
            category=SPLATS,
            description="A camera_info that frames the scene in ComfyUI's own 3D nodes (Preview Splat, Save Splat, Render Splat, "
                        "Preview 3D): the scene's robust bounds fill the view, seen from the side of the first predicted camera. "
                        "Without it those viewers keep their last camera, where a generated scene is a speck.",
            inputs=[
                Splat.Input("splat", tooltip=SPLAT_TIP + " The first scene of a batch is framed."),
                io.Float.Input("fov", default=35.0, min=10.0, max=120.0, step=1.0,
                               tooltip="Vertical field of view the viewer draws with, degrees (ComfyUI's 3D viewer: 35)."),
                Cameras.Input("cameras", optional=True,
                              tooltip="Predicted cameras from Decode Splats / Images to Splats: the view starts on the side of the first one."),
            ],
            outputs=[io.Load3DCamera.Output(display_name="camera_info",
                                            tooltip="Connect to camera_info of Preview Splat / Save Splat (ComfyUI 0.28+).")],
        )

    @classmethod
    @friendly("3D Viewer Camera")
    def execute(cls, splat, fov, cameras=None) -> io.NodeOutput:
        from vist3a.scene_view import threejs_start_camera

        scenes = check_splat(splat)
        cams = check_cameras(cameras)
        if not scenes or scenes[0].num == 0:
            raise NodeError("There are no Gaussians to frame (all pruned?); lower min_opacity.")
        return io.NodeOutput(threejs_start_camera(scenes[0], cams[0].c2w if cams else None, fov_y_deg=fov))


NODES = [RenderViews, PreviewSplats, SavePLY, LoadPLY, ViewerCamera]
