"""The rasterizer against analytic scenes, a trimesh ray-cast, and its own invariants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

import pylocalize
from pylocalize.geometry import fibonacci_sphere, look_at, viewpoint_poses
from pylocalize.render import Mesh, Renderer, load_mesh

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
W, H = 160, 120
K = np.array([[150.0, 0.0, 79.5], [0.0, 150.0, 59.5], [0.0, 0.0, 1.0]])
IDENTITY = np.hstack([np.eye(3), np.zeros((3, 1))])


def quad(z=2.0, half=10.0, uv=False, texture=None):
    v = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]], np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    if uv:  # (0, 0) at the texture's bottom-left; camera y points down
        uvs = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float32)
        return Mesh(v, f, uvs=uvs, texture=texture)
    return Mesh(v, f)


def cube(size=1.0):
    h = size / 2
    v = np.array([[x, y, z] for x in (-h, h) for y in (-h, h) for z in (-h, h)], np.float32)
    # outward normals by the right-hand rule
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]], np.int32)
    return Mesh(v, f)


def pixel_grid():
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    return u, v


def test_fronto_parallel_plane_has_exact_depth():
    out = Renderer(W, H, K).render(quad(z=2.5), IDENTITY)
    assert out.mask.all()
    np.testing.assert_allclose(out.depth[0], 2.5, rtol=1e-6)
    assert out.rgb.shape == (1, H, W, 3) and out.xyz.shape == (1, H, W, 3)


def grid_plane(n, half, z):
    """A square of side 2 * half at depth z, cut into n x n quads of two triangles each."""
    t = np.linspace(-half, half, n + 1)
    x, y = np.meshgrid(t, t)
    v = np.stack([x.ravel(), y.ravel(), np.full(x.size, z)], 1).astype(np.float32)
    i = (np.arange(n)[:, None] * (n + 1) + np.arange(n)[None, :]).ravel()
    f = np.concatenate([np.stack([i, i + 1, i + n + 2], 1), np.stack([i, i + n + 2, i + n + 1], 1)])
    return Mesh(v, f.astype(np.int32))


def test_many_small_faces_cover_every_sample_once_across_row_chunks():
    # Faces are drawn chunk by chunk of rows; at supersample 3 this image has about ten
    # chunks, and small faces straddle their borders. A hole or a face drawn only in one
    # chunk would leave background in some sample of an interior pixel.
    z, half = 3.0, 0.9  # edges project to u = 34.5 and 124.5, between pixel centres
    out = Renderer(W, H, K, shading="unlit", supersample=3).render(grid_plane(37, half, z), IDENTITY)
    u, v = pixel_grid()
    x, y = (u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z
    inside = (np.abs(x) < half) & (np.abs(y) < half)
    np.testing.assert_array_equal(out.mask[0], inside)
    np.testing.assert_allclose(out.depth[0][inside], z, rtol=1e-6)
    np.testing.assert_allclose(out.xyz[0][inside], np.stack([x, y, np.full_like(x, z)], -1)[inside], atol=1e-5)
    interior = (np.abs(x) < half - 1.5 * z / K[0, 0]) & (np.abs(y) < half - 1.5 * z / K[1, 1])
    assert interior.sum() > 5000 and (out.rgb[0][interior] == 204).all()  # default colour 0.8, every sample
    assert (out.rgb[0][~inside & ~np.roll(inside, 1, 0) & ~np.roll(inside, -1, 0)] == 0).all()


def test_tilted_plane_depth_matches_ray_plane_intersection():
    R = look_at([0.3, -0.4, -3.0], [0, 0, 0], up=[0, -1, 0])
    mesh = quad(z=0.0, half=5.0)
    out = Renderer(W, H, K).render(mesh, R)
    u, v = pixel_grid()
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    # plane z_model = 0 in camera frame: n_c . x = d with n_c = R[:, 2], d = n_c . t
    n_c, t = R[:, 2], R[:, 3]
    z = (n_c @ t) / (rays @ n_c)
    np.testing.assert_allclose(out.depth[0][out.mask[0]], z[out.mask[0]], rtol=1e-4)


def cross2(a, b):
    return a[0] * b[1] - a[1] * b[0]


def convex_hull(points):
    pts = sorted(map(tuple, points))
    def half(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and cross2(np.subtract(out[-1], out[-2]), np.subtract(p, out[-2])) <= 0:
                out.pop()
            out.append(p)
        return out
    lower, upper = half(pts), half(reversed(pts))
    return np.array(lower[:-1] + upper[:-1])


def signed_distance_to_hull(hull, pts):
    """Distance inside (+) or outside (-) a counter-clockwise convex polygon."""
    d = np.full(len(pts), np.inf)
    for a, b in zip(hull, np.roll(hull, -1, axis=0)):
        e = b - a
        n = np.array([-e[1], e[0]]) / np.linalg.norm(e)
        d = np.minimum(d, (pts - a) @ n)
    return d


@pytest.mark.parametrize("seed", range(4))
def test_cube_silhouette_within_a_pixel_of_projected_corners(seed):
    rng = np.random.default_rng(seed)
    eye = fibonacci_sphere(7)[seed] * 4.0 + rng.normal(0, 0.2, 3)
    pose = look_at(eye, rng.normal(0, 0.1, 3))
    mesh = cube(1.5)
    out = Renderer(W, H, K).render(mesh, pose)
    cam = mesh.vertices @ pose[:, :3].T + pose[:, 3]
    proj = (cam @ K.T)[:, :2] / cam[:, 2:]
    hull = convex_hull(proj)
    u, v = pixel_grid()
    sd = signed_distance_to_hull(hull, np.stack([u.ravel(), v.ravel()], 1)).reshape(H, W)
    mask = out.mask[0]
    assert mask.sum() > 100
    assert (sd[mask] >= -1.0).all(), "mask pixel more than a pixel outside the silhouette"
    assert mask[sd >= 1.0].all(), "pixel well inside the silhouette left empty"


def test_xyz_reprojects_to_its_pixel_and_depth():
    pose = look_at([2.0, 1.5, -2.5], [0, 0, 0])
    out = Renderer(W, H, K).render(cube(1.2), pose)
    m = out.mask[0]
    xyz = out.xyz[0][m].astype(np.float64)
    cam = xyz @ pose[:, :3].T + pose[:, 3]
    proj = (cam @ K.T)[:, :2] / cam[:, 2:]
    u, v = pixel_grid()
    np.testing.assert_allclose(proj[:, 0], u[m], atol=2e-3)
    np.testing.assert_allclose(proj[:, 1], v[m], atol=2e-3)
    np.testing.assert_allclose(cam[:, 2], out.depth[0][m], rtol=1e-5)
    # normals are unit, face the camera, and are the cube's axis directions
    n = out.normals[0][m]
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    assert ((n * cam).sum(1) < 0).all()
    n_model = n @ pose[:, :3]
    assert (np.abs(n_model).max(1) > 0.999).all()


def test_texture_orientation():
    tex = np.zeros((64, 64, 3), np.uint8)
    tex[:32, :32] = (255, 0, 0)    # top-left red
    tex[:32, 32:] = (0, 255, 0)    # top-right green
    tex[32:, :32] = (0, 0, 255)    # bottom-left blue
    tex[32:, 32:] = (255, 255, 255)
    half = 2.0 * (W / 2) / K[0, 0] * 0.9  # fills 90% of the width at z = 2
    mesh = quad(z=2.0, half=half, uv=True, texture=tex)
    img = Renderer(W, H, K, shading="unlit").render(mesh, IDENTITY).rgb[0]
    cy, cx = H // 2, W // 2
    assert tuple(img[cy - 20, cx - 30]) == (255, 0, 0)
    assert tuple(img[cy - 20, cx + 30]) == (0, 255, 0)
    assert tuple(img[cy + 20, cx - 30]) == (0, 0, 255)
    assert tuple(img[cy + 20, cx + 30]) == (255, 255, 255)


def raycast(vertices, faces, origin, dirs):
    """Nearest ray parameter per ray (inf on a miss), Moller-Trumbore in numpy."""
    v0, v1, v2 = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    e1, e2 = v1 - v0, v2 - v0
    best = np.full(len(dirs), np.inf)
    for r, d in enumerate(dirs):
        p = np.cross(d, e2)
        det = (e1 * p).sum(1)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = origin - v0
        u = (s * p).sum(1) * inv
        q = np.cross(s, e1)
        v = (q @ d) * inv
        t = (q * e2).sum(1) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        if hit.any():
            best[r] = t[hit].min()
    return best


def test_depth_matches_raycast():
    tm = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    tm.vertices[:, 0] *= 1.5  # an ellipsoid: not symmetric about the view direction
    mesh = Mesh(tm.vertices, tm.faces)
    pose = look_at([1.0, -2.0, -3.0], [0.1, 0.0, 0.0])
    out = Renderer(W, H, K).render(mesh, pose)
    rng = np.random.default_rng(0)
    u = rng.integers(0, W, 300)
    v = rng.integers(0, H, 300)
    R, t = pose[:, :3], pose[:, 3]
    origin = -R.T @ t
    dirs_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(300)], 1)
    dirs = dirs_cam @ R  # to model frame; unit camera z, so the ray parameter is the depth
    t_hit = raycast(np.asarray(tm.vertices), np.asarray(tm.faces), origin, dirs)
    hit = np.isfinite(t_hit)
    assert 50 < hit.sum() < 290
    # pixels whose ray grazes the silhouette may differ; everything else must agree
    agree = out.mask[0][v, u] == hit
    assert agree.mean() > 0.97
    both = hit & out.mask[0][v, u]
    np.testing.assert_allclose(out.depth[0][v, u][both], t_hit[both], rtol=1e-4)


def test_empty_views_are_empty():
    out = Renderer(W, H, K, background=(10, 20, 30)).render(cube(), look_at([0, 0, -5], [0, 0, -10]))
    assert not out.mask.any() and (out.depth == 0).all() and (out.xyz == 0).all()
    assert (out.rgb[0] == (10, 20, 30)).all()


def test_near_plane_clips_geometry():
    # A floor plane running from behind the camera to far ahead.
    v = np.array([[-5, 1, -5], [5, 1, -5], [5, 1, 50], [-5, 1, 50]], np.float32)
    mesh = Mesh(v, np.array([[0, 1, 2], [0, 2, 3]], np.int32))
    out = Renderer(W, H, K, near=0.5).render(mesh, IDENTITY)
    d = out.depth[0][out.mask[0]]
    assert out.mask[0].any() and d.min() >= 0.5 - 1e-5
    u, v = pixel_grid()
    y = (v - K[1, 2]) / K[1, 1]
    expected = np.where(y > 0, 1.0 / np.maximum(y, 1e-9), 0)
    visible = out.mask[0]
    np.testing.assert_allclose(out.depth[0][visible], expected[visible], rtol=1e-4)
    assert not visible[(expected < 0.5) | (expected > 50)].any()


def test_back_face_culling():
    pose = look_at([2.0, 2.0, -3.0], [0, 0, 0])
    mesh = cube()
    plain = Renderer(W, H, K).render(mesh, pose)
    culled = Renderer(W, H, K, cull_back=True).render(mesh, pose)
    np.testing.assert_array_equal(plain.mask, culled.mask)
    np.testing.assert_array_equal(plain.depth, culled.depth)
    inside_out = Mesh(mesh.vertices, mesh.faces[:, ::-1].copy())
    seen_from_inside = Renderer(W, H, K, cull_back=True).render(inside_out, pose)
    # with reversed winding only the far (inner) side remains: deeper than the front
    assert seen_from_inside.mask.sum() > 0
    both = seen_from_inside.mask & plain.mask
    assert (seen_from_inside.depth[both] > plain.depth[both]).all()


def test_batches_threads_and_supersampling_agree():
    poses = viewpoint_poses(5, 3, radius=4.0)
    mesh = cube(1.3)
    r = Renderer(W, H, K)
    old = pylocalize.get_num_threads()
    try:
        pylocalize.set_num_threads(1)
        batch = r.render(mesh, poses)
        pylocalize.set_num_threads(2)
        batch2 = r.render(mesh, poses)
        single = r.render(mesh, poses[4])  # one view: split into bands of rows
    finally:
        pylocalize.set_num_threads(old)
    for name in ("rgb", "depth", "mask", "xyz", "normals"):
        np.testing.assert_array_equal(getattr(batch, name), getattr(batch2, name))
        np.testing.assert_array_equal(getattr(batch, name)[4], getattr(single, name)[0])
    ss = Renderer(W, H, K, supersample=3).render(mesh, poses)
    np.testing.assert_array_equal(ss.mask, batch.mask)  # odd s: the centre sample is the pixel centre
    np.testing.assert_allclose(ss.depth, batch.depth, rtol=1e-6)
    edge = batch.mask != np.roll(batch.mask, 1, axis=2)
    assert (ss.rgb != batch.rgb).any(axis=-1)[edge].mean() > 0.5  # edges are anti-aliased


def test_lambert_shading_follows_the_view_angle():
    c = np.full((4, 3), 1.0, np.float32)
    mesh = quad(z=2.0)
    mesh = Mesh(mesh.vertices, mesh.faces, colors=c)
    img = Renderer(W, H, K, ambient=0.2).render(mesh, IDENTITY).rgb[0, :, :, 0].astype(np.float64)
    u, v = pixel_grid()
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    cos = 1.0 / np.linalg.norm(rays, axis=-1)
    np.testing.assert_allclose(img, 255 * (0.2 + 0.8 * cos), atol=1.0)


def test_viewpoints():
    d = fibonacci_sphere(57)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0)
    cosines = d @ d.T - 2 * np.eye(57)
    assert np.degrees(np.arccos(cosines.max())) > 20  # well spread
    poses = viewpoint_poses(57, 14, radius=3.0, center=(1, 2, 3))
    assert poses.shape == (798, 3, 4)
    R, t = poses[:, :, :3], poses[:, :, 3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0)
    centers = -np.einsum("nji,nj->ni", R, t)
    np.testing.assert_allclose(np.linalg.norm(centers - [1, 2, 3], axis=1), 3.0)
    target_cam = np.einsum("nij,j->ni", R, np.array([1.0, 2, 3])) + t
    np.testing.assert_allclose(target_cam[:, :2], 0, atol=1e-9)  # target on the optical axis
    # in-plane rotations of one viewpoint differ only by a roll about z
    roll = R[1] @ R[0].T
    np.testing.assert_allclose(np.degrees(np.arctan2(roll[1, 0], roll[0, 0])), 360 / 14)


def test_bad_inputs():
    r = Renderer(W, H, K)
    with pytest.raises(ValueError, match="out of range"):
        Mesh(np.zeros((3, 3)), [[0, 1, 3]])
    with pytest.raises(ValueError, match="NaN"):
        Mesh(np.full((3, 3), np.nan), [[0, 1, 2]])
    with pytest.raises(ValueError, match="both or neither"):
        Mesh(np.zeros((3, 3)), [[0, 1, 2]], uvs=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="cam_from_model"):
        r.render(cube(), np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="near < far"):
        Renderer(W, H, K, near=2, far=1).render(cube(), IDENTITY)
    with pytest.raises(ValueError, match="K must be 3x3"):
        Renderer(W, H, np.eye(4))
    with pytest.raises(ValueError, match="supersample must be 1, 3, 5 or 7"):
        Renderer(W, H, K, supersample=2).render(cube(), IDENTITY)
    with pytest.raises(ValueError, match="unknown outputs"):
        r.render(cube(), IDENTITY, outputs=("rgb", "albedo"))
    with pytest.raises(ValueError, match="not found"):
        load_mesh("/nonexistent/mesh.ply")


@pytest.mark.skipif(not (SHARED / "objects").is_dir(), reason="needs ../shared/data")
def test_load_real_meshes_with_texture_and_vertex_colours():
    hope = load_mesh(SHARED / "objects/hope/hope_000002.ply")
    assert hope.texture is not None and hope.uvs is not None and hope.texture.shape[2] == 3
    can = load_mesh(SHARED / "objects/linemod_can/obj_000005.ply")
    assert can.colors is not None and can.texture is None
    for mesh in (hope, can):
        poses = viewpoint_poses(4, 1, radius=1.2 * mesh.extent, center=mesh.center)
        out = Renderer(W, H, K, near=1.0, far=1e5).render(mesh, poses)
        assert out.mask.mean(axis=(1, 2)).min() > 0.05  # the object is in every view
        colours = out.rgb[out.mask]
        assert colours.std(axis=0).max() > 10  # textured / coloured, not flat grey


def test_obj_with_mtl_texture(tmp_path):
    tex = np.zeros((8, 8, 3), np.uint8)
    tex[:4] = (250, 10, 10)
    tex[4:] = (10, 10, 250)
    Image.fromarray(tex).save(tmp_path / "tex.png")
    (tmp_path / "quad.mtl").write_text("newmtl m\nmap_Kd tex.png\n")
    (tmp_path / "quad.obj").write_text(
        "mtllib quad.mtl\nusemtl m\n"
        "v -1 -1 3\nv 1 -1 3\nv 1 1 3\nv -1 1 3\n"
        "vt 0 1\nvt 1 1\nvt 1 0\nvt 0 0\n"
        "f 1/1 2/2 3/3\nf 1/1 3/3 4/4\n")
    mesh = load_mesh(tmp_path / "quad.obj")
    assert mesh.texture is not None
    img = Renderer(W, H, K, shading="unlit").render(mesh, IDENTITY).rgb[0]
    assert img[H // 2 - 10, W // 2][0] > 200 and img[H // 2 + 10, W // 2][2] > 200


def test_matches_opengl_reference():
    """Image for image against OpenGL (moderngl on EGL; Mesa llvmpipe without a GPU)."""
    pytest.importorskip("moderngl")
    from pylocalize.bench.opengl import ModernGLRenderer
    from pylocalize.datasets.synthetic import procedural_texture

    tm = trimesh.creation.capsule(height=1.0, radius=0.5, count=[24, 24])
    rng = np.random.default_rng(0)
    uv = np.stack([np.arctan2(tm.vertices[:, 1], tm.vertices[:, 0]) / (2 * np.pi) + 0.5,
                   (tm.vertices[:, 2] + 1) / 2], 1)
    mesh = Mesh(tm.vertices, tm.faces, uvs=uv, texture=procedural_texture(rng, 256, 256))
    poses = viewpoint_poses(6, 2, radius=3.0)
    try:
        gl = ModernGLRenderer(mesh, K, W, H, 0.1, 10.0)
    except Exception as error:  # no EGL / Mesa on this machine
        pytest.skip(f"no OpenGL context: {error}")
    gl_rgb, gl_depth = gl.render(poses)
    out = Renderer(W, H, K, near=0.1, far=10.0).render(mesh, poses)
    gl_mask = gl_depth < 1
    assert (out.mask == gl_mask).mean() > 0.995  # only silhouette pixels may differ
    both = out.mask & gl_mask
    assert np.abs(out.rgb[both].astype(int) - gl_rgb[both].astype(int)).mean() < 2.0


def _ellipsoid(subdivisions=5, axes=(60.0, 42.0, 30.0)):
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    vertices = sphere.vertices * np.asarray(axes)
    from pylocalize.render.mesh import vertex_normals

    return Mesh(vertices, sphere.faces, vertex_normals=vertex_normals(vertices, sphere.faces))


def test_simplified_mesh_keeps_the_shape_within_its_cell():
    mesh = _ellipsoid()  # 20,480 triangles
    cell = 6.0
    coarse = mesh.simplified(cell)
    assert 500 < len(coarse.faces) < len(mesh.faces) // 4
    assert coarse.colors is None and coarse.uvs is None
    K_wide = np.array([[300.0, 0.0, 79.5], [0.0, 300.0, 59.5], [0.0, 0.0, 1.0]])
    renderer = Renderer(W, H, K_wide, cull_back=True)  # culling: the faces must still face outwards
    for eye in fibonacci_sphere(6) * 400.0:
        pose = look_at(eye)
        fine, simple = (renderer.render(m, pose, outputs=("mask", "depth", "normals")) for m in (mesh, coarse))
        both = fine.mask[0] & simple.mask[0]
        assert both.sum() / (fine.mask[0] | simple.mask[0]).sum() > 0.95
        gap = np.abs(fine.depth[0][both] - simple.depth[0][both])
        assert np.median(gap) < 0.25 * cell and np.percentile(gap, 99) < cell  # the rest: grazing rays
        assert np.median(np.sum(fine.normals[0][both] * simple.normals[0][both], -1)) > 0.98
    with pytest.raises(ValueError, match="cell must be positive"):
        mesh.simplified(0.0)
