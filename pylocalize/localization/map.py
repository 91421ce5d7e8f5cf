"""Maps from posed images, and query localization: CANN retrieval, 2D-3D matching, PnP.

A map is built from images with known intrinsics and ``cam_from_world`` poses: SIFT
features, matches between nearby cameras (mutual nearest neighbours, ratio test, and the
epipolar constraint of the known poses), tracks by union-find, linear triangulation with
reprojection and angle checks. Every database feature goes into a :class:`CANNIndex`.

A query is localized by retrieving the best database images with CANN, matching its
features to the 3D-point features of those images (ratio test), and estimating the pose
with pycolmap's LO-RANSAC + non-linear refinement. A query that cannot be localized gives
``success=False`` and the reason, never an exception.

Conventions: OpenCV pixels (centres at integers) and ``cam_from_world`` 3x4; pycolmap's
pixel convention (+0.5) is handled at its boundary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from pylocalize.features import extract_sift
from pylocalize.index.cann import CANNIndex


@dataclass
class LocalizationResult:
    """Outcome of :meth:`Map.localize`.

    Attributes
    ----------
    success : bool
    cam_from_world : float64 (3, 4) or None
    num_inliers, num_matches : int
    inlier_mask : bool (num_matches,) or None
    retrieved : list of str
        Database images returned by retrieval, best first.
    reason : str
        Why localization failed (empty on success).
    timings : dict
        Seconds per stage.
    """

    success: bool
    cam_from_world: Optional[np.ndarray] = None
    num_inliers: int = 0
    num_matches: int = 0
    inlier_mask: Optional[np.ndarray] = None
    retrieved: List[str] = field(default_factory=list)
    reason: str = ""
    timings: Dict[str, float] = field(default_factory=dict)


def _match(da: np.ndarray, db: np.ndarray, ratio: float) -> np.ndarray:
    """Mutual nearest neighbours passing the ratio test: (m, 2) index pairs."""
    if len(da) < 2 or len(db) < 2:
        return np.zeros((0, 2), np.int64)
    a, b = da.astype(np.float32), db.astype(np.float32)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    nn = np.argpartition(d2, 1, axis=1)[:, :2]
    first = np.take_along_axis(d2, nn, 1)
    order = np.argsort(first, axis=1)
    nn, first = np.take_along_axis(nn, order, 1), np.take_along_axis(first, order, 1)
    ok = np.sqrt(np.maximum(first[:, 0], 0)) < ratio * np.sqrt(np.maximum(first[:, 1], 0))
    back = np.argmin(d2, axis=0)
    idx = np.flatnonzero(ok & (back[nn[:, 0]] == np.arange(len(a))))
    return np.stack([idx, nn[idx, 0]], 1)


def _fundamental(Ka, Pa, Kb, Pb):
    R = Pb[:, :3] @ Pa[:, :3].T
    t = Pb[:, 3] - R @ Pa[:, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    return np.linalg.inv(Kb).T @ tx @ R @ np.linalg.inv(Ka)


def _sampson(F, xa, xb):
    ha, hb = np.c_[xa, np.ones(len(xa))], np.c_[xb, np.ones(len(xb))]
    Fx, Ftx = ha @ F.T, hb @ F
    return (np.sum(hb * Fx, 1) ** 2) / (Fx[:, 0] ** 2 + Fx[:, 1] ** 2 + Ftx[:, 0] ** 2 + Ftx[:, 1] ** 2 + 1e-12)


class Map:
    """A localization map: posed database images, their features and 3D points."""

    def __init__(self, names, K, cam_from_world, keypoints, descriptors, point_ids, points3D):
        self.names = list(names)
        self.K = np.asarray(K, dtype=np.float64)
        self.cam_from_world = np.asarray(cam_from_world, dtype=np.float64)
        self.keypoints, self.descriptors, self.point_ids = keypoints, descriptors, point_ids
        self.points3D = np.asarray(points3D, dtype=np.float64).reshape(-1, 3)
        self.index = CANNIndex(128, p0=200.0)
        if self.descriptors:
            self.index.add(np.concatenate(self.descriptors),
                           np.concatenate([np.full(len(d), i, np.int64) for i, d in enumerate(self.descriptors)]))

    def __repr__(self) -> str:
        return f"Map({len(self.names)} images, {len(self.points3D)} points)"

    @classmethod
    def from_views(cls, images: Sequence[np.ndarray], K, cam_from_world, names: Sequence[str],
                   max_features: int = 4000, neighbours: int = 8, ratio: float = 0.8,
                   max_epipolar_px: float = 2.0, max_reprojection_px: float = 3.0,
                   min_angle_deg: float = 1.5, progress: bool = False) -> "Map":
        """Builds a map from images with known intrinsics and poses.

        Parameters
        ----------
        images : sequence of uint8 (H, W, 3)
        K : float (3, 3) shared, or (n, 3, 3)
        cam_from_world : float (n, 3, 4)
        names : sequence of str
        neighbours : int
            Each image is matched with this many nearest cameras (by centre distance).
        progress : bool
            Show progress bars.
        """
        from tqdm import tqdm

        n = len(images)
        poses = np.asarray(cam_from_world, dtype=np.float64)
        Ks = np.broadcast_to(np.asarray(K, dtype=np.float64), (n, 3, 3))
        if poses.shape != (n, 3, 4) or len(names) != n:
            raise ValueError("need one cam_from_world (3x4) and one name per image")
        feats = [extract_sift(im, max_features)
                 for im in tqdm(images, desc="map: features", disable=not progress, leave=False)]
        kps = [f[0] for f in feats]
        descs = [f[1] for f in feats]
        centers = -np.einsum("nji,nj->ni", poses[:, :, :3], poses[:, :, 3])
        offsets = np.cumsum([0] + [len(k) for k in kps])
        parent = np.arange(offsets[-1])

        def find(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        done = set()
        for a in tqdm(range(n), desc="map: matching", disable=not progress, leave=False):
            order = np.argsort(np.linalg.norm(centers - centers[a], axis=1))
            for b in order[1:neighbours + 1]:
                pair = (min(a, b), max(a, b))
                if pair in done:
                    continue
                done.add(pair)
                m = _match(descs[a], descs[b], ratio)
                if len(m) == 0:
                    continue
                F = _fundamental(Ks[a], poses[a], Ks[b], poses[b])
                m = m[_sampson(F, kps[a][m[:, 0]], kps[b][m[:, 1]]) < max_epipolar_px ** 2]
                for i, j in m:
                    ra, rb = find(offsets[a] + i), find(offsets[b] + j)
                    if ra != rb:
                        parent[ra] = rb
        roots = np.array([find(x) for x in range(offsets[-1])])
        image_of = np.repeat(np.arange(n), np.diff(offsets))
        point_ids = [np.full(len(k), -1, np.int64) for k in kps]
        points = []
        P = np.einsum("nij,njk->nik", Ks, poses)
        order = np.argsort(roots, kind="stable")
        starts = np.flatnonzero(np.r_[True, roots[order][1:] != roots[order][:-1]])
        for s, e in zip(starts, np.r_[starts[1:], len(order)]):
            members = order[s:e]
            imgs = image_of[members]
            if len(members) < 2 or len(np.unique(imgs)) != len(imgs):
                continue  # a single view, or two features of one image in a track
            local = members - offsets[imgs]
            xy = np.stack([kps[i][j] for i, j in zip(imgs, local)]).astype(np.float64)
            A = np.concatenate([xy[:, :1] * P[imgs, 2] - P[imgs, 0], xy[:, 1:] * P[imgs, 2] - P[imgs, 1]])
            X = np.linalg.svd(A)[2][-1]
            if abs(X[3]) < 1e-12:
                continue
            X = X[:3] / X[3]
            cam = np.einsum("nij,j->ni", poses[imgs, :, :3], X) + poses[imgs, :, 3]
            if (cam[:, 2] <= 0).any():
                continue
            proj = np.einsum("nij,nj->ni", Ks[imgs], cam)
            err = np.linalg.norm(proj[:, :2] / proj[:, 2:] - xy, axis=1)
            rays = centers[imgs] - X
            rays /= np.linalg.norm(rays, axis=1, keepdims=True)
            angle = np.degrees(np.arccos(np.clip((rays @ rays.T).min(), -1, 1)))
            if err.max() > max_reprojection_px or angle < min_angle_deg:
                continue
            for i, j in zip(imgs, local):
                point_ids[i][j] = len(points)
            points.append(X)
        return cls(names, Ks, poses, kps, descs, point_ids, np.array(points).reshape(-1, 3))

    @classmethod
    def from_strecha(cls, folder, exclude: Sequence[str] = (), max_features: int = 4000,
                     progress: bool = False) -> "Map":
        """A map from a Strecha folder (``images/*.jpg`` + ``gt_dense_cameras/*.camera``),
        leaving out the image names in ``exclude`` (e.g. held-out queries)."""
        from pathlib import Path

        from PIL import Image

        from pylocalize.localization.evaluate import read_strecha_camera

        folder = Path(folder)
        cams = sorted((folder / "gt_dense_cameras").glob("*.camera"))
        if not cams:
            raise ValueError(f"{folder} has no gt_dense_cameras/*.camera: not a Strecha folder")
        names, images, Ks, poses = [], [], [], []
        for cam in cams:
            name = cam.name[: -len(".camera")]
            if name in exclude:
                continue
            K, pose = read_strecha_camera(cam)
            names.append(name)
            images.append(np.asarray(Image.open(folder / "images" / name).convert("RGB")))
            Ks.append(K)
            poses.append(pose)
        return cls.from_views(images, np.stack(Ks), np.stack(poses), names, max_features=max_features,
                              progress=progress)

    FORMAT_TAG = "LocalizationMap"

    def save(self, path) -> None:
        """Writes the map (images, cameras, poses, features, 3D points) as one pylocalize
        container, atomically. The CANN index is rebuilt from the features on load."""
        import os

        from pylocalize import _core

        counts = np.array([len(k) for k in self.keypoints], np.int64)
        sections = {
            "names": np.frombuffer("\n".join(self.names).encode("utf-8"), np.uint8).copy(),
            "K": np.ascontiguousarray(self.K), "cam_from_world": np.ascontiguousarray(self.cam_from_world),
            "counts": counts,
            "keypoints": np.ascontiguousarray(np.concatenate(self.keypoints) if len(counts) else np.zeros((0, 2), np.float32)),
            "descriptors": np.ascontiguousarray(np.concatenate(self.descriptors) if len(counts) else np.zeros((0, 128), np.uint8)),
            "point_ids": np.ascontiguousarray(np.concatenate(self.point_ids) if len(counts) else np.zeros(0, np.int64)),
            "points3D": np.ascontiguousarray(self.points3D),
        }
        _core.write_container(os.fspath(path), self.FORMAT_TAG, {"num_images": len(self.names)}, sections)

    @classmethod
    def load(cls, path) -> "Map":
        """Reads a map written by :meth:`save`.

        Raises
        ------
        pylocalize.FormatError
            If the file is corrupt, from a newer format version, or not a map.
        """
        import os

        from pylocalize import FormatError, _core

        tag, _, meta, sec = _core.read_container(os.fspath(path))
        if tag != cls.FORMAT_TAG:
            raise FormatError(f"{path} holds a {tag}, not a {cls.FORMAT_TAG}")
        try:
            names = bytes(sec["names"]).decode("utf-8").split("\n") if meta["num_images"] else []
            counts = sec["counts"]
            split = np.cumsum(counts)[:-1]
            if len(names) != meta["num_images"] or len(counts) != len(names) or counts.sum() != len(sec["keypoints"]):
                raise ValueError("section sizes disagree")
            return cls(names, sec["K"], sec["cam_from_world"], np.split(np.array(sec["keypoints"]), split),
                       np.split(np.array(sec["descriptors"]), split), np.split(np.array(sec["point_ids"]), split),
                       sec["points3D"])
        except (KeyError, ValueError) as error:
            raise FormatError(f"{path}: not a valid {cls.FORMAT_TAG} ({error})") from error

    def localize(self, image: np.ndarray, K, k: int = 10, ratio: float = 0.8,
                 max_error_px: float = 4.0, min_inliers: int = 12,
                 max_features: int = 4000) -> LocalizationResult:
        """Estimates the ``cam_from_world`` pose of a query image with intrinsics ``K``."""
        import pycolmap

        timings = {}
        t0 = time.perf_counter()
        try:
            kp, desc = extract_sift(image, max_features)
        except Exception as error:  # a broken image must not stop a batch
            return LocalizationResult(False, reason=f"feature extraction failed: {error}")
        timings["features"] = time.perf_counter() - t0
        if len(kp) < min_inliers:
            return LocalizationResult(False, reason=f"only {len(kp)} features", timings=timings)
        t0 = time.perf_counter()
        _, ids = self.index.search(desc, k)
        retrieved = [int(i) for i in ids if i >= 0]
        timings["retrieval"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cand_desc, cand_pts = [], []
        for i in retrieved:
            has = self.point_ids[i] >= 0
            cand_desc.append(self.descriptors[i][has])
            cand_pts.append(self.point_ids[i][has])
        names = [self.names[i] for i in retrieved]
        if not cand_desc or sum(len(c) for c in cand_pts) < min_inliers:
            return LocalizationResult(False, retrieved=names, reason="retrieved images observe too few 3D points",
                                      timings=timings)
        cand_desc, cand_pts = np.concatenate(cand_desc), np.concatenate(cand_pts)
        m = _match(desc, cand_desc, ratio)
        timings["matching"] = time.perf_counter() - t0
        if len(m) < min_inliers:
            return LocalizationResult(False, num_matches=len(m), retrieved=names,
                                      reason=f"only {len(m)} 2D-3D matches", timings=timings)
        t0 = time.perf_counter()
        K = np.asarray(K, dtype=np.float64)
        camera = pycolmap.Camera(model="PINHOLE", width=int(np.asarray(image).shape[1]),
                                 height=int(np.asarray(image).shape[0]),
                                 params=[K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5])
        options = pycolmap.AbsolutePoseEstimationOptions()
        options.ransac.max_error = max_error_px
        result = pycolmap.estimate_and_refine_absolute_pose(
            kp[m[:, 0]].astype(np.float64) + 0.5, self.points3D[cand_pts[m[:, 1]]], camera, options)
        timings["pose"] = time.perf_counter() - t0
        if result is None or result["num_inliers"] < min_inliers:
            found = 0 if result is None else int(result["num_inliers"])
            return LocalizationResult(False, num_matches=len(m), num_inliers=found, retrieved=names,
                                      reason=f"pose estimation found {found} inliers", timings=timings)
        pose = result["cam_from_world"].matrix()
        return LocalizationResult(True, cam_from_world=np.asarray(pose, dtype=np.float64)[:3],
                                  num_inliers=int(result["num_inliers"]), num_matches=len(m),
                                  inlier_mask=np.asarray(result["inlier_mask"], bool), retrieved=names,
                                  timings=timings)
