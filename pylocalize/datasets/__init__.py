"""Generated data for demos, tests and benchmarks (the package ships no data files)."""

from pylocalize.datasets.vectors import clustered_queries, clustered_vectors

__all__ = ["clustered_queries", "clustered_vectors"]
