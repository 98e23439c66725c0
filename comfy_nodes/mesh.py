"""Splats to Mesh: a coloured triangle mesh of each scene, saved as .glb / .obj / .ply in output/, for
ComfyUI's Preview 3D (which takes a path under output/) and Save 3D Model (which takes a MESH)."""

from __future__ import annotations

import inspect
import os

import torch

from comfy_api.latest import io

from .errors import NodeError, friendly
from .model_files import output_folder
from .model_memory import pick_device
from .progress import Progress, check_cancel
from .sockets import SPLATS, Cameras, Splat, check_cameras, check_splat

FORMATS = ["glb", "obj", "ply"]
VIEWS = ["auto", "predicted", "orbit"]


def _native_mesh(meshes: list) -> object:
    """Our meshes (glTF axes) as ComfyUI's MESH batch: padded (B, N, 3) vertices and (B, M, 3) faces, with
    per-item counts and vertex colours where this ComfyUI's MESH takes them (0.28+), bare geometry before."""
    from comfy_api.latest import Types

    nv, nf = max(len(m[0]) for m in meshes), max(len(m[1]) for m in meshes)
    verts = torch.zeros(len(meshes), nv, 3)
    faces = torch.zeros(len(meshes), nf, 3, dtype=torch.int64)
    colors = torch.zeros(len(meshes), nv, 3)
    for i, (v, f, c) in enumerate(meshes):
        verts[i, :len(v)], faces[i, :len(f)], colors[i, :len(c)] = torch.from_numpy(v), torch.from_numpy(f), torch.from_numpy(c)
    params = inspect.signature(Types.MESH).parameters
    if "vertex_colors" not in params:
        return Types.MESH(verts, faces)
    from vist3a.formats.mesh_files import srgb_to_linear

    counts = {"vertex_counts": torch.tensor([len(m[0]) for m in meshes]), "face_counts": torch.tensor([len(m[1]) for m in meshes])}
    extra = {"unlit": True} if "unlit" in params else {}
    return Types.MESH(verts, faces, vertex_colors=torch.from_numpy(srgb_to_linear(colors.numpy())).float(), **counts, **extra)


class SplatsToMesh(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VIST3ASplatsToMesh",
            display_name="Splats to Mesh (VIST3A)",
            category=SPLATS,
            description="Turns each scene into a coloured triangle mesh for game engines, Blender and physics: depth rendered "
                        "from the predicted cameras (and views of the far side) is fused into a signed-distance volume, its "
                        "surface is extracted and coloured from the renders. Saves .glb/.obj/.ply in output/; connect mesh_path "
                        "to Preview 3D, or mesh to Save 3D Model.",
            is_output_node=True,
            inputs=[
                Splat.Input("splat", tooltip="Any SPLAT: Decode Splats, Images to Splats, Load PLY or a ComfyUI splat node."),
                Cameras.Input("cameras", optional=True,
                                tooltip="Predicted cameras from Decode Splats / Images to Splats: the mesh is fused from what they "
                                        "saw, plus views of the far side. Without them the scene is seen from an orbit."),
                io.Combo.Input("format", options=FORMATS, default="glb",
                               tooltip="glb: Preview 3D, Load 3D, game engines (unlit vertex colours). obj / ply: Blender, MeshLab."),
                io.Combo.Input("views", options=VIEWS, default="auto",
                               tooltip="auto: predicted cameras + views of the far side (an orbit alone without cameras); "
                                       "predicted: only the cameras; orbit: only generated views."),
                io.Int.Input("resolution", default=256, min=32, max=768, step=16,
                             tooltip="Voxels along the longest side of the scene: finer surface, more time and memory (grows as resolution^3)."),
                io.Int.Input("image_size", default=384, min=64, max=2048, step=32,
                             tooltip="Size (longer side) of each depth view rendered for the fusion."),
                io.Int.Input("orbit_views", default=48, min=0, max=512,
                             tooltip="Generated views of the far side (around an object, or all around from the cameras' centre inside a scene)."),
                io.Float.Input("min_component", default=0.01, min=0.0, max=0.99, step=0.005,
                               tooltip="Drop pieces with fewer faces than this fraction of the largest piece (floaters); 0 keeps all."),
                io.String.Input("filename_prefix", default="VIST3A/mesh",
                                tooltip="File name prefix inside output/; may contain a subfolder, like Save Image."),
            ],
            outputs=[
                io.String.Output(display_name="mesh_path",
                                 tooltip="Path of the (first) mesh relative to output/: what Preview 3D's model_file takes."),
                io.Mesh.Output(display_name="mesh", tooltip="The meshes as ComfyUI's MESH (glTF axes), for Save 3D Model."),
            ],
        )

    @classmethod
    @friendly("Splats to Mesh")
    def execute(cls, splat, format, views, resolution, image_size, orbit_views, min_component, filename_prefix,
                cameras=None) -> io.NodeOutput:
        from vist3a.formats.mesh_files import write_mesh
        from vist3a.mesh import check_mesh_dependencies, mesh_topology, splats_to_mesh

        check_mesh_dependencies(write=True)
        scenes = check_splat(splat)
        cams = check_cameras(cameras)
        if views == "predicted" and cams is None:
            raise NodeError("Splats to Mesh is set to 'predicted' views but nothing is connected to 'cameras'; connect "
                              "Decode Splats' cameras output or set views to auto.")
        folder, filename, counter, subfolder = output_folder(filename_prefix)
        device = pick_device("auto")
        bar = Progress(len(scenes) * 1000)
        saved, native, first = [], [], None
        for i, g in enumerate(scenes):
            cs = cams[min(i, len(cams) - 1)] if cams else None

            def step(done, total, i=i):
                check_cancel()
                bar.set(i * 1000 + 1000 * done // max(1, total))

            m = splats_to_mesh(g.to(device), cs, views=views, resolution=resolution, image_size=image_size,
                               extra_views=orbit_views, min_component=min_component, progress=step)
            name = f"{filename}_{counter:05}_.{format}"
            write_mesh(m, os.path.join(folder, name))
            rel = f"{subfolder}/{name}" if subfolder else name
            first = first or rel
            topo = mesh_topology(m.vertices, m.faces)
            print(f"[VIST3A] Splats to Mesh: {rel}: {topo.faces} faces, {topo.components} piece(s), "
                  f"{topo.boundary_loops} hole(s), genus {topo.genus:g} ({m.info['view_description']})")
            saved.append({"filename": name, "subfolder": subfolder, "type": "output"})
            native.append((m.vertices * [-1.0, -1.0, 1.0], m.faces, m.colors))  # glTF axes, as the files
            counter += 1
        return io.NodeOutput(first, _native_mesh(native), ui={"vist3a_files": saved, "text": [first]})


NODES = [SplatsToMesh]
