#!/usr/bin/env python3
"""Model-to-depth fitting (RGB-D object pose): ``refine_with_depth`` against Open3D's ICP.

Scenes with a known pose: each scanned mesh of ../shared/data/objects (the HOPE bottle and
the LINEMOD can, 45,000-50,000 triangles) rendered at a random pose 2.5-6 diameters away, in front of a
tilted table-like plane 100-300 mm behind it, with a patch of the object hidden by an
occluder 50 mm in front of it, and a structured-light camera's faults (noise of 0.5 mm +
1.5 mm x (z / 1 m)^2, millimetre rounding, 3 % holes). Each fit starts from the true pose
turned by a given angle about a random axis and shifted by a given distance, as an RGB
estimate would leave it; the fit is right when it ends within 2 degrees and 5 mm, its
surface right when its ADD-S is under 1 % of the diameter (a turn about a bottle's axis,
which no depth shows, aside).

Peers: Open3D's point-to-plane ICP (``registration_icp``, Cauchy-weighted like ours, the
same starting correspondence distance of a tenth of the diameter and 30 iterations), on
the measured points of the object's box (grown by a tenth, as ``object_region``) with
normals from their 20 nearest neighbours, from two model clouds: 5,000 points sampled on
the whole mesh (its usual use), and the model's surface visible at the start pose (what
ours pairs). Open3D is optional (``pip install open3d``); without it only ours runs.

    python benchmarks/bench_depth_fit.py [--data ../shared/data] [--scenes 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from bench_objects import sensor_depth  # benchmarks/ is not a package: from the script's own folder

from pylocalize.geometry import look_at
from pylocalize.objects import bop
from pylocalize.objects.depth import object_region, refine_with_depth
from pylocalize.objects.evaluate import metric_points
from pylocalize.render import Renderer, load_mesh

K = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]])
W, H = 640, 480
# (degrees, mm) the start is off the truth by
STARTS = ((5.0, 10.0), (10.0, 20.0), (20.0, 30.0))


def _axis_angle(rng, degrees: float) -> np.ndarray:
    import cv2

    axis = rng.normal(size=3)
    return cv2.Rodrigues(axis / np.linalg.norm(axis) * np.deg2rad(degrees))[0]


def make_scene(mesh, rng, distance: float):
    """``(R, t, depth, region)``: the mesh at a random pose ``distance`` diameters away,
    measured as described in the module's docs."""
    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    pose = look_at(mesh.center + d * distance * mesh.extent, mesh.center, up=rng.normal(size=3))
    out = Renderer(W, H, K).render(mesh, pose, outputs=("depth", "mask"))
    depth, mask = out.depth[0].astype(np.float64), out.mask[0]
    # the plane behind: at the object's depth plus 100-300 mm, tilted by up to 0.3 mm per pixel
    v, u = np.mgrid[0:H, 0:W]
    plane = pose[2, 3] + rng.uniform(100, 300) + rng.uniform(-0.3, 0.3) * (u - W / 2) + \
        rng.uniform(-0.3, 0.3) * (v - H / 2)
    depth = np.where(mask, depth, plane)
    ys, xs = np.nonzero(mask)
    w, h = int(0.35 * (xs.max() - xs.min())), int(0.35 * (ys.max() - ys.min()))
    ox, oy = rng.integers(xs.min(), xs.max() - w + 1), rng.integers(ys.min(), ys.max() - h + 1)
    depth[oy:oy + h, ox:ox + w] -= 50.0  # the occluder
    depth = sensor_depth(depth, rng)
    return pose[:, :3], pose[:, 3], depth, object_region(depth.shape, mask=mask)


def errors(R, t, R_true, t_true, points):
    """Rotation error (degrees), translation error and ADD-S (mesh units): the mean distance
    from each model point at the truth to the nearest at the fit, which a turn the depth
    cannot see (about a bottle's axis) leaves near zero."""
    cos = (np.trace(R_true.T @ R) - 1) / 2
    return (float(np.degrees(np.arccos(np.clip(cos, -1, 1)))), float(np.linalg.norm(t - t_true)),
            float(bop.adds(R, t, R_true, t_true, points)))


class Open3DFit:
    """Open3D's point-to-plane ICP from a model cloud (``"whole"``: 5,000 points on the mesh;
    ``"visible"``: the surface rendered at the start pose) to the region's measured points."""

    def __init__(self, o3d, mesh, cloud: str):
        self.o3d, self.mesh, self.cloud = o3d, mesh, cloud
        if cloud == "whole":
            tm = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices.astype(np.float64)),
                                           o3d.utility.Vector3iVector(mesh.faces.astype(np.int32)))
            o3d.utility.random.seed(0)  # the same sample in every run
            self.whole = tm.sample_points_uniformly(5000)

    def __call__(self, depth, region, R, t):
        o3d = self.o3d
        reg = o3d.pipelines.registration
        target = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(_back_projected(depth, region)))
        target.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(20))
        target.orient_normals_towards_camera_location(np.zeros(3))
        if self.cloud == "whole":
            source = self.whole
        else:
            out = Renderer(W, H, K, shading="unlit").render(self.mesh, np.c_[R, t], outputs=("mask", "xyz"))
            source = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(
                out.xyz[0][out.mask[0]][::4].astype(np.float64)))
        extent = float(self.mesh.extent)
        start = np.eye(4)
        start[:3, :3], start[:3, 3] = R, t
        result = reg.registration_icp(
            source, target, 0.1 * extent, start,
            reg.TransformationEstimationPointToPlane(reg.CauchyLoss(k=0.01 * extent)),
            reg.ICPConvergenceCriteria(max_iteration=30))
        return result.transformation[:3, :3], result.transformation[:3, 3]


def _back_projected(depth, region) -> np.ndarray:
    v, u = np.nonzero((depth > 0) & region)
    z = depth[v, u].astype(np.float64)
    return np.c_[(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z]


def run(methods, mesh, scenes):
    """Per method: ``(rotation error, translation error, ADD-S, seconds)`` of each scene's fit."""
    points = metric_points(mesh, 2000)
    out = {}
    for method, fit in methods.items():
        rows = []
        for R, t, depth, region, R0, t0 in scenes:
            start = time.perf_counter()
            if fit is None:
                masked = np.where(region, depth, 0).astype(np.float32)  # as pose_from_depth pairs
                result = refine_with_depth(mesh, K, masked, R0, t0)
                Rf, tf = result.R, result.t
            else:
                Rf, tf = fit(depth, region, R0, t0)
            seconds = time.perf_counter() - start
            rows.append((*errors(Rf, tf, R, t, points), seconds))
        out[method] = np.array(rows)
    return out


def scenes_for(mesh, rng, count: int, degrees: float, mm: float, distance=None):
    scenes = []
    for _ in range(count):
        R, t, depth, region = make_scene(mesh, rng, rng.uniform(2.5, 6.0) if distance is None else distance)
        shift = rng.normal(size=3)
        R0, t0 = _axis_angle(rng, degrees) @ R, t + shift / np.linalg.norm(shift) * mm
        scenes.append((R, t, depth, region, R0, t0))
    return scenes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--scenes", type=int, default=20, help="scenes per object and start offset")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = Path(args.data)
    meshes = {"HOPE bottle": data / "objects" / "hope" / "hope_000002.ply",
              "LINEMOD can": data / "objects" / "linemod_can" / "obj_000005.ply"}
    try:
        import open3d as o3d
    except ImportError:
        o3d = None
        print("open3d is not installed (pip install open3d): only pylocalize runs")
    print("| object | start off by | method | right (2 deg, 5 mm) | surface right (ADD-S < 1 % of the diameter) | "
          "rotation error (right) | translation error (right) | ms per fit |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    sizes = {}
    for name, path in meshes.items():
        mesh = load_mesh(path)
        methods = {"pylocalize refine_with_depth": None}
        if o3d is not None:
            methods.update({"Open3D ICP, whole-model cloud": Open3DFit(o3d, mesh, "whole"),
                            "Open3D ICP, visible-surface cloud": Open3DFit(o3d, mesh, "visible")})
        for degrees, mm in STARTS:
            scenes = scenes_for(mesh, np.random.default_rng([args.seed, int(degrees)]), args.scenes, degrees, mm)
            for method, rows in run(methods, mesh, scenes).items():
                right = (rows[:, 0] < 2.0) & (rows[:, 1] < 5.0)
                rot = f"{np.median(rows[right, 0]):.2f} deg" if right.any() else "-"
                tra = f"{np.median(rows[right, 1]):.2f} mm" if right.any() else "-"
                surface = (rows[:, 2] < 0.01 * mesh.extent).sum()
                print(f"| {name} | {degrees:.0f} deg, {mm:.0f} mm | {method} | {right.sum()}/{len(rows)} | "
                      f"{surface}/{len(rows)} | {rot} | {tra} | {1000 * np.median(rows[:, 3]):.0f} |")
        sizes[name] = (mesh, methods)
    # how the cost grows with the object's size in the image (10 degrees, 20 mm off)
    print("\n| object | diameters away | object pixels | " + " | ".join(f"{m} ms" for m in methods) + " |")
    print("|---|---:|---:|" + "---:|" * len(methods))
    for name, (mesh, methods) in sizes.items():
        for distance in (2.5, 4.0, 6.0, 9.0):
            scenes = scenes_for(mesh, np.random.default_rng([args.seed, 99, int(distance * 10)]), 5, 10.0, 20.0,
                                distance)
            pixels = np.median([Renderer(W, H, K).render(mesh, np.c_[R, t], outputs=("mask",)).mask[0].sum()
                                for R, t, *_ in scenes])
            times = [1000 * np.median(rows[:, 3]) for rows in run(methods, mesh, scenes).values()]
            print(f"| {name} | {distance} | {pixels:.0f} | " + " | ".join(f"{ms:.0f}" for ms in times) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
