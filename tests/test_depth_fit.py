"""Pose refinement on a measured depth image (``pylocalize.objects.depth``) against analytic
scenes: a box rendered at a known pose, its depth with noise, holes and an occluder in front,
fitted from a perturbed start; and the errors for inputs it cannot use."""

from __future__ import annotations

import numpy as np
import pytest

from pylocalize.datasets.synthetic import textured_box_object
from pylocalize.geometry import look_at
from pylocalize.objects.depth import depth_agreement, pose_from_depth, refine_with_depth
from pylocalize.render import Renderer

K = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]])


def _rotation_deg(Ra, Rb) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(Ra.T @ Rb) - 1) / 2, -1, 1))))


def _axis_angle(axis, degrees) -> np.ndarray:
    import cv2

    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    return cv2.Rodrigues(axis * np.deg2rad(degrees))[0]


@pytest.fixture(scope="module")
def scene():
    """The box (extent about 150 mm) at 450 mm, its measured depth: 1 mm noise, a tenth of
    the pixels missing, and a plate 60 mm in front of the box hiding its left quarter."""
    rng = np.random.default_rng(3)
    mesh = textured_box_object(1)
    pose = look_at([300.0, -250.0, 220.0])
    R, t = pose[:, :3], pose[:, 3]
    rendered = Renderer(640, 480, K).render(mesh, pose, outputs=("depth", "mask"))
    depth = np.squeeze(rendered.depth).copy()
    depth[depth > 0] += rng.normal(0, 1.0, (depth > 0).sum())
    depth[rng.random(depth.shape) < 0.1] = 0
    v, u = np.nonzero(np.squeeze(rendered.mask))
    left = u < np.percentile(u, 25)
    depth[v[left], u[left]] -= 60.0
    return mesh, R, t, depth.astype(np.float32)


@pytest.mark.parametrize("axis, degrees, shift", [((1, 2, 0), 6.0, (8.0, -5.0, 12.0)),
                                                  ((0, 1, 3), 10.0, (-6.0, 4.0, -15.0))])
def test_fit_recovers_the_pose_through_noise_holes_and_an_occluder(scene, axis, degrees, shift):
    mesh, R, t, depth = scene
    R0, t0 = _axis_angle(axis, degrees) @ R, t + np.asarray(shift)
    fit = refine_with_depth(mesh, K, depth, R0, t0)
    assert _rotation_deg(fit.R, R) < 0.5, (_rotation_deg(R0, R), _rotation_deg(fit.R, R))
    assert np.linalg.norm(fit.t - t) < 1.5, fit.t - t
    # the occluded quarter and the holes' neighbours aside, the rest agrees
    assert 0.6 < fit.inlier_share <= 0.8, fit.inlier_share
    assert fit.threshold < 10.0 and 1 <= fit.iterations <= 30


def test_an_exact_start_stays_put(scene):
    mesh, R, t, depth = scene
    fit = refine_with_depth(mesh, K, depth, R, t)
    assert _rotation_deg(fit.R, R) < 0.2 and np.linalg.norm(fit.t - t) < 0.5


def test_inputs_it_cannot_use_are_errors(scene):
    mesh, R, t, depth = scene
    with pytest.raises(ValueError, match=r"depth must be an \(H, W\) image"):
        refine_with_depth(mesh, K, depth[..., None], R, t)
    with pytest.raises(ValueError, match="must be 3x3"):
        refine_with_depth(mesh, K, depth, R[:2], t)
    with pytest.raises(ValueError, match="meets no measured depth"):  # the model beside the object
        refine_with_depth(mesh, K, depth, R, t + np.array([600.0, 0, 0]))


def test_agreement_counts_the_pixels_the_occluder_leaves(scene):
    mesh, R, t, depth = scene
    clean = np.squeeze(Renderer(640, 480, K).render(mesh, np.c_[R, t], outputs=("depth",)).depth)
    seen = (clean > 0) & (depth > 0)
    expected = (np.abs(clean[seen] - depth[seen]) < 10.0).mean()  # the occluded quarter is 60 mm off
    assert depth_agreement(mesh, K, depth, R, t, 10.0) == pytest.approx(expected, abs=1e-6)
    assert 0.7 < expected < 0.8
    assert depth_agreement(mesh, K, depth, R, t + np.array([600.0, 0, 0]), 10.0) == 0.0


def test_pose_from_depth_picks_the_start_the_depth_supports(scene):
    mesh, R, t, depth = scene
    turned = _axis_angle(R.T @ np.array([0.0, 0.0, 1.0]), 180.0)  # about the box's axis seen edge-on
    starts = [(R @ turned, t), (_axis_angle((1, 0, 1), 8.0) @ R, t + np.array([5.0, -3.0, 20.0])),
              (R, t + np.array([600.0, 0, 0]))]
    fit, agreement = pose_from_depth(mesh, K, depth, starts, tolerance=10.0)
    assert _rotation_deg(fit.R, R) < 0.5 and np.linalg.norm(fit.t - t) < 1.5
    assert agreement == pytest.approx(depth_agreement(mesh, K, depth, fit.R, fit.t, 10.0))
    assert pose_from_depth(mesh, K, depth, [(R, t + np.array([600.0, 0, 0]))]) is None


def _ellipsoid_scan():
    """An ellipsoid of 20,480 triangles (axes 90, 60 and 40 mm): a dense scan, which the
    fits render simplified."""
    import trimesh

    from pylocalize.render import Mesh
    from pylocalize.render.mesh import vertex_normals

    sphere = trimesh.creation.icosphere(subdivisions=5)
    vertices = sphere.vertices * np.array([90.0, 60.0, 40.0])
    return Mesh(vertices, sphere.faces, vertex_normals=vertex_normals(vertices, sphere.faces))


def test_a_dense_scan_is_fitted_on_its_simplified_shape_to_its_full_accuracy():
    from pylocalize.objects.depth import FIT_TRIANGLES

    rng = np.random.default_rng(5)
    mesh = _ellipsoid_scan()
    assert len(mesh.faces) > FIT_TRIANGLES
    pose = look_at([250.0, 180.0, -320.0])
    R, t = pose[:, :3], pose[:, 3]
    depth = np.squeeze(Renderer(640, 480, K).render(mesh, pose, outputs=("depth",)).depth).copy()
    depth[depth > 0] += rng.normal(0, 0.5, (depth > 0).sum())
    fit = refine_with_depth(mesh, K, depth, _axis_angle((2, -1, 1), 7.0) @ R, t + np.array([6.0, -4.0, 15.0]))
    assert _rotation_deg(fit.R, R) < 0.5 and np.linalg.norm(fit.t - t) < 1.0, (_rotation_deg(fit.R, R), fit.t - t)
    assert fit.inlier_share > 0.9
    # the agreement pose_from_depth reports is measured on the full mesh, as depth_agreement's
    best, agreement = pose_from_depth(mesh, K, depth, [(fit.R, fit.t)], tolerance=2.0)
    assert agreement == pytest.approx(depth_agreement(mesh, K, depth, best.R, best.t, 2.0)) and agreement > 0.9


def test_an_object_cut_by_the_image_border_is_fitted():
    """The fits look only at a window around the object; where the object leaves the
    image, the window ends at the border and the visible part still decides the pose."""
    mesh = _ellipsoid_scan()
    pose = look_at([250.0, 180.0, -320.0])
    R, t = pose[:, :3], pose[:, 3]
    centre = R @ mesh.center + t
    u = K[0, 0] * centre[0] / centre[2] + K[0, 2]
    t = t + np.array([(620.0 - u) * centre[2] / K[0, 0], 0.0, 0.0])  # its centre 20 px from the border
    depth = np.squeeze(Renderer(640, 480, K).render(mesh, np.c_[R, t], outputs=("depth",)).depth)
    assert (depth[:, -1] > 0).sum() > 50  # cut by the border
    fit = refine_with_depth(mesh, K, depth, _axis_angle((1, 1, 0), 5.0) @ R, t + np.array([4.0, 3.0, -10.0]))
    assert _rotation_deg(fit.R, R) < 0.5 and np.linalg.norm(fit.t - t) < 1.0, (_rotation_deg(fit.R, R), fit.t - t)


def test_the_object_region_keeps_a_face_off_the_wall_behind():
    """A plate in front of a wall, a quarter of it hidden by an occluder: a pose that lays
    the plate flat on the wall, elsewhere in the image, agrees with the depth better than
    the right one, so the depth alone picks the wall; with the region of the object's box
    (:func:`object_region`) the wall pose's pixels fall outside it and the right pose wins."""
    import trimesh

    from pylocalize.objects.depth import object_region
    from pylocalize.render import Mesh

    plate = trimesh.creation.box(extents=(100.0, 80.0, 6.0))
    mesh = Mesh(plate.vertices, plate.faces)
    pose = look_at([120.0, -90.0, -420.0])
    R, t = pose[:, :3], pose[:, 3]
    rendered = Renderer(640, 480, K).render(mesh, pose, outputs=("depth", "mask"))
    mask = np.squeeze(rendered.mask)
    wall = 650.0
    depth = np.where(mask, np.squeeze(rendered.depth), wall).astype(np.float32)
    v, u = np.nonzero(mask)
    left = u < np.percentile(u, 25)
    depth[v[left], u[left]] -= 60.0
    flat_R = look_at([0.0, 0.0, -1.0])[:, :3]  # facing the camera squarely, its front face on the wall
    flat_t = np.array([-200.0, -130.0, wall + 3.0])  # up and left, clear of the plate in the image
    assert depth_agreement(mesh, K, depth, flat_R, flat_t, 5.0) > 0.95
    starts = [(flat_R, flat_t), (_axis_angle((1, 0, 1), 4.0) @ R, t + np.array([3.0, -2.0, 8.0]))]
    wrong, _ = pose_from_depth(mesh, K, depth, starts, tolerance=5.0)
    assert np.linalg.norm(wrong.t - t) > 100.0  # on the wall
    region = object_region(depth.shape, mask=mask)
    assert region[mask].all() and region.mean() < 0.2
    fit, agreement = pose_from_depth(mesh, K, depth, starts, tolerance=5.0, region=region)
    assert _rotation_deg(fit.R, R) < 0.5 and np.linalg.norm(fit.t - t) < 1.5 and 0.6 < agreement < 0.85
    assert depth_agreement(mesh, K, depth, flat_R, flat_t, 5.0, region=region) == 0.0
    assert object_region(depth.shape) is None
    with pytest.raises(ValueError, match="region must be a mask of the depth image's shape"):
        pose_from_depth(mesh, K, depth, starts, region=region[:10])


def test_a_tie_goes_to_the_start_given_first():
    """A plate turned by half a turn about its normal meets the depth on the same pixels as
    the right pose: the depth cannot choose, and the start the caller ranked first (the RGB
    method's own choice) is kept, in either order."""
    import trimesh

    from pylocalize.render import Mesh

    plate = trimesh.creation.box(extents=(100.0, 80.0, 6.0))
    mesh = Mesh(plate.vertices, plate.faces)
    pose = look_at([120.0, -90.0, -420.0])
    R, t = pose[:, :3], pose[:, 3]
    depth = np.squeeze(Renderer(640, 480, K).render(mesh, pose, outputs=("depth",)).depth)
    depth = np.where(depth > 0, depth + np.random.default_rng(2).normal(0, 1.0, depth.shape), 0).astype(np.float32)
    turned = R @ _axis_angle((0, 0, 1), 180.0)
    for first, second in ((R, turned), (turned, R)):
        fit, agreement = pose_from_depth(mesh, K, depth, [(first, t), (second, t)], tolerance=1.5)
        assert _rotation_deg(fit.R, first) < 0.5 and agreement > 0.8
    # a near tie (an object almost symmetric, an occluder over what is not) goes the same way
    from pylocalize.objects.depth import TIE, _ranked

    near, clear = [(0.634, 1, "later"), (0.634 - TIE / 2, 0, "first")], [(0.634, 1, "later"), (0.62, 0, "first")]
    assert _ranked(near)[0][2] == "first" and _ranked(clear)[0][2] == "later"
