"""Smoke test of an installed pylocalize wheel (docs/BUILDING.md).

.ci/run installs the repaired wheel into a fresh virtualenv, without torch, and runs this
file from a folder outside the source tree with a PATH that holds no compiler; cibuildwheel
runs it after each wheel it builds. It checks that

- ``pylocalize`` is imported from the environment's site-packages (not a checkout), the
  OpenMP runtime comes from the wheel's own ``pylocalize.libs``, and torch is absent;
- ``pylocalize info`` runs;
- a BinaryIndex search at every SIMD level the CPU supports, and an exact CANN search,
  return what numpy brute force computes;
- one query of the generated courtyard scene (the demo's) is localized within a few
  centimetres and a fraction of a degree of its true pose.

    python wheel_smoke.py [--no-compiler]

``--no-compiler`` also checks that no C or C++ compiler is on PATH.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

import pylocalize

COMPILERS = ("gcc", "g++", "cc", "c++", "clang", "clang++")


def check_environment(no_compiler: bool) -> None:
    """The wheel is what runs: installed copy, bundled OpenMP, no torch (and no compiler)."""
    package = Path(pylocalize.__file__).resolve().parent
    site = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    assert package.parent in site, f"pylocalize imported from {package}, not from site-packages {site}"
    assert importlib.util.find_spec("torch") is None, "torch is installed: the smoke must run without it"
    maps = Path("/proc/self/maps").read_text().splitlines()
    gomp = sorted({line.split()[-1] for line in maps if "libgomp" in line})
    assert any("pylocalize.libs" in p for p in gomp), f"libgomp not loaded from the wheel's pylocalize.libs: {gomp}"
    if no_compiler:
        found = {c: shutil.which(c) for c in COMPILERS if shutil.which(c)}
        assert not found, f"compilers on PATH: {found}"
    print(f"installed: {package}\nOpenMP runtime: {', '.join(gomp)}")


def check_info() -> None:
    """The console script installed by the wheel runs."""
    script = shutil.which("pylocalize")
    assert script is not None, "the pylocalize command is not on PATH"
    run = subprocess.run([script, "info"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "OpenMP on" in run.stdout, run.stdout
    print(run.stdout.rstrip())


def check_binary_search() -> None:
    """Exact Hamming kNN at every SIMD level against numpy; ties go to the smaller id."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (3000, 32), dtype=np.uint8)
    queries = rng.integers(0, 256, (20, 32), dtype=np.uint8)
    bits = np.unpackbits(queries[:, None, :] ^ codes[None], axis=2).sum(2)
    order = np.lexsort((np.broadcast_to(np.arange(len(codes)), bits.shape), bits), axis=1)[:, :10]
    index = pylocalize.BinaryIndex(256)
    index.add(codes)
    detected = pylocalize.simd_level()
    try:
        for level in pylocalize.supported_simd_levels():
            pylocalize.set_simd_level(level)
            distances, ids = index.search(queries, 10)
            np.testing.assert_array_equal(ids, order, err_msg=f"BinaryIndex ids at SIMD level {level}")
            np.testing.assert_array_equal(distances, np.take_along_axis(bits, order, 1))
    finally:
        pylocalize.set_simd_level(detected)
    print(f"BinaryIndex: 20 queries x 3000 codes match numpy at {', '.join(pylocalize.supported_simd_levels())}")


def check_cann_search() -> None:
    """Exact CANN image scores S(m) = mean_q exp(-d(q, m)^2 / (2 sigma^2)) against numpy."""
    rng = np.random.default_rng(1)
    features = rng.normal(0, 30, (600, 16)).astype(np.float32)
    images = rng.integers(0, 12, len(features)).astype(np.int64)
    query = (features[images == 3][:25] + rng.normal(0, 5, (25, 16))).astype(np.float32)
    index = pylocalize.CANNIndex(16, kernel="gaussian", sigma=40.0)
    index.add(features, images)
    scores, ids = index.search(query, 5)
    d = np.sqrt(((query.astype(np.float64)[:, None] - features.astype(np.float64)[None]) ** 2).sum(-1))
    ref = {m: np.exp(-d[:, images == m].min(1) ** 2 / (2 * 40.0**2)).mean() for m in np.unique(images)}
    best = sorted(ref, key=lambda m: (-ref[m], m))[:5]
    best = [int(m) for m in best]
    assert ids[0] == 3 and ids.tolist() == best, f"CANN ranking {ids.tolist()}, numpy {best}"
    np.testing.assert_allclose(scores, [ref[m] for m in best], atol=1e-4)
    print(f"CANNIndex: top-5 images {ids.tolist()} and scores match numpy")


def check_localization() -> None:
    """One held-out view of the courtyard, localized against its true pose (errors by numpy)."""
    from pylocalize.datasets.synthetic import courtyard_scene
    from pylocalize.localization import Map

    scene = courtyard_scene(12, seed=0, width=400, height=300)
    truth = scene.query_poses(1, seed=1)[0]
    image = scene.render(truth[None])[0][0]
    m = Map.from_views(scene.images, scene.K, scene.cam_from_world, scene.names, max_features=1500)
    result = m.localize(image, scene.K)
    assert result.success, f"the query was not localized: {result.reason}"
    R, t = result.cam_from_world[:, :3], result.cam_from_world[:, 3]
    centre_error = np.linalg.norm(R.T @ t - truth[:, :3].T @ truth[:, 3])
    cos = (np.trace(R.T @ truth[:, :3]) - 1) / 2
    angle_error = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    print(f"localization: {len(m.names)} map images, {result.num_inliers} inliers, "
          f"error {100 * centre_error:.2f} cm, {angle_error:.3f} deg")
    assert centre_error < 0.05 and angle_error < 0.5, "the pose is off its ground truth"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-compiler", action="store_true", help="also check that no compiler is on PATH")
    args = parser.parse_args()
    for check in (lambda: check_environment(args.no_compiler), check_info, check_binary_search,
                  check_cann_search, check_localization):
        t0 = time.perf_counter()
        check()
        print(f"  ({time.perf_counter() - t0:.1f} s)")
    print("wheel smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
