"""Trajectories: sequence metrics, the TUM trajectory file, and a figure of estimate vs ground truth.

Metrics follow the TUM RGB-D benchmark (Sturm et al., IROS 2012):

- *absolute trajectory error* (:func:`absolute_trajectory_error`): camera centres of the
  estimate against ground truth after the least-squares alignment of one to the other (rigid
  by default; similarity for trajectories of unknown scale; none for poses already in the
  ground truth's frame, as a map's are), as RMSE, mean, median and maximum in metres;
- *relative pose error* (:func:`relative_pose_error`): the error of the motion between
  frames ``delta`` apart, translation (metres) and rotation (degrees): drift per step,
  independent of any alignment;
- per-frame latency percentiles and the share of frames of each tracking status
  (:func:`sequence_summary`).

Frames without an estimate (lost) are left out of the errors and counted on their own.

The trajectory file (:func:`write_tum`, :func:`read_tum`) is the TUM format that trajectory
tools read (evo, the TUM scripts): one line per frame, ``timestamp tx ty tz qx qy qz qw``,
the camera's pose in the world (``world_from_cam``: ``t`` its centre, ``q`` its orientation,
scalar last), ``#`` lines comments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from pylocalize.containers import write_bytes_atomic
from pylocalize.geometry.poses import (
    check_rotation,
    compose_poses,
    invert_pose,
    matrix_from_quaternion,
    quaternion_from_matrix,
    rotation_error_deg,
    similarity_from_points,
)
from pylocalize.localization.tracking import STATUSES
from pylocalize.localization.triangulation import camera_centres

ALIGNMENTS = ("se3", "sim3", "none")


def _stats(errors: np.ndarray) -> Dict[str, float]:
    if not len(errors):
        return {"rmse": float("nan"), "mean": float("nan"), "median": float("nan"), "max": float("nan")}
    return {"rmse": float(np.sqrt(np.mean(errors ** 2))), "mean": float(errors.mean()),
            "median": float(np.median(errors)), "max": float(errors.max())}


def _check_poses(poses, what: str) -> np.ndarray:
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (3, 4):
        raise ValueError(f"{what} must be cam_from_world poses of shape (n, 3, 4), got {poses.shape}")
    return poses


def _valid(estimate: np.ndarray, ground_truth: np.ndarray):
    """Frames whose estimate is finite (NaN poses mark frames without one)."""
    if len(estimate) != len(ground_truth):
        raise ValueError(f"{len(estimate)} estimated poses but {len(ground_truth)} ground-truth poses: give one "
                         "of each per frame (NaN for a frame without an estimate)")
    return np.isfinite(estimate).all(axis=(1, 2))


def absolute_trajectory_error(estimate, ground_truth, align: str = "se3") -> Dict[str, object]:
    """ATE of ``estimate`` against ``ground_truth``, both ``cam_from_world`` (n, 3, 4), a pose
    per frame (NaN for frames without an estimate, left out).

    ``align``: ``"se3"`` (rigid), ``"sim3"`` (with scale) or ``"none"``. Returns ``rmse``,
    ``mean``, ``median``, ``max`` (metres), ``errors`` (per frame, NaN where none),
    ``frames`` (scored) and the alignment ``scale``, ``R``, ``t`` (ground truth ~ s R x + t).
    """
    if align not in ALIGNMENTS:
        raise ValueError(f"align must be one of {ALIGNMENTS}, got {align!r}")
    estimate, ground_truth = _check_poses(estimate, "estimate"), _check_poses(ground_truth, "ground_truth")
    valid = _valid(estimate, ground_truth)
    est, gt = camera_centres(estimate[valid]), camera_centres(ground_truth[valid])
    s, R, t = 1.0, np.eye(3), np.zeros(3)
    if align != "none":
        if len(est) < 3:
            raise ValueError(f"aligning needs at least 3 frames with an estimate, got {len(est)} (or use align='none')")
        s, R, t = similarity_from_points(est, gt, scale=align == "sim3")
    errors = np.full(len(estimate), np.nan)
    errors[valid] = np.linalg.norm(est @ (s * R).T + t - gt, axis=1)
    return {**_stats(errors[valid]), "errors": errors, "frames": int(valid.sum()), "scale": s, "R": R, "t": t}


def relative_pose_error(estimate, ground_truth, delta: int = 1) -> Dict[str, object]:
    """RPE over frame pairs ``(i, i + delta)`` that both have an estimate: the motion between
    them in the estimate against ground truth, ``E = (Q_i^-1 Q_j)^-1 (P_i^-1 P_j)`` with
    ``world_from_cam`` poses P (estimate), Q (ground truth).

    Returns ``translation`` and ``rotation`` statistics (``rmse``, ``mean``, ``median``,
    ``max``; metres and degrees) and ``pairs``.
    """
    if int(delta) < 1:
        raise ValueError(f"delta must be >= 1 frame, got {delta}")
    estimate, ground_truth = _check_poses(estimate, "estimate"), _check_poses(ground_truth, "ground_truth")
    valid = _valid(estimate, ground_truth)
    trans, rot = [], []
    for i in range(len(estimate) - delta):
        j = i + delta
        if not (valid[i] and valid[j]):
            continue
        # cam_j_from_cam_i motions; their disagreement is the error of the step
        motion_est = compose_poses(estimate[j], invert_pose(estimate[i]))
        motion_gt = compose_poses(ground_truth[j], invert_pose(ground_truth[i]))
        error = compose_poses(invert_pose(motion_gt), motion_est)
        trans.append(np.linalg.norm(error[:, 3]))
        rot.append(rotation_error_deg(error[:, :3], np.eye(3)))
    return {"translation": _stats(np.array(trans)), "rotation": _stats(np.array(rot)), "pairs": len(trans)}


def latency_percentiles(seconds: Sequence[float], percentiles=(50, 90, 99)) -> Dict[str, float]:
    """Per-frame latency percentiles in milliseconds (``"p50"``, ...) and the mean rate in Hz
    that the median latency allows (``"hz_median"``)."""
    seconds = np.asarray(seconds, dtype=np.float64)
    if not len(seconds):
        raise ValueError("no latencies given")
    out = {f"p{p:g}": float(np.percentile(seconds, p) * 1000) for p in percentiles}
    out["hz_median"] = float(1.0 / np.median(seconds)) if np.median(seconds) > 0 else float("inf")
    return out


def status_shares(statuses: Sequence[str]) -> Dict[str, float]:
    """Share of frames of each tracking status (``tracked``, ``relocalized``, ``lost``)."""
    n = max(1, len(statuses))
    unknown = set(statuses) - set(STATUSES)
    if unknown:
        raise ValueError(f"unknown statuses {sorted(unknown)}; expected {STATUSES}")
    return {status: sum(s == status for s in statuses) / n for status in STATUSES}


def recovery_frames(statuses: Sequence[str], events: Sequence[int]) -> Dict[int, Optional[int]]:
    """For each event frame (a teleport, the first frame after a gap), how many frames it took
    to have a pose again: 1 when that frame itself has one; None if none followed."""
    out: Dict[int, Optional[int]] = {}
    for event in events:
        after = [k for k in range(event, len(statuses)) if statuses[k] != "lost"]
        out[int(event)] = after[0] - event + 1 if after else None
    return out


def estimates_array(results, n: Optional[int] = None) -> np.ndarray:
    """``cam_from_world`` (n, 3, 4) of tracking or localization results, NaN where a frame has none."""
    poses = np.full((len(results) if n is None else n, 3, 4), np.nan)
    for k, r in enumerate(results):
        if r.cam_from_world is not None:
            poses[k] = r.cam_from_world
    return poses


def sequence_summary(results, ground_truth=None, align: str = "none") -> Dict[str, object]:
    """The metrics of a tracked sequence: status shares, latency percentiles and, with
    ``ground_truth`` (n, 3, 4), ATE and RPE (delta 1) and the median rotation error."""
    statuses = [r.status for r in results]
    with_pose = sum(r.cam_from_world is not None for r in results) / max(1, len(results))
    summary: Dict[str, object] = {"frames": len(results), "shares": status_shares(statuses), "with_pose": with_pose}
    seconds = [r.timings.get("total", np.nan) for r in results]
    if len(seconds) and np.isfinite(seconds).all():
        summary["latency_ms"] = latency_percentiles(seconds)
    if ground_truth is not None:
        est = estimates_array(results)
        ate = absolute_trajectory_error(est, ground_truth, align)
        rpe = relative_pose_error(est, ground_truth)
        valid = np.isfinite(est).all(axis=(1, 2))
        rotation = rotation_error_deg(est[valid][:, :, :3], np.asarray(ground_truth)[valid][:, :, :3])
        summary.update(ate={k: v for k, v in ate.items() if k in ("rmse", "mean", "median", "max", "frames")},
                       rpe={"translation": rpe["translation"], "rotation": rpe["rotation"]},
                       rotation_median_deg=float(np.median(rotation)) if len(rotation) else float("nan"))
    return summary


# ---------------------------------------------------------------- TUM files


def write_tum(path, timestamps: Sequence[float], cam_from_world, comments: Optional[Dict[int, str]] = None) -> None:
    """Writes a TUM trajectory: ``timestamp tx ty tz qx qy qz qw`` per frame with a pose
    (``world_from_cam``); frames whose pose is NaN get a ``# timestamp: comment`` line
    instead (``comments[k]``, else "no pose"), and ``comments`` of other frames go on a
    ``#`` line above them. All-or-nothing."""
    poses = _check_poses(cam_from_world, "cam_from_world")
    if len(timestamps) != len(poses):
        raise ValueError(f"{len(timestamps)} timestamps but {len(poses)} poses")
    lines = ["# timestamp tx ty tz qx qy qz qw (TUM: the camera's pose in the world, world_from_cam)"]
    for k, (stamp, pose) in enumerate(zip(timestamps, poses)):
        note = (comments or {}).get(k)
        if not np.isfinite(pose).all():
            lines.append(f"# {stamp:.6f}: {note or 'no pose'}")
            continue
        if note:
            lines.append(f"# {stamp:.6f}: {note}")
        R = check_rotation(pose[:, :3], f"the rotation of frame {k}")
        qw, qx, qy, qz = quaternion_from_matrix(R.T)
        centre = -R.T @ pose[:, 3]
        lines.append(f"{stamp:.6f} " + " ".join(f"{v:.9g}" for v in (*centre, qx, qy, qz, qw)))
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))


def read_tum(path) -> Tuple[np.ndarray, np.ndarray]:
    """``(timestamps float64 (n,), cam_from_world (n, 3, 4))`` of a TUM trajectory file.

    Raises ``ValueError`` naming the line that is not ``timestamp tx ty tz qx qy qz qw``.
    """
    stamps, poses = [], []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            values = np.array([float(v) for v in parts])
            if len(values) != 8 or not np.isfinite(values).all() or np.linalg.norm(values[4:]) == 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"{path}:{number}: expected 'timestamp tx ty tz qx qy qz qw', got {line!r}") from None
        qx, qy, qz, qw = values[4:]
        R_world_from_cam = matrix_from_quaternion([qw, qx, qy, qz])
        R = R_world_from_cam.T
        poses.append(np.hstack([R, (-R @ values[1:4])[:, None]]))
        stamps.append(values[0])
    return np.array(stamps), np.array(poses).reshape(-1, 3, 4)


# ---------------------------------------------------------------- figure


def plot_trajectory(path, estimate, ground_truth=None, statuses: Optional[Sequence[str]] = None,
                    timestamps: Optional[Sequence[float]] = None, points3D: Optional[np.ndarray] = None,
                    title: str = "") -> None:
    """A figure: the top view (x-y) of the estimated camera centres, coloured by tracking
    status, over the ground truth and the map's points; and, with ground truth, the position
    error of each frame over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    estimate = _check_poses(estimate, "estimate")
    n = len(estimate)
    valid = np.isfinite(estimate).all(axis=(1, 2))
    est = np.full((n, 3), np.nan)
    est[valid] = camera_centres(estimate[valid])
    statuses = list(statuses) if statuses is not None else ["tracked" if v else "lost" for v in valid]
    times = np.arange(n) if timestamps is None else np.asarray(timestamps)
    panels = 2 if ground_truth is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 5.5), squeeze=False)
    ax = axes[0, 0]
    if points3D is not None and len(points3D):
        ax.scatter(points3D[:, 0], points3D[:, 1], s=0.3, c="0.75", label="map points")
    if ground_truth is not None:
        gt = camera_centres(_check_poses(ground_truth, "ground_truth"))
        ax.plot(gt[:, 0], gt[:, 1], "-", c="0.2", lw=1, label="ground truth")
    colours = {"tracked": "tab:blue", "relocalized": "tab:red", "lost": "tab:orange"}
    for status, colour in colours.items():
        mask = np.array([s == status for s in statuses]) & valid
        if mask.any():
            ax.scatter(est[mask, 0], est[mask, 1], s=6 if status == "tracked" else 30, c=colour,
                       label=f"{status} ({mask.sum()})", zorder=3)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title(title or "trajectory, top view")
    ax.legend(loc="upper right", fontsize=7)
    if ground_truth is not None:
        ax = axes[0, 1]
        error = np.linalg.norm(est - gt, axis=1)
        ax.plot(times, 100 * error, lw=1, c="tab:blue")
        for k, status in enumerate(statuses):
            if status == "relocalized":
                ax.axvline(times[k], c="tab:red", lw=0.6, alpha=0.6)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("position error (cm)")
        ax.set_title("error per frame (red: relocalized)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
