"""Every saved format against corrupted and crafted files, and golden files of old versions.

The fault campaign (tools/fuzz_formats.py) saves one small sample of each format, then loads
seeded mutants of it (truncations, bit flips, header edits, crafted sizes and offsets with the
checksums recomputed) in a worker process under an address-space limit, and uses what loads.
Any crash, hang, exception other than ``pylocalize.FormatError``, or damaged file that loads
with other results fails the test. The long run (>= 100,000 mutants per format) is
``python tools/fuzz_formats.py --mutants 100000``; its figures are in benchmarks/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import fuzz_formats  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "golden"
MUTANTS = 200


def _have_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("name", list(fuzz_formats.FORMATS))
def test_fuzz_campaign(name):
    if fuzz_formats.FORMATS[name].needs_torch and not _have_torch():
        pytest.skip("needs torch")
    report = fuzz_formats.run_campaign([name], MUTANTS, seed=2026)[name]
    failures = [f for f in report.failures]
    assert not failures, f"{len(failures)} failing mutants, e.g. {failures[:5]}; counts {report.counts}"
    # the campaign exercised the loader: most mutants were refused, some loaded unchanged
    assert report.counts.get("refused", 0) > MUTANTS // 4, report.counts


def test_mutations_are_consistent_containers():
    """The crafted kinds keep every checksum valid, so the loaders' own checks are what is tested."""
    import numpy as np

    from pylocalize import _core

    rng = np.random.default_rng(0)
    data = bytes(_core.write_container(None, "Test", {"n": 3}, {"x": np.arange(12, dtype=np.int32).reshape(3, 4)}))
    for kind in ("meta", "payload"):
        for _ in range(20):
            mutant = fuzz_formats.mutate(data, kind, rng)
            _core.read_container(np.frombuffer(mutant, np.uint8).copy())  # CRCs hold: no FormatError


def _golden_cases():
    for snapshot in sorted(p for p in GOLDEN.iterdir() if p.is_dir()):
        for folder in sorted(p for p in snapshot.iterdir() if p.is_dir()):
            yield pytest.param(folder.name, folder, id=f"{snapshot.name}/{folder.name}")


@pytest.mark.parametrize("name,folder", list(_golden_cases()))
def test_golden_files_still_load(name, folder, tmp_path):
    """Files written by earlier versions load and give the same results as a fresh save
    (to a float tolerance where the format's saves go through other libraries' arithmetic)."""
    fmt = fuzz_formats.FORMATS[name]
    if fmt.needs_torch and not _have_torch():
        pytest.skip("needs torch")
    if folder.parent.name in fmt.retired:  # an old layout this version refuses, saying how to rebuild
        import pylocalize

        with pytest.raises(pylocalize.FormatError, match=fmt.rebuild):
            fmt.use(fuzz_formats.golden_sample(folder))
        return
    fresh = fmt.make(tmp_path)
    if fmt.values is None:
        assert fmt.use(fuzz_formats.golden_sample(folder)) == fmt.use(fresh)
        return
    for old, new in zip(_flat(fmt.values(fuzz_formats.golden_sample(folder))), _flat(fmt.values(fresh)), strict=True):
        np.testing.assert_allclose(old, new, rtol=1e-4, atol=1e-5)


def _flat(values):
    """Nested lists and tuples of arrays and numbers as one flat list of arrays."""
    if isinstance(values, (list, tuple)):
        return [a for v in values for a in _flat(v)]
    return [np.asarray(values)]
