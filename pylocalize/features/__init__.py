"""Local features: SIFT and ORB extraction, descriptor matching (L2 and Hamming)."""

from pylocalize.features.matching import match_descriptors
from pylocalize.features.orb import OrbExtractor
from pylocalize.features.sift import EXTRACTORS, SiftExtractor, extract_sift

__all__ = ["EXTRACTORS", "OrbExtractor", "SiftExtractor", "extract_sift", "match_descriptors"]
