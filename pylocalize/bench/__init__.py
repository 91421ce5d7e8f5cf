"""Benchmarks against the strongest installed peers; ``benchmarks/`` holds the runners and figures."""
