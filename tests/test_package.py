"""Packaging contracts: type stubs cover the extension, the CLI runs, the demo works."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pylocalize
from pylocalize import _core
from pylocalize.cli import main


def test_stub_covers_core():
    stub = Path(pylocalize.__file__).with_name("_core.pyi")
    assert (Path(pylocalize.__file__).with_name("py.typed")).exists()
    tree = ast.parse(stub.read_text())
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    names |= {t.id for n in tree.body if isinstance(n, ast.AnnAssign) for t in [n.target]}
    public = {n for n in dir(_core) if not n.startswith("_")}
    assert public <= names, f"regenerate pylocalize/_core.pyi (pybind11-stubgen): missing {public - names}"


def test_cli_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert pylocalize.__version__ in out and pylocalize.simd_level() in out


def test_demo_small(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--nb", "5000", "--nq", "50"]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    by_name = {r["method"]: r for r in summary["results"]}
    assert (tmp_path / "recall_qps.png").stat().st_size > 10_000
    # Exact re-ranking of SDC candidates must beat SDC alone, which must beat sign codes.
    assert by_name["SDC 2 bits/dim + exact re-rank of 100"]["recall@10"] > by_name["SDC 2 bits/dim"]["recall@10"]
    assert by_name["SDC 2 bits/dim"]["recall@10"] > by_name["sign codes, Hamming"]["recall@10"]
    index = pylocalize.MultiBitIndex.load(tmp_path / "sdc2.pyloc")
    assert index.ntotal == 5000 and index.has_vectors
