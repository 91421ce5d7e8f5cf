"""Procedurally textured synthetic scenes with exact camera poses and depth.

A courtyard: a ground plane, four walls facing inwards and boxes standing on the ground,
every surface covered by its own texture (seeded multi-octave noise, filled shapes and
glyphs: structure at many scales, so SIFT finds distinctive features). Cameras walk a loop
at eye height looking outwards along the walls; query views are drawn near that loop with
new positions and headings. Everything is deterministic from the seed, and the scene
exports as a COLMAP model (cameras and images with ground-truth poses) plus the images
and a pose file, the inputs of the localization pipeline and its tests.

World frame: metres, z up, ground at z = 0. Poses are cam_from_world (OpenCV camera).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np

from pylocalize.containers import write_bytes_atomic
from pylocalize.geometry import look_at, write_pose_file
from pylocalize.geometry.camera import Camera
from pylocalize.render import Mesh, Renderer

ATLAS_W, ATLAS_H = 4096, 2560
BOX_TILE = 512


@dataclass
class SyntheticScene:
    """A textured scene, its camera, and rendered database views.

    Attributes
    ----------
    mesh : Mesh
        The whole scene as one textured mesh (a texture atlas).
    K : float64 (3, 3)
    width, height : int
    names : list of str
        Database image names.
    cam_from_world : float64 (n, 3, 4)
    images : uint8 (n, height, width, 3)
    depths : float32 (n, height, width)
        Metric depth (camera z), 0 where the sky is seen.
    seed : int
    """

    mesh: Mesh
    K: np.ndarray
    width: int
    height: int
    names: List[str] = field(default_factory=list)
    cam_from_world: np.ndarray = field(default_factory=lambda: np.zeros((0, 3, 4)))
    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 3), np.uint8))
    depths: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))
    seed: int = 0
    half_size: float = 10.0
    path_radius: float = 4.5

    @property
    def renderer(self) -> Renderer:
        return Renderer(self.width, self.height, self.K, near=0.05, far=100.0, ambient=0.6,
                        supersample=3, background=(150, 180, 215))

    def render(self, cam_from_world: np.ndarray):
        """Renders views of the scene: ``(images uint8 (n, h, w, 3), depths float32 (n, h, w))``."""
        out = self.renderer.render(self.mesh, cam_from_world, outputs=("rgb", "depth"))
        return out.rgb, out.depth

    def query_poses(self, n: int, seed: int) -> np.ndarray:
        """``n`` new camera poses near the database loop (other positions and headings)."""
        rng = np.random.default_rng([self.seed, seed, 7])
        theta = rng.uniform(0, 2 * np.pi, n)
        radius = self.path_radius + rng.uniform(-0.6, 0.6, n)
        yaw = theta + np.radians(45) + rng.uniform(-np.radians(25), np.radians(25), n)
        height = 1.6 + rng.uniform(-0.2, 0.2, n)
        pitch = np.radians(-8) + rng.uniform(-np.radians(6), np.radians(6), n)
        return _poses(theta, radius, yaw, height, pitch)

    def export(self, out_dir, image_format: str = "jpg") -> Path:
        """Writes ``images/``, a COLMAP model in ``sparse/``, ``poses.txt`` and the cameras
        file ``intrinsics.txt`` (``name MODEL W H PARAMS...``).

        Needs pycolmap for the COLMAP model. Returns ``out_dir``.
        """
        from PIL import Image

        out = Path(out_dir)
        (out / "images").mkdir(parents=True, exist_ok=True)
        for name, image in zip(self.names, self.images):
            Image.fromarray(image).save(out / "images" / name, quality=95)
        write_pose_file(out / "poses.txt", zip(self.names, self.cam_from_world))
        camera = self.camera.to_string()
        write_bytes_atomic(out / "intrinsics.txt", "".join(f"{name} {camera}\n" for name in self.names).encode("utf-8"))
        self.colmap_model().write(str(_mkdir(out / "sparse")))
        return out

    @property
    def camera(self):
        """The shared :class:`~pylocalize.geometry.camera.Camera` of every view (PINHOLE)."""
        return Camera.from_K(self.K, self.width, self.height)

    def colmap_model(self):
        """A ``pycolmap.Reconstruction`` with the camera and the posed database images."""
        import pycolmap

        rec = pycolmap.Reconstruction()
        camera = self.camera.to_pycolmap()
        camera.camera_id = 1
        rec.add_camera_with_trivial_rig(camera)
        for i, (name, pose) in enumerate(zip(self.names, self.cam_from_world), 1):
            image = pycolmap.Image(name=name, camera_id=1, image_id=i)
            rigid = pycolmap.Rigid3d(pycolmap.Rotation3d(pose[:, :3]), pose[:, 3].copy())
            rec.add_image_with_trivial_frame(image, rigid)
        return rec


def courtyard_scene(num_views: int = 40, seed: int = 0, width: int = 1024, height: int = 768,
                    focal: Optional[float] = None, render: bool = True) -> SyntheticScene:
    """Builds the courtyard scene and renders ``num_views`` database views.

    Parameters
    ----------
    num_views : int
        Database cameras, evenly spaced on the loop.
    seed : int
        Textures, box layout and camera jitter all follow from it.
    width, height : int
        Image size; ``focal`` defaults to ``0.8 * width`` (about 64 degrees across).
    render : bool
        Render the database views now (else only the mesh and poses are built).
    """
    rng = np.random.default_rng(seed)
    atlas = _atlas(rng)
    vertices, faces, uvs = _geometry(rng, half=10.0, wall_height=6.0, path_radius=4.5)
    mesh = Mesh(vertices, faces, uvs=uvs, texture=atlas)
    focal = 0.8 * width if focal is None else float(focal)
    K = np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])
    scene = SyntheticScene(mesh=mesh, K=K, width=width, height=height, seed=seed)
    theta = np.linspace(0, 2 * np.pi, num_views, endpoint=False) + rng.uniform(0, 0.05, num_views)
    yaw = theta + np.radians(45)
    scene.cam_from_world = _poses(theta, np.full(num_views, scene.path_radius), yaw,
                                  np.full(num_views, 1.6), np.full(num_views, np.radians(-8)))
    scene.names = [f"db_{i:04d}.jpg" for i in range(num_views)]
    if render:
        scene.images, scene.depths = scene.render(scene.cam_from_world)
    return scene


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _poses(theta, radius, yaw, height, pitch) -> np.ndarray:
    eyes = np.stack([radius * np.cos(theta), radius * np.sin(theta), height], axis=1)
    dirs = np.stack([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)], axis=1)
    return np.stack([look_at(e, e + d, up=(0, 0, 1)) for e, d in zip(eyes, dirs)])


# ---------------------------------------------------------------- textures


def _noise(rng, h, w, cells) -> np.ndarray:
    """Smooth value noise in [0, 1]: a random grid of `cells` across, bicubic upsampled."""
    from PIL import Image

    gh, gw = max(2, int(cells * h / w) + 2), cells + 2
    grid = rng.random((gh, gw)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC), dtype=np.float32)


def procedural_texture(rng, h, w) -> np.ndarray:
    """A tile: coloured multi-octave noise, then shapes and glyphs at many sizes."""
    from PIL import Image, ImageDraw, ImageFont

    base = rng.uniform(40, 215, 3)
    tint = rng.uniform(-90, 90, (3, 3))
    img = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()
    for octave, weight in ((3, 1.0), (9, 0.6), (27, 0.4), (81, 0.3), (243, 0.25)):
        n = np.stack([_noise(rng, h, w, octave) - 0.5 for _ in range(3)], axis=-1)
        img += weight * (n @ tint)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    area = h * w
    for _ in range(area // 2500):
        # log-uniform sizes, mostly small: many corners and blobs for the detector
        size = float(np.exp(rng.uniform(np.log(3), np.log(min(h, w) / 10))))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse([x - size, y - size * rng.uniform(0.4, 1), x + size, y + size], fill=color)
        elif kind == 1:
            draw.rectangle([x - size, y - size * rng.uniform(0.3, 1), x + size, y + size], fill=color,
                           outline=(0, 0, 0) if rng.random() < 0.5 else None)
        else:
            k = int(rng.integers(3, 7))
            angles = np.sort(rng.uniform(0, 2 * np.pi, k))
            pts = [(float(x + size * np.cos(a)), float(y + size * np.sin(a))) for a in angles]
            draw.polygon(pts, fill=color)
    letters = string.ascii_uppercase + string.digits
    for _ in range(area // 12000):
        size = int(rng.integers(10, 60))
        text = "".join(rng.choice(list(letters), int(rng.integers(1, 6))))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.text((float(rng.uniform(0, w)), float(rng.uniform(0, h))), text, fill=color,
                  font=ImageFont.load_default(size=size))
    return np.asarray(pil, dtype=np.uint8)


def _atlas(rng) -> np.ndarray:
    """Ground (2048^2), four walls (2048 x 512 each) and eight box tiles (512^2)."""
    atlas = np.zeros((ATLAS_H, ATLAS_W, 3), np.uint8)
    atlas[:2048, :2048] = procedural_texture(rng, 2048, 2048)
    for k in range(4):
        atlas[512 * k:512 * (k + 1), 2048:] = procedural_texture(rng, 512, 2048)
    for j in range(8):
        atlas[2048:, BOX_TILE * j:BOX_TILE * (j + 1)] = procedural_texture(rng, BOX_TILE, BOX_TILE)
    return atlas


# ---------------------------------------------------------------- geometry


def _uv(px0, py0, px1, py1):
    """Atlas pixel rectangle (top-left origin) to the UVs of its corners, inset by a pixel
    so bilinear sampling never reads the neighbouring tile."""
    px0, py0, px1, py1 = px0 + 1, py0 + 1, px1 - 1, py1 - 1
    u0, u1 = px0 / ATLAS_W, px1 / ATLAS_W
    v0, v1 = 1 - py1 / ATLAS_H, 1 - py0 / ATLAS_H
    return np.array([[u0, v1], [u1, v1], [u1, v0], [u0, v0]])  # tl, tr, br, bl


class _Builder:
    def __init__(self):
        self.vertices, self.faces, self.uvs = [], [], []

    def quad(self, corners, uv):
        """corners: 4 points (tl, tr, br, bl as seen from the front); front = visible side."""
        base = sum(len(v) for v in self.vertices)
        self.vertices.append(np.asarray(corners, dtype=np.float64))
        self.uvs.append(uv)
        self.faces.append(np.array([[0, 1, 2], [0, 2, 3]]) + base)

    def arrays(self):
        return np.concatenate(self.vertices), np.concatenate(self.faces), np.concatenate(self.uvs)


def _geometry(rng, half, wall_height, path_radius):
    b = _Builder()
    L, Hw = half, wall_height
    # Ground, seen from above: tl = (-L, L), tr = (L, L), br = (L, -L), bl = (-L, -L).
    b.quad([[-L, L, 0], [L, L, 0], [L, -L, 0], [-L, -L, 0]], _uv(0, 0, 2048, 2048))
    # Walls face the centre; corners ordered left-to-right as seen from inside.
    walls = [
        [[-L, L, Hw], [L, L, Hw], [L, L, 0], [-L, L, 0]],      # north (y = L)
        [[L, L, Hw], [L, -L, Hw], [L, -L, 0], [L, L, 0]],      # east (x = L)
        [[L, -L, Hw], [-L, -L, Hw], [-L, -L, 0], [L, -L, 0]],  # south (y = -L)
        [[-L, -L, Hw], [-L, L, Hw], [-L, L, 0], [-L, -L, 0]],  # west (x = -L)
    ]
    for k, corners in enumerate(walls):
        b.quad(corners, _uv(2048, 512 * k, 4096, 512 * (k + 1)))
    # Boxes away from the camera loop: some near the centre, some near the walls.
    placed = 0
    while placed < 8:
        r = rng.uniform(0.5, path_radius - 2.0) if placed < 3 else rng.uniform(path_radius + 2.0, L - 1.5)
        a = rng.uniform(0, 2 * np.pi)
        cx, cy = r * np.cos(a), r * np.sin(a)
        sx, sy, sz = rng.uniform(0.6, 2.0), rng.uniform(0.6, 2.0), rng.uniform(0.8, 3.0)
        if max(abs(cx) + sx / 2, abs(cy) + sy / 2) > L - 0.3:
            continue
        _box(b, cx, cy, sx, sy, sz, tile=placed)
        placed += 1
    return b.arrays()


def _box(b, cx, cy, sx, sy, sz, tile):
    x0, x1, y0, y1 = cx - sx / 2, cx + sx / 2, cy - sy / 2, cy + sy / 2
    # Each face takes its own region of the box's tile (3 x 2 grid of 170 x 256 px).
    def region(k):
        col, row = k % 3, k // 3
        px = BOX_TILE * tile + col * 170
        py = 2048 + row * 256
        return _uv(px, py, px + 170, py + 256)
    sides = [
        [[x0, y0, sz], [x1, y0, sz], [x1, y0, 0], [x0, y0, 0]],  # facing -y
        [[x1, y0, sz], [x1, y1, sz], [x1, y1, 0], [x1, y0, 0]],  # facing +x
        [[x1, y1, sz], [x0, y1, sz], [x0, y1, 0], [x1, y1, 0]],  # facing +y
        [[x0, y1, sz], [x0, y0, sz], [x0, y0, 0], [x0, y1, 0]],  # facing -x
    ]
    for k, corners in enumerate(sides):
        b.quad(corners, region(k))
    b.quad([[x0, y1, sz], [x1, y1, sz], [x1, y0, sz], [x0, y0, sz]], region(4))  # top


def textured_box_object(seed: int = 0, size=(80.0, 50.0, 120.0), tile: int = 256):
    """A test object: a box (mm) centred at the origin, each face with its own procedural
    texture, so every view of it is unambiguous. Returns a :class:`~pylocalize.render.Mesh`."""
    rng = np.random.default_rng(seed)
    atlas = np.concatenate([np.concatenate([procedural_texture(rng, tile, tile) for _ in range(3)], 1)
                            for _ in range(2)], 0)
    h, w = atlas.shape[:2]
    sx, sy, sz = (s / 2.0 for s in size)
    # four corners per face, counter-clockwise seen from outside (tl, tr, br, bl)
    faces = [
        [[-sx, -sy, sz], [sx, -sy, sz], [sx, -sy, -sz], [-sx, -sy, -sz]],  # -y
        [[sx, -sy, sz], [sx, sy, sz], [sx, sy, -sz], [sx, -sy, -sz]],  # +x
        [[sx, sy, sz], [-sx, sy, sz], [-sx, sy, -sz], [sx, sy, -sz]],  # +y
        [[-sx, sy, sz], [-sx, -sy, sz], [-sx, -sy, -sz], [-sx, sy, -sz]],  # -x
        [[-sx, sy, sz], [sx, sy, sz], [sx, -sy, sz], [-sx, -sy, sz]],  # +z
        [[-sx, -sy, -sz], [sx, -sy, -sz], [sx, sy, -sz], [-sx, sy, -sz]],  # -z
    ]
    vertices, triangles, uvs = [], [], []
    for k, corners in enumerate(faces):
        col, row = k % 3, k // 3
        u0, u1 = (col * tile + 1) / w, ((col + 1) * tile - 1) / w
        v0, v1 = 1 - ((row + 1) * tile - 1) / h, 1 - (row * tile + 1) / h
        uvs.append([[u0, v1], [u1, v1], [u1, v0], [u0, v0]])
        triangles.append(np.array([[0, 1, 2], [0, 2, 3]]) + 4 * k)
        vertices.append(corners)
    return Mesh(vertices=np.concatenate(vertices).astype(np.float32), faces=np.concatenate(triangles).astype(np.int32),
                uvs=np.concatenate(uvs).astype(np.float32), texture=atlas)
