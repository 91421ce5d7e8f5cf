"""Local features: SIFT extraction and descriptor matching."""

from pylocalize.features.matching import match_descriptors
from pylocalize.features.sift import EXTRACTORS, extract_sift

__all__ = ["EXTRACTORS", "extract_sift", "match_descriptors"]
