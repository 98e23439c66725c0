"""Scene meshes from splats: depth rendered from cameras, fused into a TSDF, surface extracted, coloured.

* :mod:`.views` — which cameras (predicted ones, plus views of the far side; ``cameras.json``);
* :mod:`.tsdf` — the truncated signed distance volume and its marching-cubes surface;
* :mod:`.build` — :func:`splats_to_mesh`, the whole path;
* :mod:`.topology` — holes, components, genus (for reports, benchmarks and tests).

Writing mesh files (.glb, .ply, .obj) is :mod:`vist3a.formats.mesh_files`.
"""

from .build import MeshError, SplatMesh, check_mesh_dependencies, mesh_bounds, splats_to_mesh
from .topology import MeshTopology, keep_large_components, mesh_topology
from .views import VIEW_MODES, load_cameras, mesh_views, save_cameras

__all__ = ["MeshError", "SplatMesh", "check_mesh_dependencies", "mesh_bounds", "splats_to_mesh", "MeshTopology", "keep_large_components",
           "mesh_topology", "VIEW_MODES", "load_cameras", "mesh_views", "save_cameras"]
