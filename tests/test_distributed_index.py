"""Sharded indexes on Ray (pylocalize.distributed): the results of one local index, ties
included; changes, saves and reopening through the layout file; killed actors, lost nodes,
missing and corrupt shard files; the ``index shard`` command."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from conftest import brute_knn, child_env, container_sections, hamming_matrix, python_child

import pylocalize
from pylocalize import BinaryIndex, CANNIndex, FormatError, MultiBitIndex
from pylocalize.distributed import ShardedBinaryIndex, ShardedCANNIndex, ShardedMultiBitIndex, open_sharded, shard_index
from pylocalize.distributed.layout import ShardLayout, from_runs, partition, place, quotas, to_runs

SHARD_COUNTS = [1, 2, 3]


# -- data ---------------------------------------------------------------------------------------
def binary_data(seed=0, n=1500, nbits=256):
    """Codes with duplicated rows (Hamming ties) under scattered ids, and queries that hit
    them exactly."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, nbits // 8), dtype=np.uint8)
    codes[n // 2:n // 2 + 100] = codes[:100]  # ties: the same code under two ids
    ids = np.sort(rng.choice(10 * n, n, replace=False)).astype(np.int64)
    ids = ids[rng.permutation(n)]  # inserted out of id order
    queries = np.concatenate([rng.integers(0, 256, (30, nbits // 8), dtype=np.uint8), codes[:20]])
    return codes, ids, queries


def multibit_data(seed=1, n=1200, dim=48, bits=2):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x[n // 2:n // 2 + 80] = x[:80]  # ties in SDC and in the re-ranked inner product
    q = np.concatenate([rng.standard_normal((25, dim)).astype(np.float32), x[:10]])
    return x, pylocalize.binarize(x, bits), q, pylocalize.binarize(q, bits)


def cann_data(seed=2, num_images=30, dim=16):
    """Images of 10-40 features; image num_images-1 repeats image 3 (equal scores)."""
    rng = np.random.default_rng(seed)
    descriptors, image_ids = [], []
    for image in range(num_images):
        d = (rng.standard_normal((int(rng.integers(10, 40)), dim)) * 2).astype(np.float32)
        descriptors.append(descriptors[3] if image == num_images - 1 else d)
        image_ids.append(np.full(len(descriptors[-1]), 100 + 7 * image, np.int64))
    queries = [descriptors[i][:12] + rng.normal(0, 0.5, descriptors[i][:12].shape).astype(np.float32)
               for i in (0, 3, 11, 20)] + [(rng.standard_normal((15, dim)) * 2).astype(np.float32),
                                           np.zeros((0, dim), np.float32)]
    return np.concatenate(descriptors), np.concatenate(image_ids), queries


def local_binary(codes, ids):
    index = BinaryIndex(codes.shape[1] * 8)
    index.add(codes, ids)
    return index


def local_cann(descriptors, image_ids):
    index = CANNIndex(descriptors.shape[1], p0=9.0)
    index.add(descriptors, image_ids)
    return index


def assert_same(got, expected):
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
        assert g.dtype == e.dtype


# -- without Ray ------------------------------------------------------------------------------
def test_package_imports_without_ray_and_says_how_to_install():
    code = ("import sys; sys.modules['ray'] = None\n"
            "import pylocalize, pylocalize.distributed, pylocalize.cli\n"
            "from pylocalize.distributed import ShardedBinaryIndex\n"
            "try:\n"
            "    ShardedBinaryIndex.open('x.json')\n"
            "except ImportError as error:\n"
            "    assert 'pip install \"pylocalize[dist]\"' in str(error), error\n"
            "else:\n"
            "    raise AssertionError('opened without Ray')\n")
    result = python_child(code, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_runs_quotas_and_placement():
    keys = np.array([0, 1, 2, 5, 6, 9], np.int64)
    assert to_runs(keys) == [[0, 2], [5, 6], [9, 9]]
    np.testing.assert_array_equal(from_runs(to_runs(keys)), keys)
    assert to_runs(np.zeros(0, np.int64)) == [] and len(from_runs([])) == 0
    # the emptiest shards fill first, evenly; every new entry placed
    np.testing.assert_array_equal(quotas(np.array([10, 0, 4]), 8), [0, 6, 2])
    np.testing.assert_array_equal(quotas(np.array([3, 3, 3]), 7), [3, 2, 2])
    assert quotas(np.array([5, 1]), 0).tolist() == [0, 0]
    # consecutive keys go in consecutive blocks; a key (an image of 5 features) is never split
    parts = partition(np.arange(100, dtype=np.int64), np.ones(100, np.int64), 3)
    assert [len(p) for p in parts] == [34, 33, 33] and [to_runs(p) for p in parts] == [[[0, 33]], [[34, 66]],
                                                                                       [[67, 99]]]
    shard = place(np.arange(4, dtype=np.int64), np.array([5, 1, 1, 1]), np.array([0, 0]))
    assert shard.tolist() == [0, 1, 1, 1]


def test_cann_shards_balance_features_and_keep_images_whole(tmp_path):
    """CANN shards take about as many features each (what their memory and search time grow
    with), never splitting an image, however uneven the images; the per-image counts come
    from the index whether it is in memory or a mapped, trained file."""
    rng = np.random.default_rng(8)
    sizes = [400, 10, 10, 10, 300, 10, 10, 10, 10, 250, 10, 10]  # features per image, uneven
    ids = np.repeat(np.arange(len(sizes)) * 3 + 5, sizes)
    local = CANNIndex(16, p0=9.0)
    local.add(rng.standard_normal((len(ids), 16)).astype(np.float32), ids)
    np.testing.assert_array_equal(local.image_feature_counts(), sizes)
    local.train(nlist=4, seed=0)
    local.save(tmp_path / "trained.pyloc")
    mapped = CANNIndex.load(tmp_path / "trained.pyloc", mmap=True)
    np.testing.assert_array_equal(mapped.image_ids(), np.unique(ids))
    np.testing.assert_array_equal(mapped.image_feature_counts(), sizes)
    layout = shard_index(tmp_path / "trained.pyloc", 3, tmp_path / "cann.json")
    # reference: consecutive images, an image going to the third of the features where it starts
    starts = np.cumsum(sizes) - sizes
    expected = np.minimum(starts * 3 // len(ids), 2)
    for shard, entry in enumerate(layout.shards):
        np.testing.assert_array_equal(entry.keys, np.unique(ids)[expected == shard])
        assert entry.count == sum(np.asarray(sizes)[expected == shard])
    # (by image count the first shard would hold 400 + 3 x 10 features, the last 250 + 3 x 10)
    assert max(e.count for e in layout.shards) - min(e.count for e in layout.shards) <= 90


def test_layout_file_errors_name_the_fix(tmp_path):
    bad = tmp_path / "bad.json"
    for text, match in (("{", "not a shard layout"), ('{"format": "other"}', "not a shard layout"),
                        ('{"format": "pylocalize.shards", "version": 99}', "version 99")):
        bad.write_text(text)
        with pytest.raises(FormatError, match=match):
            ShardLayout.read(bad)
    with pytest.raises(FileNotFoundError):
        ShardLayout.read(tmp_path / "missing.json")


# -- identical results --------------------------------------------------------------------------
@pytest.mark.parametrize("num_shards", SHARD_COUNTS)
def test_binary_shards_match_one_index(ray_local, tmp_path, num_shards):
    codes, ids, queries = binary_data()
    local = local_binary(codes, ids)
    # the same rows by brute force: the local index is the reference, and it is right
    np.testing.assert_array_equal(local.search(queries, 10)[1],
                                  brute_knn(hamming_matrix(queries, codes), ids, 10)[1])
    local.save(tmp_path / "local.pyloc")
    source = tmp_path / "local.pyloc" if num_shards == 2 else local  # a file or an index
    with ShardedBinaryIndex.from_index(source, num_shards, tmp_path / "shards.json", batch_size=16) as index:
        assert index.ntotal == len(codes) and index.num_shards == num_shards
        assert sum(index.shard_counts()) == len(codes) and min(index.shard_counts()) > 0
        for k in (1, 10, len(codes) + 5):  # k past ntotal: padded as one index pads
            assert_same(index.search(queries, k), local.search(queries, k))
        assert_same(index.range_search(queries, 110), local.range_search(queries, 110))
        assert_same(index.search(queries[:0], 4), local.search(queries[:0], 4))


@pytest.mark.parametrize("num_shards", SHARD_COUNTS)
def test_multibit_shards_match_one_index(ray_local, tmp_path, num_shards):
    x, codes, q, qcodes = multibit_data()
    local = MultiBitIndex(x.shape[1], 2)
    local.add(codes, None, x)
    with ShardedMultiBitIndex.from_index(local, num_shards, tmp_path / "mb.json", batch_size=16) as index:
        assert index.has_vectors and index.ntotal == len(x)
        assert_same(index.search(qcodes, 10), local.search(qcodes, 10))
        assert_same(index.search(qcodes, len(x) + 3), local.search(qcodes, len(x) + 3))
        for rerank, k in ((40, 10), (5, 10), (len(x) + 10, 8)):  # pool of candidates: larger, smaller than k, all
            assert_same(index.search(qcodes, k, query_vectors=q, rerank=rerank),
                        local.search(qcodes, k, query_vectors=q, rerank=rerank))


@pytest.mark.parametrize("num_shards", SHARD_COUNTS)
def test_cann_shards_match_one_index(ray_local, tmp_path, num_shards):
    descriptors, image_ids, queries = cann_data()
    local = local_cann(descriptors, image_ids)
    expected = local.search_batch(queries, 8)
    # the repeated image ties with its original, and the smaller id comes first
    row = list(expected[1][1]).index(100 + 7 * 3)
    assert expected[1][1, row + 1] == 100 + 7 * 29 and expected[0][1, row] == expected[0][1, row + 1]
    with ShardedCANNIndex.from_index(local, num_shards, tmp_path / "cann.json", batch_size=2) as index:
        assert index.num_images == 30 and index.method == "exact" and index.ntotal == len(descriptors)
        assert_same(index.search_batch(queries, 8), expected)
        assert_same(index.search_batch(queries, 40), local.search_batch(queries, 40))
        for query in queries[:2]:
            assert_same(index.search(query, 5), local.search(query, 5))


# -- changes, saves, reopening --------------------------------------------------------------------
def test_binary_changes_save_and_reopen(ray_local, tmp_path):
    codes, ids, queries = binary_data(seed=3, n=600)
    local = local_binary(codes, ids)
    rng = np.random.default_rng(4)
    layout = tmp_path / "shards.json"
    index = ShardedBinaryIndex.from_index(local, 2, layout)
    new = rng.integers(0, 256, (120, 32), dtype=np.uint8)
    for target in (local, index):
        target.add(new)  # default ids continue after the largest id ever added
        target.add(new[:30], np.array([ids[0]] * 10 + list(range(10**9, 10**9 + 20)), np.int64))
    assert [index.remove_ids(np.r_[ids[:40], 10**9 + 3, 77777777]) for _ in range(2)] == \
        [local.remove_ids(np.r_[ids[:40], 10**9 + 3, 77777777]), 0]
    assert index.ntotal == local.ntotal
    assert_same(index.search(queries, 15), local.search(queries, 15))
    index.save(layout)
    first_files = sorted(p.name for p in tmp_path.glob("shards-*.pyloc"))
    doc = json.loads(layout.read_text())
    assert len(first_files) == 2 and sorted(s["file"] for s in doc["shards"]) == first_files
    stored = np.concatenate([from_runs(s["keys"]) for s in doc["shards"]])
    np.testing.assert_array_equal(np.sort(stored), np.unique(local.ids()))
    index.close()
    with ShardedBinaryIndex.open(layout) as reopened:
        assert reopened.ntotal == local.ntotal and reopened.next_id == doc["next_id"]
        assert_same(reopened.search(queries, 15), local.search(queries, 15))
        for target in (local, reopened):
            target.add(new[:5])  # the next default ids survive the save
        assert_same(reopened.search(new[:5], 3), local.search(new[:5], 3))
        reopened.save(layout)
    # a shard that changed went to a new file (the old one removed), an unchanged one kept its file
    after = json.loads(layout.read_text())["shards"]
    assert sorted(p.name for p in tmp_path.glob("shards-*.pyloc")) == sorted(s["file"] for s in after)
    assert any(a["count"] != b["count"] for a, b in zip(after, doc["shards"]))
    for a, b in zip(after, doc["shards"]):
        assert (a["file"] != b["file"]) == (a["count"] != b["count"])


def test_cann_changes_keep_images_whole(ray_local, tmp_path):
    descriptors, image_ids, queries = cann_data(seed=5)
    local = local_cann(descriptors, image_ids)
    rng = np.random.default_rng(6)
    layout = tmp_path / "cann.json"
    index = ShardedCANNIndex.from_index(local, 3, layout)
    more = (rng.standard_normal((9, 16)) * 2).astype(np.float32)
    new_ids = np.array([100] * 4 + [100 + 7 * 20] * 2 + [5000] * 3, np.int64)  # two known images, one new
    for target in (local, index):
        target.add(more, new_ids)
        assert target.remove_images([100 + 7 * 5, 100 + 7 * 6, 424242]) > 0
    np.testing.assert_array_equal(index.image_ids(), local.image_ids())
    holders = [s for s in index._shards if 100 in s.keys]
    assert len(holders) == 1 and holders[0].number == 0  # image 100 stayed in the shard that had it
    assert_same(index.search_batch(queries, 10), local.search_batch(queries, 10))
    index.save(layout)
    index.close()
    with open_sharded(layout) as reopened:
        assert isinstance(reopened, ShardedCANNIndex) and reopened.ntotal == local.ntotal
        assert_same(reopened.search_batch(queries, 10), local.search_batch(queries, 10))


def test_a_change_refused_by_a_shard_leaves_every_shard_as_it_was(ray_local, tmp_path):
    x, codes, q, qcodes = multibit_data(n=300)
    local = MultiBitIndex(x.shape[1], 2)
    local.add(codes, None, x)
    with ShardedMultiBitIndex.from_index(local, 2, tmp_path / "mb.json") as index:
        bad = x[:4].copy()
        bad[3, 0] = np.nan  # refused by shard 1 (id 299), while shard 0 takes ids 0, 1, 2
        with pytest.raises(ValueError, match="shard 1 .*NaN"):
            index.add(codes[:4], np.array([0, 1, 2, 299]), bad)
        assert index.ntotal == local.ntotal
        assert_same(index.search(qcodes, 10, query_vectors=q, rerank=30),
                    local.search(qcodes, 10, query_vectors=q, rerank=30))


# -- faults ---------------------------------------------------------------------------------------
def kill_shard_0(index, ray) -> None:
    """``ray.kill`` (restart allowed) of shard 0's actor, returning once its process is gone."""
    pid = index.describe()[0]["pid"]
    ray.kill(index.shard_actors()[0], no_restart=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] in "ZX":
                    return
        except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between it and the read
            return
        time.sleep(0.02)
    raise AssertionError(f"the killed actor's process {pid} is still there after 60 s")


def kill_during_next_call(index, monkeypatch, ray) -> None:
    """Kills shard 0's actor once, right after the next call's tasks are submitted."""
    original, state = index._get, {"killed": False}

    def get(tasks, refs):
        if not state["killed"]:
            state["killed"] = True
            kill_shard_0(index, ray)
        return original(tasks, refs)

    monkeypatch.setattr(index, "_get", get)


def test_killed_actor_restarts_with_the_same_results(ray_local, tmp_path, monkeypatch, caplog):
    codes, ids, queries = binary_data(seed=7, n=800)
    local = local_binary(codes, ids)
    caplog.set_level(logging.INFO, logger="pylocalize.distributed")

    def restores():
        return [r.getMessage().split(") ")[-1] for r in caplog.records if "restarted" in r.getMessage()]

    with ShardedBinaryIndex.from_index(local, 2, tmp_path / "shards.json", batch_size=2) as index:
        pid = index.describe()[0]["pid"]
        kill_during_next_call(index, monkeypatch, ray_local)  # killed mid-batch: its tasks are retried
        assert_same(index.search(queries, 10), local.search(queries, 10))
        monkeypatch.undo()
        assert index.describe()[0]["pid"] != pid
        # a call that reached the actor while it restarted (Ray reports it unavailable rather than
        # retrying it, depending on timing) had it reload its file: right, but not what comes next
        caplog.clear()
        kill_shard_0(index, ray_local)
        assert_same(index.search(queries, 10), local.search(queries, 10))
        assert restores() == []  # the restarted actor mapped its file, which is the shard's state
        # unsaved changes: a restarted actor maps the file without them, so they are replayed
        new = np.random.default_rng(8).integers(0, 256, (50, 32), dtype=np.uint8)
        for target in (local, index):
            target.add(new)
            target.remove_ids(ids[:30])
        kill_shard_0(index, ray_local)
        assert_same(index.search(queries, 10), local.search(queries, 10))
        assert restores() == ["restarted: reloading its file and 2 unsaved changes"]
        # a change sent to a restarting actor: applied once, not twice
        held = np.setdiff1d(ids, ids[:30])[:7]  # ids shard 0 holds
        kill_shard_0(index, ray_local)
        for target in (local, index):
            target.add(new[:7], held)
        assert restores()[1:] == ["restarted: reloading its file and 3 unsaved changes"]
        assert index.ntotal == local.ntotal
        assert_same(index.search(queries, 10), local.search(queries, 10))
        kill_during_next_call(index, monkeypatch, ray_local)
        assert_same(index.search(queries, 10), local.search(queries, 10))


def test_missing_or_corrupt_shard_file_names_the_shard(ray_local, tmp_path):
    codes, ids, queries = binary_data(seed=9, n=400)
    layout = tmp_path / "shards.json"
    ShardedBinaryIndex.from_index(local_binary(codes, ids), 2, layout).close()
    files = [tmp_path / s["file"] for s in json.loads(layout.read_text())["shards"]]
    data = bytearray(files[1].read_bytes())
    _, offset, nbytes = container_sections(bytes(data))["blocks"]
    data[offset + nbytes // 2] ^= 0xFF
    files[1].write_bytes(bytes(data))
    with pytest.raises(FormatError, match=f"shard 1 \\({files[1]}\\)"):
        ShardedBinaryIndex.open(layout)
    files[0].unlink()
    with pytest.raises(FileNotFoundError, match=f"shard 0 \\({files[0]}\\)"):
        ShardedBinaryIndex.open(layout)
    with pytest.raises(FormatError, match="sharded BinaryIndex, not a CANNIndex"):
        ShardedCANNIndex.open(layout)


def test_shard_file_of_another_save_is_refused(ray_local, tmp_path):
    codes, ids, _ = binary_data(seed=10, n=300)
    layout = tmp_path / "shards.json"
    ShardedBinaryIndex.from_index(local_binary(codes, ids), 2, layout).close()
    doc = json.loads(layout.read_text())
    doc["shards"][0]["count"] += 1
    layout.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="shard 0 .*not the file this layout was saved with"):
        ShardedBinaryIndex.open(layout)


NODE_LOSS = r"""
import sys
import numpy as np
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
import pylocalize
from pylocalize.distributed import ShardedBinaryIndex


def lose_a_node(cluster, worker):
    rng = np.random.default_rng(11)
    codes = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    local = pylocalize.BinaryIndex(256)
    local.add(codes)
    queries = np.concatenate([codes[:10], rng.integers(0, 256, (10, 32), dtype=np.uint8)])
    # the shards on the worker node (soft: when it is gone, they may restart on the head)
    on_worker = NodeAffinitySchedulingStrategy(worker.node_id, soft=True)
    index = ShardedBinaryIndex.from_index(local, 2, sys.argv[1], actor_options={"scheduling_strategy": on_worker},
                                          timeout=60)
    nodes = [info["node"] for info in index.describe()]
    assert nodes == [worker.node_id] * 2 and worker.node_id != cluster.head_node.node_id, nodes
    cluster.remove_node(worker)
    for got, expected in zip(index.search(queries, 7), local.search(queries, 7)):
        np.testing.assert_array_equal(got, expected)
    after = [info["node"] for info in index.describe()]
    assert worker.node_id not in after, after
    print("survived", nodes, after)


cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
try:
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    lose_a_node(cluster, worker)
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def test_lost_node_is_survived_with_shard_files_on_shared_storage(tmp_path):
    pytest.importorskip("ray")
    # a temporary folder of its own: Cluster writes its address into Ray's, where any ray.init()
    # on the machine would find it and join this cluster (short: Ray's socket paths are limited)
    ray_tmp = tempfile.mkdtemp(prefix="ray-")
    try:
        result = python_child(NODE_LOSS, str(tmp_path / "shards.json"), capture_output=True,
                              text=True, timeout=150, env=dict(child_env(), RAY_TMPDIR=ray_tmp))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "survived" in result.stdout


SHADOWED_DRIVER = r"""
import pylocalize
from pylocalize.distributed._runtime import connect

ray = connect("local")


@ray.remote
def where():
    import pylocalize
    return pylocalize.__file__


print("worker", ray.get(where.remote(), timeout=60))
print("driver", pylocalize.__file__)
ray.shutdown()
"""


def test_workers_import_the_package_of_the_driver_not_a_checkout_in_its_folder(tmp_path):
    """Run from a source checkout whose pylocalize/ cannot be imported (no compiled core),
    Ray's workers still import the package the driver runs, not the checkout: Ray puts the
    driver's folder first on their import path, so connect() starts Ray from the package's."""
    pytest.importorskip("ray")
    checkout = tmp_path / "checkout"
    (checkout / "pylocalize").mkdir(parents=True)
    (checkout / "pylocalize" / "__init__.py").write_text("raise ImportError('the checkout was imported')\n")
    driver = tmp_path / "driver.py"
    driver.write_text(SHADOWED_DRIVER)
    ray_tmp = tempfile.mkdtemp(prefix="ray-")
    try:
        # a script (not -c, which would put the checkout first on the driver's path too), as
        # the `pylocalize` command is
        result = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True, timeout=150,
                                cwd=checkout, env=dict(child_env(), RAY_TMPDIR=ray_tmp))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("worker", "driver")))
    assert lines["worker"] == lines["driver"] and not lines["driver"].startswith(str(checkout)), result.stdout


# -- command line ---------------------------------------------------------------------------------
def test_cli_shards_an_index_file_and_a_map(ray_local, tmp_path, capsys):
    from pylocalize.cli import main
    from pylocalize.datasets.synthetic import courtyard_scene
    from pylocalize.localization import Map

    codes, ids, queries = binary_data(seed=12, n=500)
    local = local_binary(codes, ids)
    local.save(tmp_path / "codes.pyloc")
    assert main(["index", "shard", str(tmp_path / "codes.pyloc"), "--shards", "3", "--out", str(tmp_path / "a")]) == 0
    assert main(["index", "shard", str(tmp_path / "codes.pyloc"), "--shards", "2", "--out", str(tmp_path / "b"),
                 "--ray", "local"]) == 0
    out = capsys.readouterr().out
    assert "a BinaryIndex in 3 shards" in out and "shard 1 opened on node" in out
    for folder in ("a", "b"):
        with open_sharded(tmp_path / folder / "shards.json") as index:
            assert_same(index.search(queries, 9), local.search(queries, 9))
    # a map's retrieval index, on the demo scene
    scene = courtyard_scene(num_views=6, seed=0, width=320, height=240)
    m = Map.from_views(scene.images, scene.K, scene.cam_from_world, scene.names, max_features=400)
    m.save(tmp_path / "map")
    assert main(["index", "shard", str(tmp_path / "map"), "--shards", "2", "--out", str(tmp_path / "m"),
                 "--ray", "auto"]) == 0
    assert "a CANNIndex in 2 shards" in capsys.readouterr().out
    with open_sharded(tmp_path / "m" / "shards.json") as index:
        query = m.descriptors[2][:200]
        index.method = m.index.method = "exact"  # the map searches by ivf: compare the exact scores
        assert_same(index.search(query, 4), m.index.search(query, 4))
    assert main(["index", "shard", str(tmp_path / "nothing"), "--shards", "2", "--out", str(tmp_path / "x")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
