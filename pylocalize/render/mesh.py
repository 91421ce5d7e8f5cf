"""Triangle meshes for the renderer, and loading them with trimesh.

trimesh is used rather than our own parsers: it reads PLY (ascii/binary, BOP's
``texture_u``/``texture_v`` with a ``TextureFile`` comment), OBJ + MTL and more, and is
well maintained. Units are kept as in the file (BOP models are in millimetres).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np


@dataclass
class Mesh:
    """A triangle mesh with optional per-vertex colours or a UV texture.

    Attributes
    ----------
    vertices : float32 (V, 3)
    faces : int32 (F, 3)
    vertex_normals : float32 (V, 3) or None
        Used for smooth shading and the normal output; face normals otherwise.
    colors : float32 (V, 3) in [0, 1] or None
    uvs : float32 (V, 2) or None
        Texture coordinates, (0, 0) at the bottom-left of the texture.
    texture : uint8 (H, W, 3) or None
    """

    vertices: np.ndarray
    faces: np.ndarray
    vertex_normals: Optional[np.ndarray] = None
    colors: Optional[np.ndarray] = None
    uvs: Optional[np.ndarray] = None
    texture: Optional[np.ndarray] = None

    def __post_init__(self):
        self.vertices = _array(self.vertices, np.float32, "vertices", 3)
        self.faces = _array(self.faces, np.int32, "faces", 3)
        n = len(self.vertices)
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= n):
            raise ValueError(f"faces index vertices out of range 0..{n - 1}")
        if self.vertex_normals is not None:
            self.vertex_normals = _array(self.vertex_normals, np.float32, "vertex_normals", 3, n)
        if self.colors is not None:
            colors = np.asarray(self.colors)
            if colors.dtype == np.uint8:
                colors = colors.astype(np.float32) / 255.0
            self.colors = _array(colors[:, :3], np.float32, "colors", 3, n)
        if (self.uvs is None) != (self.texture is None):
            raise ValueError("a texture needs uvs and uvs need a texture: pass both or neither")
        if self.uvs is not None:
            self.uvs = _array(self.uvs, np.float32, "uvs", 2, n)
            texture = np.asarray(self.texture)
            if texture.ndim == 2:
                texture = np.repeat(texture[:, :, None], 3, axis=2)
            if texture.ndim != 3 or texture.shape[2] < 3 or texture.dtype != np.uint8:
                raise ValueError(f"texture must be uint8 (H, W, 3), got {texture.dtype} {texture.shape}")
            self.texture = np.ascontiguousarray(texture[:, :, :3])

    @property
    def extent(self) -> float:
        """Diameter of the vertices' bounding sphere about their bounding-box centre."""
        lo, hi = self.vertices.min(0), self.vertices.max(0)
        return float(2.0 * np.linalg.norm(self.vertices - (lo + hi) / 2, axis=1).max())

    @property
    def center(self) -> np.ndarray:
        """Centre of the bounding box (float64 (3,))."""
        return ((self.vertices.min(0) + self.vertices.max(0)) / 2).astype(np.float64)

    def simplified(self, cell: float) -> "Mesh":
        """The shape alone, with its vertices merged on a grid of ``cell`` (mesh units):
        vertex clustering. Each vertex moves by at most about ``cell``, triangles that
        collapse go, colours and texture are dropped and normals recomputed. Rendering
        costs time per triangle: a fit that needs only depth, masks and normals renders a
        scan of 50,000 triangles several times faster at a millimetre's loss."""
        if not cell > 0:
            raise ValueError(f"cell must be positive, got {cell}")
        v = self.vertices.astype(np.float64)
        keys = np.floor((v - v.min(0)) / cell).astype(np.int64)
        _, cluster, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        cluster = cluster.reshape(-1)
        merged = np.zeros((len(counts), 3))
        np.add.at(merged, cluster, v)
        merged /= counts[:, None]
        faces = cluster[self.faces]
        faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
        if len(faces):  # the same triangle from several fine ones: keep it once per orientation
            first = np.argmin(faces, axis=1)[:, None]
            faces = np.unique(np.take_along_axis(faces, (first + np.arange(3)) % 3, axis=1), axis=0)
        return Mesh(vertices=merged, faces=faces, vertex_normals=vertex_normals(merged, faces))


def _array(x, dtype, name, cols, rows=None):
    a = np.asarray(x)
    if a.ndim != 2 or a.shape[1] != cols or (rows is not None and a.shape[0] != rows):
        want = f"({rows if rows is not None else 'n'}, {cols})"
        raise ValueError(f"{name} must have shape {want}, got {a.shape}")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return np.ascontiguousarray(a, dtype=dtype)


def load_mesh(path) -> Mesh:
    """Loads a mesh file (PLY, OBJ + MTL, ...) with its colours or texture.

    Scenes with several geometries are concatenated. Vertex normals come from trimesh.

    Raises
    ------
    ValueError
        If the file is missing, unreadable or holds no triangles.
    """
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"mesh file not found: {path}")
    try:
        loaded = trimesh.load(str(path), process=False, force="mesh")
    except Exception as error:  # trimesh raises many types for a broken file
        raise ValueError(f"cannot read mesh {path}: {error}") from error
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise ValueError(f"{path} holds no triangles")
    visual = loaded.visual
    colors = uvs = texture = None
    if visual.kind == "texture" and getattr(visual, "uv", None) is not None:
        image = _texture_image(visual.material)
        if image is not None:
            uvs, texture = np.asarray(visual.uv, dtype=np.float32), image
    if texture is None and visual.kind in ("vertex", "face"):
        colors = np.asarray(visual.vertex_colors)[:, :3]
    vertices = np.asarray(loaded.vertices, dtype=np.float64)
    faces = np.asarray(loaded.faces, dtype=np.int64)
    return Mesh(vertices=vertices, faces=faces, vertex_normals=vertex_normals(vertices, faces),
                colors=colors, uvs=uvs, texture=texture)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (unit; zero for unused vertices), float32 (V, 3)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    face_normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 area
    normals = np.zeros_like(v)
    for k in range(3):
        np.add.at(normals, f[:, k], face_normals)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.where(length > 0, length, 1.0)).astype(np.float32)


def _texture_image(material):
    image = getattr(material, "image", None)
    if image is None:
        image = getattr(material, "baseColorTexture", None)
    if image is None:
        return None
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
