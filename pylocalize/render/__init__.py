"""Headless rendering: meshes to RGB, depth, mask, object coordinates and normals.

The rasterizer is the core's (``cpp/pylocalize/render``): CPU only, no display or GPU
driver, batch of poses per call, threads over views or rows with the GIL released.
Meshes load with trimesh (PLY incl. BOP models with vertex colours or ``texture_u/v`` and
a texture image, OBJ + MTL).
"""

from pylocalize.render.mesh import Mesh, load_mesh
from pylocalize.render.renderer import Renderer, RenderOutput

__all__ = ["Mesh", "RenderOutput", "Renderer", "load_mesh"]
