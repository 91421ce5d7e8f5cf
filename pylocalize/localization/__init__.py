"""Visual localization: maps of posed images and 6-DoF localization of query images."""

# read_strecha_camera is the Strecha reader's (pylocalize.datasets.strecha); it stays importable
# from here, where it lived first.
from pylocalize.datasets.strecha import read_strecha_camera
from pylocalize.localization.evaluate import evaluate_poses, load_poses, pose_error
from pylocalize.localization.map import FeatureLayer, LocalizationResult, Map

__all__ = ["FeatureLayer", "LocalizationResult", "Map", "evaluate_poses", "load_poses", "pose_error",
           "read_strecha_camera"]
