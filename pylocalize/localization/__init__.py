"""Visual localization: maps of posed images and 6-DoF localization of query images."""

from pylocalize.localization.evaluate import evaluate_poses, load_poses, pose_error, read_strecha_camera
from pylocalize.localization.map import LocalizationResult, Map

__all__ = ["LocalizationResult", "Map", "evaluate_poses", "load_poses", "pose_error", "read_strecha_camera"]
