#!/usr/bin/env python3
"""Rendering speed: pylocalize's CPU rasterizer against moderngl on Mesa (llvmpipe).

Two workloads, the ones the pipelines need:
- object templates: a ~20k-triangle textured mesh at 420x420 from Fibonacci viewpoints
  (FoundPose onboarding renders 798 of them), RGB + depth + mask + xyz;
- a scene view: the synthetic courtyard at 1536x1024, RGB + depth.

moderngl runs OpenGL 3.3 through EGL on Mesa's llvmpipe, the strongest renderer that
installs on a machine without a GPU (apt: libegl1 libgl1-mesa-dri; pip: moderngl). It
renders RGB with the same Lambert shading and reads back colour and depth; xyz would need
another pass there, so its template timing is the easier RGB + depth task. The two
renderers' masks are compared (IoU) to show they draw the same thing.

    python benchmarks/bench_render.py [--views 200] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _timing import best_of  # benchmarks/ is not a package: from the script's own folder

import pylocalize
from pylocalize.bench.opengl import ModernGLRenderer
from pylocalize.datasets.synthetic import courtyard_scene, procedural_texture
from pylocalize.geometry import viewpoint_poses
from pylocalize.render import Mesh, Renderer


def textured_sphere(rings=100, segments=100, seed=0) -> Mesh:
    """A UV sphere of 2 * rings * segments triangles with a procedural texture (radius 100)."""
    rng = np.random.default_rng(seed)
    theta = np.linspace(0, np.pi, rings + 1)
    phi = np.linspace(0, 2 * np.pi, segments + 1)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    bump = 1.0 + 0.05 * np.sin(5 * t) * np.cos(7 * p)
    v = 100 * np.stack([np.sin(t) * np.cos(p) * bump, np.sin(t) * np.sin(p) * bump, np.cos(t) * bump], -1)
    uv = np.stack([p / (2 * np.pi), 1 - t / np.pi], -1)
    idx = np.arange((rings + 1) * (segments + 1)).reshape(rings + 1, segments + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    faces = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    return Mesh(v.reshape(-1, 3), faces, uvs=uv.reshape(-1, 2), texture=procedural_texture(rng, 1024, 1024))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=200, help="template views per run")
    parser.add_argument("--threads", default="1,2", help="thread counts for pylocalize")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    try:
        import moderngl  # noqa: F401
        have_gl = True
    except ImportError:
        have_gl = False
    print(f"pylocalize {pylocalize.__version__} | moderngl {'yes' if have_gl else 'not installed'} | "
          f"{pylocalize._core.num_cores()} cores")

    mesh = textured_sphere()
    K = np.array([[500.0, 0, 209.5], [0, 500.0, 209.5], [0, 0, 1]])
    n_views = int(np.ceil(args.views / 14))
    poses = viewpoint_poses(n_views, 14, radius=380.0)[: args.views]
    print(f"\n== templates: {len(mesh.faces):,} triangles, texture {mesh.texture.shape[1]}x{mesh.texture.shape[0]}, "
          f"420x420, {len(poses)} views")
    ours = Renderer(420, 420, K, near=10, far=2000)
    for t in threads:
        pylocalize.set_num_threads(t)
        sec, full = best_of(lambda: ours.render(mesh, poses, outputs=("rgb", "depth", "mask", "xyz")), args.repeat,
                            warmup=True)
        print(f"pylocalize {t} thread(s), rgb+depth+mask+xyz: {len(poses) / sec:8.0f} views/s")
        sec, _ = best_of(lambda: ours.render(mesh, poses, outputs=("rgb", "depth")), args.repeat, warmup=True)
        print(f"pylocalize {t} thread(s), rgb+depth:           {len(poses) / sec:8.0f} views/s")
    if have_gl:
        gl = ModernGLRenderer(mesh, K, 420, 420, 10, 2000)
        sec, (rgb, depth) = best_of(lambda: gl.render(poses), args.repeat, warmup=True)
        print(f"moderngl (llvmpipe), rgb+depth:               {len(poses) / sec:8.0f} views/s")
        gl_mask = depth < 1
        iou = (full.mask & gl_mask).sum() / max(1, (full.mask | gl_mask).sum())
        both = full.mask & gl_mask
        diff = np.abs(full.rgb[both].astype(int) - rgb[both].astype(int)).mean()
        print(f"pylocalize vs moderngl: mask IoU {iou:.4f}, mean |RGB difference| {diff:.1f} / 255")

    t0 = time.perf_counter()
    courtyard_scene(40, seed=0)
    print(f"\n== synthetic scene: courtyard_scene(40 views, 1024x768, 3x3 supersampling) built and "
          f"rendered in {time.perf_counter() - t0:.1f} s ({pylocalize.get_num_threads()} threads)")
    scene = courtyard_scene(8, seed=0, render=False)
    Ks = np.array([[1229.0, 0, 767.5], [0, 1229.0, 511.5], [0, 0, 1]])
    print(f"\n== scene view: courtyard ({len(scene.mesh.faces)} triangles, texture "
          f"{scene.mesh.texture.shape[1]}x{scene.mesh.texture.shape[0]}), 1536x1024, rgb+depth")
    ours = Renderer(1536, 1024, Ks, near=0.05, far=100, ambient=0.6)
    for t in threads:
        pylocalize.set_num_threads(t)
        times = [best_of(lambda: ours.render(scene.mesh, p, outputs=("rgb", "depth")), args.repeat, warmup=True)[0]
                 for p in scene.cam_from_world]
        print(f"pylocalize {t} thread(s): {1e3 * np.median(times):7.1f} ms per view")
    if have_gl:
        gl = ModernGLRenderer(scene.mesh, Ks, 1536, 1024, 0.05, 100, ambient=0.6)
        times = [best_of(lambda: gl.render(p[None]), args.repeat, warmup=True)[0] for p in scene.cam_from_world]
        print(f"moderngl (llvmpipe):  {1e3 * np.median(times):7.1f} ms per view")
    return 0


if __name__ == "__main__":
    sys.exit(main())
