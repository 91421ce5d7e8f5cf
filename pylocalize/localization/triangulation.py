"""3D points from features of images with known cameras and poses.

Pairs of images that see the same part of the scene (nearest camera centres and the best
CANN retrieval candidates) are matched (ratio test + mutual check), matches that break the
epipolar geometry of the known poses are dropped, matches are chained into tracks by
union-find, and every consistent track is triangulated linearly (DLT), then kept only if
it lies in front of every camera, reprojects within a few pixels and is seen under a
large enough angle. Distortion is removed first (:meth:`Camera.undistort`), so the
geometry is that of ideal pinhole cameras.
"""

from __future__ import annotations

import logging
from typing import List, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from pylocalize._log import phase
from pylocalize.features import match_descriptors

logger = logging.getLogger(__name__)


def camera_centres(cam_from_world: np.ndarray) -> np.ndarray:
    return -np.einsum("nji,nj->ni", cam_from_world[:, :, :3], cam_from_world[:, :, 3])


def fundamental_matrix(Ka, Pa, Kb, Pb) -> np.ndarray:
    """F with ``xb^T F xa = 0`` for two cameras with intrinsics K and ``cam_from_world`` P."""
    R = Pb[:, :3] @ Pa[:, :3].T
    t = Pb[:, 3] - R @ Pa[:, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    return np.linalg.inv(Kb).T @ tx @ R @ np.linalg.inv(Ka)


def sampson_distance(F, xa, xb) -> np.ndarray:
    """Squared Sampson distance (pixels^2) of correspondences under F."""
    ha, hb = np.c_[xa, np.ones(len(xa))], np.c_[xb, np.ones(len(xb))]
    Fx, Ftx = ha @ F.T, hb @ F
    return (np.sum(hb * Fx, 1) ** 2) / (Fx[:, 0] ** 2 + Fx[:, 1] ** 2 + Ftx[:, 0] ** 2 + Ftx[:, 1] ** 2 + 1e-12)


def select_pairs(cam_from_world: np.ndarray, neighbours: int,
                 retrieved: Sequence[Sequence[int]] = ()) -> List[Tuple[int, int]]:
    """Image pairs to match: each image with its ``neighbours`` nearest camera centres whose
    viewing directions differ by less than 90 degrees, plus any ``retrieved[i]`` candidates."""
    n = len(cam_from_world)
    centres = camera_centres(cam_from_world)
    axes = cam_from_world[:, 2, :3]
    pairs = set()
    for a in range(n):
        distance = np.linalg.norm(centres - centres[a], axis=1)
        distance[axes @ axes[a] <= 0] = np.inf  # back to back: no overlap expected
        for b in np.argsort(distance)[: neighbours + 1]:
            if b != a and np.isfinite(distance[b]):
                pairs.add((min(a, int(b)), max(a, int(b))))
        for b in (retrieved[a] if len(retrieved) else ()):
            if 0 <= b < n and b != a:
                pairs.add((min(a, int(b)), max(a, int(b))))
    return sorted(pairs)


def triangulate(cameras, cam_from_world: np.ndarray, keypoints: Sequence[np.ndarray],
                descriptors: Sequence[np.ndarray], pairs: Sequence[Tuple[int, int]], ratio: float = 0.8,
                max_epipolar_px: float = 2.0, max_reprojection_px: float = 3.0, min_angle_deg: float = 1.5,
                progress: bool = False, metric: str = "l2") -> Tuple[List[np.ndarray], np.ndarray]:
    """Tracks and 3D points.

    ``metric``: how the descriptors compare (:func:`~pylocalize.features.match_descriptors`),
    ``"l2"`` for SIFT, ``"hamming"`` for binary descriptors such as ORB.

    Returns
    -------
    point_ids : list of int64 (n_i,)
        Per image, the 3D point of each keypoint, -1 for none.
    points3D : float64 (p, 3)
    """
    n = len(cameras)
    poses = np.asarray(cam_from_world, dtype=np.float64)
    Ks = np.stack([c.K for c in cameras]) if n else np.zeros((0, 3, 3))
    xy = [c.undistort(k) for c, k in zip(cameras, keypoints)]
    offsets = np.cumsum([0] + [len(k) for k in keypoints])
    point_ids = [np.full(len(k), -1, np.int64) for k in keypoints]
    if offsets[-1] == 0:
        return point_ids, np.zeros((0, 3))
    with phase(logger, f"map: matching {len(pairs)} image pairs"):
        roots = _track_roots(Ks, poses, xy, descriptors, pairs, offsets, ratio, max_epipolar_px, progress, metric)
    image_of = np.repeat(np.arange(n), np.diff(offsets))
    all_xy = np.concatenate(xy)
    order = np.argsort(roots, kind="stable")
    starts = np.flatnonzero(np.r_[True, roots[order][1:] != roots[order][:-1]])
    lengths = np.diff(np.r_[starts, len(order)])
    points, owners = [], []
    for length in np.unique(lengths[lengths >= 2]):
        members = order[starts[lengths == length][:, None] + np.arange(length)]  # (t, L) features
        imgs = image_of[members]
        consistent = np.array([len(set(row)) == length for row in imgs.tolist()])
        members, imgs = members[consistent], imgs[consistent]  # one feature per image and track
        if len(members) == 0:
            continue
        X, ok = _triangulate_tracks(Ks, poses, all_xy[members], imgs, max_reprojection_px, min_angle_deg)
        points.append(X[ok])
        owners.append(members[ok])
    _assign_point_ids(point_ids, points, owners, image_of, offsets)
    points = np.concatenate(points) if points else np.zeros((0, 3))
    logger.info("map: %s points triangulated in %d images", f"{len(points):,}", n)
    return point_ids, points


def _track_roots(Ks, poses, xy, descriptors, pairs, offsets, ratio, max_epipolar_px, progress,
                 metric) -> np.ndarray:
    """Per feature (numbered across images), the root of its track: features joined by
    ratio-test matches that agree with the known epipolar geometry (union-find)."""
    parent = np.arange(offsets[-1])

    def find(x):
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for a, b in tqdm(pairs, desc="map: matching", disable=not progress, leave=False):
        m = match_descriptors(descriptors[a], descriptors[b], ratio, metric=metric)
        if len(m) == 0:
            continue
        F = fundamental_matrix(Ks[a], poses[a], Ks[b], poses[b])
        m = m[sampson_distance(F, xy[a][m[:, 0]], xy[b][m[:, 1]]) < max_epipolar_px ** 2]
        for i, j in m + offsets[[a, b]]:
            ra, rb = find(i), find(j)
            if ra != rb:
                parent[ra] = rb
    return np.array([find(x) for x in range(offsets[-1])], dtype=np.int64)


def _triangulate_tracks(Ks, poses, x, imgs, max_reprojection_px: float, min_angle_deg: float):
    """Linear (DLT) points of ``t`` tracks of one length ``L`` (``x`` (t, L, 2) undistorted
    pixels seen by images ``imgs`` (t, L)), and which of them pass the checks: in front of
    every camera, reprojected within ``max_reprojection_px``, rays at least ``min_angle_deg``
    apart."""
    P = np.einsum("nij,njk->nik", Ks, poses)
    Pm = P[imgs]  # (t, L, 3, 4)
    A = np.concatenate([x[..., :1] * Pm[:, :, 2] - Pm[:, :, 0], x[..., 1:] * Pm[:, :, 2] - Pm[:, :, 1]], 1)
    A /= np.linalg.norm(A, axis=2, keepdims=True) + 1e-12  # row scaling for conditioning
    X = np.linalg.svd(A)[2][:, -1]
    w = X[:, 3]
    ok = np.abs(w) > 1e-12
    X = X[:, :3] / np.where(ok, w, 1)[:, None]
    cam = np.einsum("tlij,tj->tli", poses[imgs][..., :3], X) + poses[imgs][..., 3]
    ok &= (cam[..., 2] > 0).all(1)
    proj = np.einsum("tlij,tlj->tli", Ks[imgs], cam)
    depth = np.where(np.abs(proj[..., 2:]) > 1e-12, proj[..., 2:], 1e-12)
    err = np.linalg.norm(proj[..., :2] / depth - x, axis=2)
    rays = camera_centres(poses)[imgs] - X[:, None]
    rays /= np.linalg.norm(rays, axis=2, keepdims=True) + 1e-12
    cos = np.einsum("tai,tbi->tab", rays, rays).min(axis=(1, 2))
    ok &= (err.max(1) <= max_reprojection_px) & (cos <= np.cos(np.radians(min_angle_deg)))
    return X, ok


def _assign_point_ids(point_ids, points, owners, image_of, offsets) -> None:
    """Writes each kept point's id into the point ids of the keypoints of its track."""
    start = 0
    for X, members in zip(points, owners):
        ids = start + np.arange(len(X))
        for column in members.T:
            img = image_of[column]
            for i in np.unique(img):
                sel = img == i
                point_ids[i][column[sel] - offsets[i]] = ids[sel]
        start += len(X)
