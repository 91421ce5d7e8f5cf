"""Featuremetric pose refinement: align template features of 3D points with the query's
feature map (FoundPose's last stage).

The cost is ``sum_j rho(|F(pi(R X_j + t)) - f_j|^2)``: ``f_j`` is the descriptor of a
template patch whose 3D model point is ``X_j``, ``F`` the query's patch-feature map sampled
bilinearly at the point's projection, ``rho`` the Cauchy loss. Levenberg-Marquardt over
the 6-DoF pose (a rotation vector and a translation applied on the left) with the
analytic Jacobian of projection and bilinear sampling. PnP on patch-level matches is
only as precise as the 14-px grid; the feature map is continuous, so the refinement can
move the pose by fractions of a patch.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


def _skew(v: np.ndarray) -> np.ndarray:
    """(n, 3) -> (n, 3, 3) cross-product matrices."""
    z = np.zeros(len(v))
    return np.stack([np.stack([z, -v[:, 2], v[:, 1]], -1), np.stack([v[:, 2], z, -v[:, 0]], -1),
                     np.stack([-v[:, 1], v[:, 0], z], -1)], 1)


def _rotation(omega: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(omega)
    if angle < 1e-12:
        return np.eye(3)
    k = omega / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def sample_bilinear(feature_map: np.ndarray, grid_xy: np.ndarray):
    """Values and x/y derivatives of a (gh, gw, d) map at fractional grid positions (n, 2);
    positions outside ``[0, gw - 1] x [0, gh - 1]`` are flagged invalid."""
    gh, gw = feature_map.shape[:2]
    x, y = grid_xy[:, 0], grid_xy[:, 1]
    valid = (x >= 0) & (x <= gw - 1) & (y >= 0) & (y <= gh - 1)
    x0 = np.clip(np.floor(x), 0, max(gw - 2, 0)).astype(int)
    y0 = np.clip(np.floor(y), 0, max(gh - 2, 0)).astype(int)
    x1, y1 = np.minimum(x0 + 1, gw - 1), np.minimum(y0 + 1, gh - 1)
    wx, wy = (np.clip(x - x0, 0, 1))[:, None], (np.clip(y - y0, 0, 1))[:, None]
    f00, f01 = feature_map[y0, x0], feature_map[y0, x1]
    f10, f11 = feature_map[y1, x0], feature_map[y1, x1]
    value = (1 - wy) * ((1 - wx) * f00 + wx * f01) + wy * ((1 - wx) * f10 + wx * f11)
    dx = (1 - wy) * (f01 - f00) + wy * (f11 - f10)
    dy = (1 - wx) * (f10 - f00) + wx * (f11 - f01)
    return value, dx, dy, valid


def refine_featuremetric(feature_map: np.ndarray, stride: int, K: np.ndarray, R: np.ndarray, t: np.ndarray,
                         points: np.ndarray, features: np.ndarray, iterations: int = 30, scale: float = 0.25,
                         ) -> Tuple[np.ndarray, np.ndarray, float, float]:
    """Refines ``cam_from_model = [R | t]``.

    Parameters
    ----------
    feature_map : float (gh, gw, d)
        Query features (the same space as ``features``) on a grid of step ``stride``: cell
        ``(i, j)`` is centred at pixel ``(j * s + (s - 1) / 2, i * s + (s - 1) / 2)`` of the
        image ``K`` describes (the patch grid, or a denser one).
    points : (n, 3) model points; features : (n, d) their template descriptors.
    scale : float
        Cauchy scale on the residual norm (features are unit-norm).

    Returns
    -------
    R, t, initial cost, final cost
    """
    R, t = np.asarray(R, np.float64), np.asarray(t, np.float64).reshape(3)
    evaluate = _FeaturemetricCost(feature_map, stride, K, points, features, scale)
    lam = 1e-3
    initial, _ = evaluate(R, t, False)
    cost = initial
    for _ in range(iterations):
        cost, valid, r, weight, J = evaluate(R, t, True)
        if valid.sum() < 6:
            break
        Jv, rv, wv = J[valid], r[valid], weight[valid]
        H = np.einsum("n,ndi,ndj->ij", wv, Jv, Jv)
        g = np.einsum("n,ndi,nd->i", wv, Jv, rv)
        improved = False
        for _ in range(10):
            step = np.linalg.solve(H + lam * np.diag(np.diag(H) + 1e-12), -g)
            dR = _rotation(step[:3])
            R_new, t_new = dR @ R, dR @ t + step[3:]
            new_cost, new_valid = evaluate(R_new, t_new, False)
            if new_cost < cost:
                R, t, cost = R_new, t_new, new_cost
                lam = max(lam / 10, 1e-9)
                improved = True
                break
            lam *= 10
        if not improved or np.linalg.norm(step) < 1e-8:
            break
    return R, t, initial, cost


class _FeaturemetricCost:
    """The robust (Cauchy) featuremetric cost of a pose ``[R | t]``: the template features of
    the model points against the query feature map sampled where the points project; with
    ``jacobian``, also the residuals, IRLS weights and the Jacobian in the pose's tangent
    space (rotation first)."""

    def __init__(self, feature_map, stride: int, K, points, features, scale: float):
        self.fmap = np.asarray(feature_map, np.float64)
        self.stride, self.K, self.scale = stride, K, scale
        self.X = np.asarray(points, np.float64)
        self.f = np.asarray(features, np.float64)
        self.offset = (stride - 1) / 2.0

    def __call__(self, R, t, jacobian: bool):
        K, scale = self.K, self.scale
        cam = self.X @ R.T + t
        z = cam[:, 2]
        front = z > 1e-9
        zs = np.where(front, z, 1.0)
        u = cam[:, 0] / zs * K[0, 0] + K[0, 2]
        v = cam[:, 1] / zs * K[1, 1] + K[1, 2]
        grid = np.stack([(u - self.offset) / self.stride, (v - self.offset) / self.stride], 1)
        value, dx, dy, valid = sample_bilinear(self.fmap, grid)
        valid &= front
        r = value - self.f
        s = (r * r).sum(1)
        weight = 1.0 / (1.0 + s / scale ** 2)  # Cauchy IRLS weights
        # a point that leaves the map costs as much as the largest residual of unit features
        # (|r|^2 <= 4), so that costs over different valid sets stay comparable
        cost = float(np.where(valid, scale ** 2 * np.log1p(s / scale ** 2),
                              scale ** 2 * np.log1p(4 / scale ** 2)).sum())
        if not jacobian:
            return cost, valid
        return cost, valid, r, weight, self._jacobian(cam, zs, dx, dy)

    def _jacobian(self, cam, zs, dx, dy) -> np.ndarray:
        """d(sampled features)/d(pose) (n, d, 6): feature gradients times d(grid)/d(pose)."""
        K, n = self.K, len(cam)
        # d(grid)/d(cam): projection, then pixel -> grid
        du = np.zeros((n, 2, 3))
        du[:, 0, 0] = K[0, 0] / zs
        du[:, 0, 2] = -K[0, 0] * cam[:, 0] / zs ** 2
        du[:, 1, 1] = K[1, 1] / zs
        du[:, 1, 2] = -K[1, 1] * cam[:, 1] / zs ** 2
        du /= self.stride
        dcam = np.concatenate([-_skew(cam), np.broadcast_to(np.eye(3), (n, 3, 3))], 2)  # (n, 3, 6)
        dgrid = du @ dcam  # (n, 2, 6)
        return dx[:, :, None] * dgrid[:, None, 0, :] + dy[:, :, None] * dgrid[:, None, 1, :]
