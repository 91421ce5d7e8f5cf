"""Visual localization: maps of posed images and 6-DoF localization of query images."""

from pylocalize.localization.map import LocalizationResult, Map

__all__ = ["LocalizationResult", "Map"]
