"""Local and patch features for maps, objects and retrieval."""

from pylocalize.features.sift import extract_sift

__all__ = ["extract_sift"]
