"""Camera streams through the synthetic courtyard: smooth walking paths with ground-truth poses.

A robot (or a person with a phone) walks round the courtyard's camera loop
(:func:`~pylocalize.datasets.synthetic.courtyard_scene`) at walking speed, its camera
looking outwards-forwards and sweeping left and right, its height bobbing with the gait.
Speed, distance from the loop, heading and pitch vary smoothly (sums of a few seeded
sinusoids), so frame-to-frame motion is what a hand-held or robot camera sees at video rate:
a few centimetres and up to about two degrees a frame at 30 Hz.

Three kinds of events make a stream hard for a tracker, each at frame indices the caller
chooses: a *teleport* (the "kidnapped robot": from that frame on the camera is elsewhere on
the loop), *dropped frames* (a run of frames never delivered, so the timestamps jump) and
*occlusions* (something passes in front of the camera: a flat band covers part of the image
for a few frames; :func:`render_path` paints it).

Everything follows from the seed; poses are ``cam_from_world`` (OpenCV camera), timestamps
in seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, Iterator, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

# Occluders cover this share of the image width, sweeping across it while they last.
OCCLUDER_WIDTH = 0.45
OCCLUDER_COLOUR = (70, 62, 58)


@dataclass
class CameraPath:
    """A stream of camera poses.

    Attributes
    ----------
    timestamps : float64 (n,)
        Seconds; a gap (dropped frames) shows as a jump.
    cam_from_world : float64 (n, 3, 4)
        Ground truth.
    events : dict int -> str
        Frame index -> what happened just before it (``"teleport"``, ``"20 dropped frames"``).
    occluded : dict int -> float
        Frame index -> where the occluder's left edge is, as a share of the image width.
    """

    timestamps: np.ndarray
    cam_from_world: np.ndarray
    events: Dict[int, str] = field(default_factory=dict)
    occluded: Dict[int, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.timestamps)


def _smooth(rng, t: np.ndarray, amplitude: float, periods_s: Tuple[float, float]) -> np.ndarray:
    """A smooth random signal of ``t``: three sinusoids with periods drawn in ``periods_s``
    and random phases, scaled to peak near ``amplitude``."""
    periods = rng.uniform(*periods_s, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    weights = rng.uniform(0.5, 1.0, 3)
    signal = sum(w * np.sin(2 * np.pi * t / p + ph) for w, p, ph in zip(weights, periods, phases))
    return amplitude * signal / weights.sum()


def walking_path(num_frames: int = 500, fps: float = 30.0, speed: float = 1.4, seed: int = 0,
                 path_radius: float = 4.5, height: float = 1.6, teleports: Sequence[int] = (),
                 drops: Sequence[Tuple[int, int]] = (), occlusions: Sequence[Tuple[int, int]] = (),
                 look_around_deg: float = 25.0) -> CameraPath:
    """A walk round the courtyard's camera loop, delivered as ``num_frames`` frames.

    Parameters
    ----------
    num_frames : int
        Frames of the stream (dropped frames not counted).
    fps : float
        Frame rate of the camera.
    speed : float
        Mean walking speed in m/s (it varies by about 25 % along the way).
    seed : int
    path_radius, height : float
        The loop the walk follows (the courtyard's database cameras stand on it) and the
        camera's mean height, in metres.
    teleports : frame indices
        At each, the camera is carried a third of the loop or more away (and keeps walking).
    drops : ``(frame index, count)`` pairs
        ``count`` frames before frame index are never delivered.
    occlusions : ``(frame index, count)`` pairs
        An occluder sweeps across ``count`` frames from frame index on.
    look_around_deg : float
        Amplitude of the heading's sweep left and right.
    """
    if num_frames < 1 or fps <= 0 or speed <= 0:
        raise ValueError(f"need num_frames >= 1, fps > 0 and speed > 0, got {num_frames}, {fps}, {speed}")
    for index in list(teleports) + [i for i, _ in drops] + [i for i, _ in occlusions]:
        if not 0 <= index < num_frames:
            raise ValueError(f"event at frame {index}: frames are 0..{num_frames - 1}")
    if any(count < 1 for _, count in list(drops) + list(occlusions)):
        raise ValueError("dropped and occluded runs need a count >= 1")
    rng = np.random.default_rng([seed, 21])
    # the whole walk, dropped frames included; frame k of the stream is frame kept[k] of the walk
    total = num_frames + sum(count for _, count in drops)
    t = np.arange(total) / fps
    gait = speed * (1 + _smooth(rng, t, 0.25, (3.0, 8.0)))
    theta = rng.uniform(0, 2 * np.pi) + np.concatenate([[0], np.cumsum(gait[:-1]) / fps]) / path_radius
    radius = path_radius + _smooth(rng, t, 0.5, (4.0, 10.0))
    yaw = theta + np.radians(45) + np.radians(_smooth(rng, t, look_around_deg, (2.5, 6.0)))
    pitch = np.radians(-8 + _smooth(rng, t, 4.0, (3.0, 7.0)))
    z = height + 0.03 * np.sin(2 * np.pi * 1.8 * t) + _smooth(rng, t, 0.05, (5.0, 9.0))
    dropped = np.zeros(total, bool)
    shift = 0
    kept = []
    events: Dict[int, str] = {}
    drop_at = dict(drops)
    for k in range(num_frames):
        if k in drop_at:
            dropped[len(kept) + shift:len(kept) + shift + drop_at[k]] = True
            shift += drop_at[k]
            events[k] = f"{drop_at[k]} dropped frames"
        kept.append(k + shift)
    kept = np.array(kept)
    for k in sorted(teleports):
        # a third of the loop or more away: none of the map images seen before is seen now
        theta[kept[k]:] += rng.uniform(2 * np.pi / 3, 4 * np.pi / 3)
        events[k] = "teleport" if k not in events else events[k] + ", teleport"
    from pylocalize.datasets.synthetic import _poses

    poses = _poses(theta[kept], radius[kept], yaw[kept], z[kept], pitch[kept])
    occluded = {}
    for start, count in occlusions:
        for j in range(count):
            if start + j < num_frames:
                occluded[start + j] = -OCCLUDER_WIDTH + (1 + OCCLUDER_WIDTH) * (j + 0.5) / count
    return CameraPath(t[kept], poses, events, occluded)


def occlude(image: np.ndarray, left: float) -> np.ndarray:
    """``image`` with a flat occluder band whose left edge is at ``left`` x its width (in
    place when the array is writable; the band may stick out of either side)."""
    out = image if image.flags.writeable else image.copy()
    width = out.shape[1]
    x0, x1 = int(round(left * width)), int(round((left + OCCLUDER_WIDTH) * width))
    out[:, max(0, x0):max(0, min(width, x1))] = OCCLUDER_COLOUR
    return out


def render_path(scene, path: CameraPath, batch: int = 16, progress: bool = False) -> Iterator[np.ndarray]:
    """The frames of ``path`` rendered in ``scene`` (a
    :class:`~pylocalize.datasets.synthetic.SyntheticScene`), uint8 ``(h, w, 3)`` each, in
    order, with their occluders painted; rendered ``batch`` poses at a time."""
    from tqdm import tqdm

    with tqdm(total=len(path), desc="render frames", disable=not progress, leave=False) as bar:
        for start in range(0, len(path), batch):
            images, _ = scene.render(path.cam_from_world[start:start + batch])
            for j, image in enumerate(images):
                index = start + j
                yield occlude(np.array(image), path.occluded[index]) if index in path.occluded else image
            bar.update(len(images))
