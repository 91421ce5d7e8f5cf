"""The torch training layer (pylocalize.training), the one recall@k, and the import layers:
what imports without torch, and no import cycle between modules."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import python_child

import pylocalize
from pylocalize.index.metrics import recall_at

PACKAGE = Path(pylocalize.__file__).resolve().parent


# -- recall@k ---------------------------------------------------------------------------------
def test_recall_at_counts_the_true_neighbours_among_the_first_k():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    found = np.array([[3, 9, 1, 2], [7, 8, 9, 4]])
    # first 2: {3, 9} & {1, 2} = 0 hits; {7, 8} & {4, 5} = 0 hits
    assert recall_at(2, found, truth) == 0.0
    # first 3: {3, 9, 1} & {1, 2, 3} = 2; {7, 8, 9} & {4, 5, 6} = 0 -> (2/3 + 0) / 2
    assert recall_at(3, found, truth) == pytest.approx(1 / 3)
    assert recall_at(1, truth, truth) == 1.0
    # a repeated or padding id counts once, and only when it is a true neighbour
    assert recall_at(2, np.array([[1, 1], [-1, -1]]), np.array([[1, 2], [3, 4]])) == 0.25
    with pytest.raises(ValueError, match="k must be"):
        recall_at(0, found, truth)
    with pytest.raises(ValueError, match="one row per query"):
        recall_at(1, found[:1], truth)


def test_learned_codes_use_the_one_recall_at():
    from pylocalize.codes import learned

    assert learned.recall_at is recall_at


# -- import layers ----------------------------------------------------------------------------
NO_TORCH = "import sys; sys.modules['torch'] = None\n"


def test_package_imports_without_torch():
    # sys.modules['torch'] = None makes `import torch` fail as if torch were not installed
    code = NO_TORCH + (
        "import pylocalize, pylocalize.codes, pylocalize.codes.learned, pylocalize.index, "
        "pylocalize.index.two_stage, pylocalize.geo, pylocalize.geo.model, pylocalize.posetext, "
        "pylocalize.training, pylocalize.checkpoints, pylocalize.objects.learned, pylocalize.objects.choice, "
        "pylocalize.objects.cli\n"
        "from pylocalize.codes.learned import BinarizerOptions, RecurrentBinarizer\n"
        "BinarizerOptions(epochs=3)\n"
        "try:\n"
        "    RecurrentBinarizer(8, 8, 1)\n"
        "except ImportError as error:\n"
        "    assert 'pip install' in str(error), error\n"
        "else:\n"
        "    raise AssertionError('a binarizer was made without torch')\n"
        "for name in ('pylocalize.codes.networks', 'pylocalize.geo.networks', 'pylocalize.posetext.networks',\n"
        "             'pylocalize.objects.networks'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ImportError as error:\n"
        "        assert 'pip install' in str(error), error\n"
        "    else:\n"
        "        raise AssertionError(name + ' imported without torch')\n")
    result = python_child(code, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_a_command_that_needs_torch_says_how_to_install_it(tmp_path):
    """Without torch, onboarding with a learned or an automatically chosen descriptor stops at
    once with the install line, not an "internal error"."""
    code = NO_TORCH + (
        "import sys\n"
        "from pylocalize.cli import main\n"
        "for extractor in ('learned', 'auto'):\n"
        "    rc = main(['objects', 'onboard', '--mesh', sys.argv[1], '--out', sys.argv[2], '--extractor', extractor])\n"
        "    assert rc == 1, rc\n")
    mesh = tmp_path / "tri.obj"
    mesh.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    result = python_child(code, str(mesh), str(tmp_path / "rep.pyloc"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("pip install 'pylocalize[torch]'") == 2, result.stderr
    assert "internal error" not in result.stderr and not (tmp_path / "rep.pyloc").exists()


@pytest.mark.parametrize("module", ["pylocalize.codes", "pylocalize.index.two_stage", "pylocalize.codes.learned"])
def test_each_layer_imports_first_in_a_fresh_interpreter(module):
    result = python_child(f"import {module}", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, names: set, top_level: bool):
    """The pylocalize modules ``path`` imports: at module level (``top_level``), or inside
    functions and classes."""
    tree = ast.parse(path.read_text())
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
              for n in ast.walk(f) if n is not f}
    found = set()
    for node in ast.walk(tree):
        if (id(node) in nested) == top_level:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pylocalize")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pylocalize"):
            # `from package import submodule` imports the submodule
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in names else node.module
                      for a in node.names}
    return found & names


def test_module_import_graph_has_no_cycle():
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    names = set(files) | {"pylocalize._core"}
    edges = {name: _imports(path, names, top_level=True) for name, path in files.items()}
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            assert state.get(target) != "open", "import cycle: " + " -> ".join(path + [target])
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_codes_and_index_import_each_other_only_at_the_top():
    # an import inside a function is how a cycle used to be dodged: between these two
    # layers every import is at the top, where the graph above sees it
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    names = set(files)
    for layer, other in (("pylocalize.codes", "pylocalize.index"), ("pylocalize.index", "pylocalize.codes")):
        for name, path in files.items():
            if name.startswith(layer):
                late = {m for m in _imports(path, names, top_level=False) if m.startswith(other)}
                assert not late, f"{name} imports {late} inside a function"


# -- the training loop ------------------------------------------------------------------------
def _scores_net(scores):
    """A one-parameter net whose epoch k sets its weight to k, and the score of each epoch."""
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(-1.0)
    epochs = iter(range(len(scores)))

    def train_epoch():
        assert net.training
        with torch.no_grad():
            net.weight.fill_(float(next(epochs)))
        return None

    def held_out(_):
        assert not net.training
        return scores[int(net.weight.item())]

    return net, train_epoch, held_out


def test_early_stopping_keeps_the_best_weights_and_stops_after_patience():
    from pylocalize.training import train_with_early_stopping

    net, train_epoch, held_out = _scores_net([0.5, 0.7, 0.69, 0.7, 0.6, 0.9])
    history = train_with_early_stopping(net, 6, train_epoch, held_out, patience=3, higher_is_better=True)
    # epoch 1 is best; 0.69 and 0.7 (not better by min_delta) and 0.6 make 3 stale epochs
    assert history == [0.5, 0.7, 0.69, 0.7, 0.6]
    assert net.weight.item() == 1.0 and not net.training
    net, train_epoch, held_out = _scores_net([3.0, 2.0, 2.5])
    history = train_with_early_stopping(net, 3, train_epoch, held_out, patience=5, higher_is_better=False)
    assert history == [3.0, 2.0, 2.5] and net.weight.item() == 1.0


def test_early_stopping_keeps_a_start_no_epoch_beats():
    from pylocalize.training import train_with_early_stopping

    net, train_epoch, held_out = _scores_net([0.5, 0.6])
    history = train_with_early_stopping(net, 2, train_epoch, held_out, patience=5, higher_is_better=True,
                                        start_score=0.8)
    assert history == [0.5, 0.6] and net.weight.item() == -1.0  # the weights before training
    assert train_with_early_stopping(net, 0, train_epoch, held_out, patience=1, higher_is_better=True) == []


def test_torch_settings_are_restored():
    torch = pytest.importorskip("torch")
    from pylocalize.training import flush_denormals, optimizer_steps, torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with flush_denormals():
        pass
    assert (torch.tensor([1e-30]) * 1e-10).item() != 0.0  # denormals are computed again
    net = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    calls = []
    losses = optimizer_steps(optimizer, lambda batch: (net(batch) ** 2).mean(), [torch.ones(3, 2)] * 3,
                             lambda: calls.append(1))
    assert len(losses) == 3 and losses[2] < losses[0] and len(calls) == 3


def test_geo_model_still_exports_torch_threads():
    from pylocalize.geo.model import torch_threads
    from pylocalize.training import torch_threads as shared

    assert torch_threads is shared


def test_child_python_sees_this_checkout():
    # the import checks above run in children: make sure they import this pylocalize
    result = python_child("import pylocalize; print(pylocalize.__file__)", capture_output=True, text=True,
                          timeout=300)
    assert Path(result.stdout.strip()).resolve().parent == PACKAGE, (result.stdout, result.stderr)
    assert isinstance(result, subprocess.CompletedProcess)
