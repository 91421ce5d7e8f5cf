#!/usr/bin/env python3
"""Hamming k-NN and SDC against FAISS; the implementation is pylocalize.bench.binary.

    python benchmarks/bench_binary.py [--small] [--json out.json]
"""
import sys

from pylocalize.bench.binary import main

if __name__ == "__main__":
    sys.exit(main())
