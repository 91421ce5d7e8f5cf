"""Packaging contracts: type stubs cover the extension, the CLI runs, the demo works."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np

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


def test_localization_demo_small(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--views", "10", "--queries", "2",
                 "--width", "400", "--height", "300"]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert all(r["success"] and r["translation_m"] < 0.1 for r in summary["queries"])
    assert (tmp_path / "localization.png").stat().st_size > 10_000
    assert len((tmp_path / "poses.txt").read_text().splitlines()) == 2
    assert "localized 2/2" in capsys.readouterr().out


def test_binary_demo_small(tmp_path, capsys):
    assert main(["demo", "--kind", "binary", "--out", str(tmp_path), "--nb", "5000", "--nq", "50"]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    by_name = {r["method"]: r for r in summary["results"]}
    assert (tmp_path / "recall_qps.png").stat().st_size > 10_000
    # Exact re-ranking of SDC candidates must beat SDC alone, which must beat sign codes.
    assert by_name["SDC 2 bits/dim + exact re-rank of 100"]["recall@10"] > by_name["SDC 2 bits/dim"]["recall@10"]
    assert by_name["SDC 2 bits/dim"]["recall@10"] > by_name["sign codes, Hamming"]["recall@10"]
    index = pylocalize.MultiBitIndex.load(tmp_path / "sdc2.pyloc")
    assert index.ntotal == 5000 and index.has_vectors


def test_cli_render_contact_sheet(tmp_path, capsys):
    import trimesh
    from PIL import Image
    mesh_path = tmp_path / "box.ply"
    trimesh.creation.box(extents=(1, 2, 3)).export(mesh_path)
    assert main(["render", "--mesh", str(mesh_path), "--out", str(tmp_path / "out"), "--views", "6",
                 "--size", "64"]) == 0
    sheet = np.asarray(Image.open(tmp_path / "out" / "box_templates.png"))
    assert sheet.shape == (2 * 64, 3 * 64, 3)
    tiles = [sheet[r * 64:(r + 1) * 64, c * 64:(c + 1) * 64] for r in range(2) for c in range(3)]
    for tile in tiles:  # every view shows the object on the background
        assert (np.abs(tile.astype(int) - 40).sum(-1) > 30).mean() > 0.05


def test_each_part_registers_its_own_commands(tmp_path, capsys):
    """pylocalize/cli.py only gathers the parts' commands; each part's add_parser adds its own,
    and runs alone from its module."""
    import argparse

    from pylocalize.cli import build_parser
    from pylocalize.geometry import look_at, write_pose_file
    from pylocalize.localization import cli as localization_cli
    from pylocalize.localization import track_cli
    from pylocalize.objects import cli as objects_cli

    def commands(parser):
        return [name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
                for name in action.choices]

    assert commands(build_parser()) == ["info", "demo", "render", "map", "localize", "evaluate", "pairs", "track",
                                        "objects", "geo", "posetext", "index", "bench"]
    for module, names in ((localization_cli, ["map", "localize", "evaluate", "pairs"]), (track_cli, ["track"]),
                          (objects_cli, ["objects"])):
        parser = argparse.ArgumentParser()
        module.add_parser(parser.add_subparsers())
        assert commands(parser) == names
    write_pose_file(tmp_path / "poses.txt", [("a.jpg", look_at([0, 0, 1.0], [0, 0, 0]))])
    assert localization_cli.main(["evaluate", "--gt", str(tmp_path / "poses.txt"),
                                  "--pred", str(tmp_path / "poses.txt")]) == 0
    assert "1/1 images estimated" in capsys.readouterr().out
