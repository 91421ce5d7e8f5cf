"""Image patches of map points, and their sub-pixel alignment in a frame.

A tracked pose is only as precise as the frame's keypoints, and the keypoints of fast
features are not precise: SIFT of a half-size frame loses its finest octave, ORB's corners
sit on its pyramid's integer pixels (benchmarks/README.md, "Tracking"). Once a frame's pose
is known to a pixel or two, every map point that frame sees can be found again to a small
fraction of a pixel by direct alignment (the final step of PTAM and SVO): its patch, as a
map image saw it, is warped into the frame's view and aligned there by Lucas-Kanade on
normalized intensities (the core's ``align_patches``), and the pose is refined on those
positions, each weighted by its alignment's information (its inverse covariance: a corner
pins both coordinates, an edge-like patch only the one across it).

A map keeps one patch per observation of a 3D point (:meth:`Map.add_patches
<pylocalize.localization.map.Map.add_patches>`): ``PATCH_SIZE`` x ``PATCH_SIZE`` pixels of
the (slightly blurred) map image, centred on the keypoint of the observation
(:func:`observation_patches` says why). The frame is blurred alike, then each patch warped
under the local affine map between the views that the plane through the point facing the map
image induces, and a square template aligned near the point's projection (the largest of
``TEMPLATE_SIZES`` that the warp keeps inside the patch, :func:`align_patches_fitted`).

In ``map.pyloc`` the patches of layer ``NAME`` are the sections ``patches.NAME.counts``
(patches per image) and ``patches.NAME.data`` (uint8 (n, size, size), the observed features
of each image in order), and ``patches`` in the JSON info gives their size.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from pylocalize import _core
from pylocalize.geometry import Camera

# side of a stored patch: room for the template under a scale change of ~1.6 between the
# map image and the frame (the template's half-diagonal, 5 px, times 1.6, inside 7.5 px)
PATCH_SIZE = 16
# side of the template aligned in the frame (PTAM's and SVO's 8 x 8)
TEMPLATE_SIZE = 8
# sides of the templates a tracker tries, largest first, each where the patch's warp keeps it
# inside the stored patch (:func:`align_patches_fitted`): 10 x 10 measured 0.94x the error of
# 8 x 8 between map views, but does not fit the wider warps far from them
TEMPLATE_SIZES = (10, TEMPLATE_SIZE)
# Gaussian blur (sigma, pixels) of map images and frames before patches are cut and aligned:
# it widens Lucas-Kanade's basin and tames aliasing when a patch is resampled
BLUR_SIGMA = 0.7


def prepare_image(image) -> np.ndarray:
    """The float32 grey image that patches are cut from and aligned in: grey, blurred by
    :data:`BLUR_SIGMA`."""
    import cv2

    from pylocalize.features.sift import to_gray

    gray = np.asarray(to_gray(image), dtype=np.float32)
    return cv2.GaussianBlur(gray, (0, 0), BLUR_SIGMA)


def sample_patches(image: np.ndarray, centres: np.ndarray, size: int = PATCH_SIZE) -> np.ndarray:
    """uint8 ``(n, size, size)`` patches of a float32 grey ``image`` centred on sub-pixel
    ``centres`` (n, 2) (OpenCV pixels), bilinear; pixels beyond the border repeat it."""
    import cv2

    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    if not len(centres):
        return np.zeros((0, size, size), np.uint8)
    offsets = np.arange(size) - 0.5 * (size - 1)
    map_x = (centres[:, 0, None, None] + offsets[None, None, :]).repeat(size, axis=1).reshape(-1, size)
    map_y = (centres[:, 1, None, None] + offsets[None, :, None]).repeat(size, axis=2).reshape(-1, size)
    # cv2.remap reads at most 32767 rows at once: sample in slabs
    rows = 32000 // size * size
    out = np.empty((len(map_x), size), np.float32)
    for start in range(0, len(map_x), rows):
        out[start:start + rows] = cv2.remap(image, map_x[start:start + rows].astype(np.float32),
                                            map_y[start:start + rows].astype(np.float32), cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REPLICATE)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(-1, size, size)


def observation_patches(images: Sequence, keypoints: Sequence[np.ndarray], point_ids: Sequence[np.ndarray],
                        shift_px: float = 0.0, size: int = PATCH_SIZE, progress: bool = False) -> List[np.ndarray]:
    """Per image, the patches of its observed features (``point_ids >= 0``, in order), each
    centred on the feature's keypoint: aligned in a frame, a patch finds there what the
    keypoint measured, so the frame's position and the 3D point triangulated from the
    keypoints relate as a feature match's do (centred on the point's projection instead, a
    patch would carry that image's pose error and the point's residual in it into the frame:
    measured worse on real photos, benchmarks/README.md).

    ``shift_px``: how far right of and below the true position the layer's keypoints sit
    (OpenCV SIFT's quarter pixel, ``tracking.OPENCV_SIFT_SHIFT_PX``): the patch is cut that
    far back up and left, on the image's true position.
    """
    from tqdm import tqdm

    from pylocalize.io import load_pixels

    patches = []
    for k, image in enumerate(tqdm(images, desc="map: point patches", disable=not progress, leave=False)):
        centres = np.asarray(keypoints[k], dtype=np.float64)[np.asarray(point_ids[k]) >= 0] - shift_px
        patches.append(sample_patches(prepare_image(load_pixels(image)), centres, size))
    return patches


def local_affines(points3D: np.ndarray, frame_xy: np.ndarray, frame_from_world: np.ndarray, frame_camera: Camera,
                  ref_from_world: np.ndarray, ref_cameras: Sequence[Camera]) -> Tuple[np.ndarray, np.ndarray]:
    """The local affine warps ``(n, 4)`` (row-major 2x2: an offset in the frame to the offset
    in the reference image) of points ``(n, 3)`` seen at ``frame_xy`` in the frame and in
    their reference images (poses ``(n, 3, 4)``, one camera each), and which are valid.

    The surface at each point is taken as the plane through it facing its reference camera
    (what one view knows of it); the warp is that plane's homography, linearised at the
    point by differences of one pixel.
    """
    n = len(points3D)
    if not n:
        return np.zeros((0, 4)), np.zeros(0, bool)
    frame_xy = np.asarray(frame_xy, dtype=np.float64)
    # rays of the point's pixel and of its neighbours one pixel right and one down
    pixels = np.concatenate([frame_xy, frame_xy + [1.0, 0.0], frame_xy + [0.0, 1.0]])
    rays_cam = frame_camera.to_pycolmap().cam_from_img(pixels + 0.5)  # COLMAP's pixel centres at +0.5
    rays_cam = np.c_[rays_cam, np.ones(len(rays_cam))]
    R, t = frame_from_world[:, :3], frame_from_world[:, 3]
    centre = -R.T @ t
    rays = (rays_cam @ R).reshape(3, n, 3)  # world directions, (offset, point, xyz)
    ref_centres = -np.einsum("nji,nj->ni", ref_from_world[:, :, :3], ref_from_world[:, :, 3])
    normals = ref_centres - points3D
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.einsum("nk,nk->n", normals, points3D - centre) / np.einsum("nk,onk->on", normals, rays)
    on_plane = centre + depth[..., None] * rays  # (3, n, 3)
    in_ref = np.einsum("nij,onj->oni", ref_from_world[:, :, :3], on_plane) + ref_from_world[None, :, :, 3]
    valid = (depth > 0).all(axis=0) & (in_ref[..., 2] > 0).all(axis=0)
    ref_xy = np.full((3, n, 2), np.nan)
    for camera in {id(c): c for c in ref_cameras}.values():  # one projection per distinct camera
        rows = np.flatnonzero(valid & np.array([c is camera for c in ref_cameras]))
        if len(rows):
            ref_xy[:, rows] = camera.project(in_ref[:, rows].reshape(-1, 3)).reshape(3, len(rows), 2)
    affines = np.concatenate([ref_xy[1] - ref_xy[0], ref_xy[2] - ref_xy[0]], axis=1)  # columns d/dx, d/dy
    affines = affines[:, [0, 2, 1, 3]]  # row-major [[dxr/dx, dxr/dy], [dyr/dx, dyr/dy]]
    valid &= np.isfinite(affines).all(axis=1)
    return np.where(valid[:, None], affines, 0.0), valid


def align_patches(image: np.ndarray, references: np.ndarray, affines: np.ndarray, start_xy: np.ndarray,
                  template_size: int = TEMPLATE_SIZE, max_iterations: int = 10, max_shift_px: float = 4.0,
                  min_stddev: float = 1.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where reference patches lie in a frame, to a fraction of a pixel.

    Parameters
    ----------
    image : float32 (H, W)
        The frame, as :func:`prepare_image` makes it.
    references : uint8 (n, s, s)
        The patches as their reference images saw them, centred on their points.
    affines : float (n, 4)
        Row-major 2x2 warps from frame offsets to reference offsets (:func:`local_affines`).
    start_xy : float (n, 2)
        Predicted centres in the frame (OpenCV pixels).
    template_size : int
        Side of the template aligned (the reference resampled under its warp).
    max_iterations, max_shift_px, min_stddev
        Gauss-Newton steps at most; how far a patch may move from its start; the least
        intensity standard deviation of a patch worth aligning.

    Returns
    -------
    ``(xy float64 (n, 2), zncc float32 (n,), converged bool (n,), information float64 (n, 2, 2))``:
    the aligned centres, the normalized cross-correlation with the template there, whether
    the alignment converged inside the image within ``max_shift_px`` (and the template lay
    inside its reference), and each centre's information in 1/px^2 (its inverse covariance:
    the alignment's Hessian over the residual's variance; large along strong gradients and
    for close matches, zero where nothing was aligned), for a pose weighted by it
    (:func:`~pylocalize.geometry.absolute_pose.refine_absolute_pose`).
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"image must be a 2-D grey float32 frame (prepare_image), got shape {image.shape}")
    references = np.ascontiguousarray(references, dtype=np.uint8)
    affines = np.ascontiguousarray(affines, dtype=np.float64).reshape(-1, 4)
    start_xy = np.ascontiguousarray(start_xy, dtype=np.float64).reshape(-1, 2)
    xy, zncc, converged, information = _core.align_patches(image, references, affines, start_xy, int(template_size),
                                                           int(max_iterations), 1.0, 0.01, float(max_shift_px),
                                                           float(min_stddev))
    return xy, zncc, converged, information[:, [0, 1, 1, 2]].reshape(-1, 2, 2)


def template_fits(affines: np.ndarray, template_size: int, ref_size: int = PATCH_SIZE) -> np.ndarray:
    """Whether a ``template_size`` template, warped by each of ``affines`` (n, 4), lies inside
    a stored patch of side ``ref_size`` (the core refuses a template that does not)."""
    half = 0.5 * (template_size - 1)
    corners = np.array([[-half, -half], [half, -half], [-half, half], [half, half]])
    warped = np.einsum("nij,cj->nci", np.asarray(affines, dtype=np.float64).reshape(-1, 2, 2), corners)
    return (np.abs(warped) <= 0.5 * (ref_size - 1)).all(axis=(1, 2))


def align_patches_fitted(image: np.ndarray, references: np.ndarray, affines: np.ndarray, start_xy: np.ndarray,
                         template_sizes: Sequence[int] = TEMPLATE_SIZES, **options):
    """:func:`align_patches`, each patch with the largest of ``template_sizes`` that its warp
    keeps inside its stored patch (the last size for those no size fits, which the core then
    reports as not converged). More pixels make a more precise position; a frame far from
    every map view (a wide warp) still gets the smaller template. Same returns."""
    affines = np.asarray(affines, dtype=np.float64).reshape(-1, 4)
    n = len(affines)
    xy, zncc = np.zeros((n, 2)), np.zeros(n, np.float32)
    converged, information = np.zeros(n, bool), np.zeros((n, 2, 2))
    left = np.ones(n, bool)
    for k, size in enumerate(template_sizes):
        rows = np.flatnonzero(left & (template_fits(affines, size, references.shape[-1])
                                      if k + 1 < len(template_sizes) else True))
        if len(rows):
            xy[rows], zncc[rows], converged[rows], information[rows] = align_patches(
                image, references[rows], affines[rows], np.asarray(start_xy)[rows], template_size=size, **options)
        left[rows] = False
    return xy, zncc, converged, information
