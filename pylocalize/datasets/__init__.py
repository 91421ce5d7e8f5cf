"""Data for demos, tests and benchmarks: generated (``vectors``, ``synthetic``, ``city``), and
readers of public datasets' layouts (``strecha``). The package ships no data files."""

from pylocalize.datasets.city import CityOptions, generate_city, real_sift_distractors
from pylocalize.datasets.vectors import clustered_queries, clustered_vectors

__all__ = ["CityOptions", "clustered_queries", "clustered_vectors", "generate_city", "real_sift_distractors"]
