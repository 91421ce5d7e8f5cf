"""The batch renderer: one call renders many poses of one mesh."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from pylocalize import _core
from pylocalize.render.mesh import Mesh

OUTPUTS = ("rgb", "depth", "mask", "xyz", "normals")


@dataclass
class RenderOutput:
    """Rendered buffers for ``n`` views (``None`` where not requested).

    Attributes
    ----------
    rgb : uint8 (n, h, w, 3)
    depth : float32 (n, h, w)
        Camera z in the mesh's units, 0 where nothing was hit.
    mask : bool (n, h, w)
    xyz : float32 (n, h, w, 3)
        Model coordinates of the visible surface, 0 where empty.
    normals : float32 (n, h, w, 3)
        Unit surface normals in the camera frame, facing the camera; 0 where empty.
    """

    rgb: Optional[np.ndarray] = None
    depth: Optional[np.ndarray] = None
    mask: Optional[np.ndarray] = None
    xyz: Optional[np.ndarray] = None
    normals: Optional[np.ndarray] = None


class Renderer:
    """CPU rasterizer for a pinhole camera (OpenCV conventions).

    Parameters
    ----------
    width, height : int
        Image size in pixels.
    K : array_like (3, 3)
        Intrinsics ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``, pixel centres at integers.
    near, far : float
        Clipping distances along the optical axis, in the mesh's units.
    shading : {"lambert", "unlit"}
        Lambert + ambient with the light at the camera, or the raw surface colour.
    ambient : float
        Ambient share of the Lambert intensity, in [0, 1].
    supersample : int
        ``s x s`` samples per pixel for anti-aliased RGB: 1 (off), 3, 5 or 7. Odd, so that
        depth, mask, xyz and normals come from a sample exactly at each pixel centre.
    cull_back : bool
        Skip triangles facing away from the camera (their vertices appear clockwise
        when seen from outside, i.e. normals by the right-hand rule point inwards).
    background : tuple of 3 ints
        RGB of empty pixels.
    """

    def __init__(self, width: int, height: int, K, near: float = 0.01, far: float = 1e5,
                 shading: str = "lambert", ambient: float = 0.3, supersample: int = 1,
                 cull_back: bool = False, background: Sequence[int] = (0, 0, 0)):
        if shading not in ("lambert", "unlit"):
            raise ValueError(f"shading must be 'lambert' or 'unlit', got {shading!r}")
        K = np.ascontiguousarray(np.asarray(K, dtype=np.float64))
        if K.shape != (3, 3):
            raise ValueError(f"K must be 3x3, got shape {K.shape}")
        self.width, self.height = int(width), int(height)
        self.K = K
        self.near, self.far = float(near), float(far)
        self.shading = shading
        self.ambient = float(ambient)
        self.supersample = int(supersample)
        self.cull_back = bool(cull_back)
        self.background = [int(c) for c in background]

    def __repr__(self) -> str:
        return (f"Renderer({self.width}x{self.height}, fx={self.K[0, 0]:.1f}, near={self.near}, "
                f"far={self.far}, shading={self.shading!r}, supersample={self.supersample})")

    def render(self, mesh: Mesh, cam_from_model, outputs: Sequence[str] = OUTPUTS) -> RenderOutput:
        """Renders ``mesh`` from each pose.

        Parameters
        ----------
        mesh : Mesh
        cam_from_model : array_like (n, 3, 4) or (n, 4, 4), or one (3, 4) / (4, 4) pose
        outputs : sequence of str
            Any of ``"rgb", "depth", "mask", "xyz", "normals"``.

        Returns
        -------
        RenderOutput
            Buffers with a leading batch dimension ``n`` (1 for a single pose).
        """
        poses = np.asarray(cam_from_model, dtype=np.float64)
        if poses.ndim == 2:
            poses = poses[None]
        if poses.ndim != 3 or poses.shape[1:] not in ((3, 4), (4, 4)):
            raise ValueError(f"cam_from_model must be (n, 3, 4) or (n, 4, 4), got {poses.shape}")
        poses = np.ascontiguousarray(poses[:, :3, :])
        unknown = set(outputs) - set(OUTPUTS)
        if unknown:
            raise ValueError(f"unknown outputs {sorted(unknown)}: choose from {OUTPUTS}")
        shading = _core.Shading.LAMBERT if self.shading == "lambert" else _core.Shading.UNLIT
        result = _core.render_batch(
            mesh.vertices, mesh.faces, poses, self.K, self.width, self.height, self.near, self.far,
            mesh.vertex_normals, mesh.colors, mesh.uvs, mesh.texture, shading, self.ambient,
            self.supersample, self.cull_back, self.background, list(dict.fromkeys(outputs)))
        return RenderOutput(**result)
