#!/usr/bin/env python3
"""Loading a saved, trained CANN index: memory-mapped, read, and what CRC verification costs.

A trained index stores its ivf search layout (layout 2), so a load searches without copying
or rebuilding it. Per run: the file size against the descriptors, the load time (mapped and
read into memory), the first ivf search after each load, the heap and mapped bytes the index
reports, and the time to open the container with and without checking every section's CRC
(``_core.read_container(..., verify=False)``, which loaders do not use: this measures what
the check costs). The file is in the page cache (just written): these are warm-cache times.

    python benchmarks/bench_cann_load.py --features 2000000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _timing import best_of  # benchmarks/ is not a package: from the script's own folder


def prototype_features(n: int, dim: int, seed: int, per_image: int = 2000):
    """SIFT-like uint8 rows around 4096 prototypes, ``per_image`` features per image:
    ``(rows, image ids, prototypes, rng)``, the generator left where the rows end."""
    rng = np.random.default_rng(seed)
    protos = rng.uniform(0, 120, (4096, dim))
    x = np.empty((n, dim), np.uint8)
    for i in range(0, n, 1 << 18):
        m = min(1 << 18, n - i)
        x[i:i + m] = np.clip(protos[rng.integers(0, len(protos), m)] + rng.normal(0, 12, (m, dim)), 0, 255)
    return x, np.arange(n, dtype=np.int64) // per_image, protos, rng


def _features(n: int, dim: int, seed: int):
    """SIFT-like uint8 rows around 4096 prototypes, one image per 2000 features, and queries."""
    x, ids, protos, rng = prototype_features(n, dim, seed)
    q = np.clip(protos[rng.integers(0, len(protos), 500)] + rng.normal(0, 12, (500, dim)), 0, 255)
    return x, ids, q.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import pylocalize
    from pylocalize import _core

    x, ids, q = _features(args.features, 128, args.seed)
    index = pylocalize.CANNIndex(128, method="ivf", nprobe=4, p0=200.0)
    t0 = time.perf_counter()
    index.add(x, ids)
    index.train(seed=0)
    print(f"{len(x):,} features, {index.nlist} lists: add + train {time.perf_counter() - t0:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cann.pyloc"
        t0 = time.perf_counter()
        index.save(path)
        print(f"save (builds the ivf layout) {time.perf_counter() - t0:.1f} s; file {path.stat().st_size / 1e6:.0f} MB "
              f"= {path.stat().st_size / x.nbytes:.3f} x the descriptors")
        del index
        for verify in (True, False):
            s, _ = best_of(lambda: _core.read_container(str(path), mmap=True, verify=verify), args.repeat)
            print(f"open mapped container, verify={verify}: {s:.3f} s")
        for mmap in (True, False):
            s, loaded = best_of(lambda: pylocalize.CANNIndex.load(path, mmap=mmap), args.repeat)
            t0 = time.perf_counter()
            loaded.search(q, 10)
            first = time.perf_counter() - t0
            print(f"load mmap={mmap}: {s:.3f} s; first ivf search (500 query features) {first:.3f} s; "
                  f"heap {loaded.memory_bytes / 1e6:.0f} MB, mapped {loaded.mapped_bytes / 1e6:.0f} MB")
            del loaded


if __name__ == "__main__":
    main()
