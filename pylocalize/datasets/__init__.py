"""Data for demos, tests and benchmarks: generated (``vectors``, ``synthetic``), and readers
of public datasets' layouts (``strecha``). The package ships no data files."""

from pylocalize.datasets.vectors import clustered_queries, clustered_vectors

__all__ = ["clustered_queries", "clustered_vectors"]
