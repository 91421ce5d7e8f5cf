"""Local features: SIFT extraction and descriptor matching."""

from pylocalize.features.matching import match_descriptors
from pylocalize.features.sift import EXTRACTORS, SiftExtractor, extract_sift

__all__ = ["EXTRACTORS", "SiftExtractor", "extract_sift", "match_descriptors"]
