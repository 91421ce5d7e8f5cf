"""Hierarchical geo-localization (Clark et al., CVPR 2023) and retrieval geo-localization.

Torch-free: :class:`CellHierarchy` (adaptive S2 cells with parent maps), the metrics
(:func:`great_circle_km`, :func:`accuracy` at 1 / 25 / 200 / 750 / 2500 km, :func:`equal_earth`,
:func:`plot_predictions`) and :class:`GeoGallery` (kNN geo-localization in a geotagged
gallery). With the ``torch`` extra: ``pylocalize.geo.model`` (:class:`GeoDecoder` head,
flat cell classifier, GPS encoder) and ``pylocalize.geo.backbones`` (DINOv2 / CLIP token
extractors), imported on first use.
"""

from pylocalize.geo.cells import CellHierarchy, check_latlon, s2_leaf_ids
from pylocalize.geo.metrics import THRESHOLDS_KM, accuracy, equal_earth, great_circle_km, plot_predictions
from pylocalize.geo.retrieval import GeoGallery

__all__ = ["CellHierarchy", "GeoGallery", "THRESHOLDS_KM", "accuracy", "check_latlon", "equal_earth",
           "great_circle_km", "plot_predictions", "s2_leaf_ids"]
