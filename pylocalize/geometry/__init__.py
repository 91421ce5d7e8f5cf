"""Geometry: cameras, poses and rotations, absolute pose (the one PnP), viewpoint sampling.

Poses follow the project convention (COLMAP): ``cam_from_world`` (or ``cam_from_model``)
as a 3x4 ``[R | t]`` with ``x_cam = R @ x_world + t``; cameras look along +z with x right
and y down (OpenCV).
"""

from pylocalize.geometry.absolute_pose import AbsolutePose, estimate_absolute_pose
from pylocalize.geometry.camera import Camera, read_cameras_file
from pylocalize.geometry.poses import (
    matrix_from_quaternion,
    quaternion_from_matrix,
    ransac_similarity,
    read_pose_file,
    rotation_error_deg,
    similarity_from_points,
    transform_pose,
    write_pose_file,
)
from pylocalize.geometry.views import fibonacci_sphere, look_at, viewpoint_poses

__all__ = [
    "AbsolutePose",
    "Camera",
    "estimate_absolute_pose",
    "read_cameras_file",
    "fibonacci_sphere",
    "look_at",
    "matrix_from_quaternion",
    "quaternion_from_matrix",
    "ransac_similarity",
    "read_pose_file",
    "rotation_error_deg",
    "similarity_from_points",
    "transform_pose",
    "viewpoint_poses",
    "write_pose_file",
]
