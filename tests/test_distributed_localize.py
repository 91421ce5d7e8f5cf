"""Batch localization over Ray (``pylocalize.distributed.batch``, ``localize --ray``) against the
local :meth:`Map.localize_many` on the demo's generated courtyard: the same results in input
order with failures per query, an actor killed mid-batch, a node lost mid-batch, a missing or corrupt map, the command
line, and Ray kept optional.

Ray runs in this process with 2 CPUs (the ``ray_local`` fixture of conftest.py).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import child_env, python_child

import pylocalize
from pylocalize.cli import main
from pylocalize.distributed.batch import ACTOR_PREFIX, localize_many_ray
from pylocalize.geometry import read_pose_file
from pylocalize.geometry.poses import rotation_error_deg
from pylocalize.localization import Map


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A saved map of 16 views of the courtyard (480x360) and a batch of queries: rendered
    views as pixels and as files, a missing file and a blank image; with the local results."""
    from PIL import Image

    from pylocalize.datasets.synthetic import courtyard_scene

    tmp = tmp_path_factory.mktemp("distributed_localize")
    scene = courtyard_scene(num_views=16, seed=3, width=480, height=360)
    Map.from_views(scene.images, scene.K, scene.cam_from_world, scene.names, max_features=1500).save(tmp / "map")
    poses = scene.query_poses(4, seed=7)
    pixels, _ = scene.render(poses)
    (tmp / "queries").mkdir()
    files = []
    for i, image in enumerate(pixels):
        files.append(tmp / "queries" / f"q{i}.png")
        Image.fromarray(image).save(files[-1])
    blank = np.full((360, 480, 3), 128, np.uint8)
    queries = [pixels[0], tmp / "missing.jpg", files[1], blank, pixels[2], files[3]]
    truth = [poses[0], None, poses[1], None, poses[2], poses[3]]
    m = Map.load(tmp / "map")
    # the reference: each query by the local localize_many on a thread of its own, as each actor
    # runs its queries, and one local batch on two threads (RANSAC is seeded per query, so a
    # query's pose does not depend on the thread or on what it ran before: compared below)
    local = [m.localize_many([query], scene.K)[0] for query in queries]
    batched = m.localize_many(queries, scene.K, workers=2)
    return SimpleNamespace(scene=scene, tmp=tmp, map_dir=tmp / "map", queries=queries, truth=truth, files=files,
                           local=local, batched=batched)


def assert_same_results(got, want):
    """One result per query, each as the local run's: outcome, reason, retrieved images, pose."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g.success, g.reason, g.retrieved) == (w.success, w.reason, w.retrieved)
        if w.success:
            assert g.num_inliers == w.num_inliers and g.num_matches == w.num_matches
            np.testing.assert_allclose(g.cam_from_world, w.cam_from_world, rtol=0, atol=1e-6)


def wait_for_free_cpus(ray, n: int, seconds: float = 30.0) -> bool:
    """True once the cluster has ``n`` CPUs free again (a batch kills its actors at its end)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0) >= n:
            return True
        time.sleep(0.1)
    return False


def test_local_reference_localizes_the_views_and_reports_the_bad_queries(demo):
    """The reference is worth comparing with: real poses where views were given, reasons elsewhere."""
    assert [r.success for r in demo.local] == [True, False, True, False, True, True]
    assert "no such image" in demo.local[1].reason and "features" in demo.local[3].reason
    for result, pose in zip(demo.local, demo.truth):
        if pose is not None:
            centre = -result.cam_from_world[:, :3].T @ result.cam_from_world[:, 3]
            assert np.linalg.norm(centre + pose[:, :3].T @ pose[:, 3]) < 0.02
            assert rotation_error_deg(result.cam_from_world[:, :3], pose[:, :3]) < 0.2
    # one local batch on two threads: the same results as each query on a thread of its own
    assert_same_results(demo.batched, demo.local)


def test_batch_over_ray_gives_the_local_results_in_input_order(ray_local, demo):
    results = localize_many_ray(demo.map_dir, demo.queries, demo.scene.K, actors=2)
    assert_same_results(results, demo.local)
    # another order of the same queries: the results follow the input, not the actors
    order = [5, 3, 0, 4, 1, 2]
    results = localize_many_ray(demo.map_dir, [demo.queries[i] for i in order], demo.scene.K, actors=2)
    assert_same_results(results, [demo.local[i] for i in order])
    assert wait_for_free_cpus(ray_local, 2)  # the pool is gone with the batch


def kill_an_actor_mid_query(ray) -> tuple:
    """``(thread, names killed)``: a thread that kills the first pool actor it finds localizing
    a query, as a crash of its process would (Ray restarts it if it may)."""
    from ray.exceptions import RayError

    killed = []

    def run():
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for name in ray.util.list_named_actors():
                if not name.startswith(ACTOR_PREFIX):
                    continue
                try:
                    actor = ray.get_actor(name)
                    busy = ray.get(actor.in_progress.remote(), timeout=30)
                except (ValueError, RayError):  # not started yet, or gone
                    continue
                if busy:
                    ray.kill(actor, no_restart=False)
                    killed.append(name)
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, killed


def test_an_actor_killed_mid_batch_is_restarted_with_the_same_results(ray_local, demo, caplog):
    killer, killed = kill_an_actor_mid_query(ray_local)
    with caplog.at_level(logging.INFO, logger="pylocalize"):
        results = localize_many_ray(demo.map_dir, demo.queries, demo.scene.K, actors=2)
    killer.join(timeout=30)
    assert killed, "no actor was seen localizing a query"
    assert_same_results(results, demo.local)
    assert "1 Ray actor(s) were restarted" in caplog.text
    assert wait_for_free_cpus(ray_local, 2)


NODE_LOSS = r"""
import sys
import threading
import time

import numpy as np
import ray
from ray.cluster_utils import Cluster

from pylocalize.distributed.batch import ACTOR_PREFIX, localize_many_ray
from pylocalize.localization import Map

map_path, files = sys.argv[1], sys.argv[2:]
K = np.load(map_path + "/../K.npy")
queries = files * 4  # long enough to lose a node in the middle
local = [Map.load(map_path).localize_many([q], K)[0] for q in files] * 4
# the head runs no actor: the pool's actor goes to one of two workers, and when its node is
# lost it can only restart on the other
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
try:
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    out = {}
    batch = threading.Thread(target=lambda: out.update(results=localize_many_ray(map_path, queries, K, actors=1)))
    batch.start()
    deadline, lost = time.monotonic() + 120, None
    while lost is None and time.monotonic() < deadline:
        for name in ray.util.list_named_actors():
            if name.startswith(ACTOR_PREFIX):
                try:
                    actor = ray.get_actor(name)
                    if ray.get(actor.in_progress.remote(), timeout=30):
                        lost = ray.get(actor.node.remote(), timeout=30)
                except (ValueError, ray.exceptions.RayError):
                    pass
        time.sleep(0.05)
    assert lost is not None, "no actor was seen localizing a query"
    running = batch.is_alive()
    cluster.remove_node(next(w for w in workers if w.node_id == lost))
    batch.join(300)
    assert running and not batch.is_alive(), (running, batch.is_alive())
    got = out["results"]
    assert len(got) == len(local)
    for g, w in zip(got, local):
        assert (g.success, g.reason) == (w.success, w.reason), (g.reason, w.reason)
        if w.success:
            np.testing.assert_allclose(g.cam_from_world, w.cam_from_world, rtol=0, atol=1e-6)
    print("survived", sum(g.success for g in got), "of", len(got))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def test_a_lost_node_is_survived_with_the_map_on_shared_storage(demo):
    """The node running the pool's actor is removed from a two-node cluster mid-batch: the
    actor restarts on the other node (the map is on storage both see) and every query gets
    the local result."""
    pytest.importorskip("ray")
    np.save(demo.tmp / "K.npy", demo.scene.K)
    ray_tmp = tempfile.mkdtemp(prefix="ray-")  # a Cluster of its own, never joined by ray.init elsewhere
    try:
        result = python_child(NODE_LOSS, str(demo.map_dir), *map(str, demo.files), capture_output=True, text=True,
                              timeout=300, env=dict(child_env(), RAY_TMPDIR=ray_tmp))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "survived" in result.stdout


def test_an_actor_that_may_not_restart_fails_its_query_alone(ray_local, demo):
    """Without restarts, the query its actor held fails with the reason; the batch goes on
    with the other actor."""
    killer, killed = kill_an_actor_mid_query(ray_local)
    results = localize_many_ray(demo.map_dir, demo.queries, demo.scene.K, actors=2, max_restarts=0,
                                max_task_retries=0)
    killer.join(timeout=30)
    assert killed, "no actor was seen localizing a query"
    died = [i for i, r in enumerate(results) if "its Ray actor died more often than max_restarts" in r.reason]
    assert len(died) == 1 and not results[died[0]].success
    assert_same_results([r for i, r in enumerate(results) if i not in died],
                        [r for i, r in enumerate(demo.local) if i not in died])
    assert wait_for_free_cpus(ray_local, 2)


def test_a_missing_or_corrupt_map_is_a_clear_error(ray_local, demo, tmp_path):
    queries = demo.queries[:2]
    with pytest.raises(FileNotFoundError, match="no map here"):
        localize_many_ray(tmp_path / "nowhere", queries, demo.scene.K)
    # an index whose bytes changed: the actors' Map.load says what the local one says
    shutil.copytree(demo.map_dir, tmp_path / "flipped")
    index = next((tmp_path / "flipped").glob("cann-*.pyloc"))
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index.write_bytes(bytes(data))
    with pytest.raises(pylocalize.FormatError) as local:
        Map.load(tmp_path / "flipped")
    with pytest.raises(pylocalize.FormatError) as remote:
        localize_many_ray(tmp_path / "flipped", queries, demo.scene.K, actors=2)
    assert str(remote.value) == str(local.value)
    # the index file gone
    shutil.copytree(demo.map_dir, tmp_path / "no_index")
    next((tmp_path / "no_index").glob("cann-*.pyloc")).unlink()
    with pytest.raises(pylocalize.FormatError, match="retrieval index .* is missing; rebuild"):
        localize_many_ray(tmp_path / "no_index", queries, demo.scene.K, actors=1)
    # more actors than the cluster has CPUs: an error once start_timeout_s is over, not a wait
    # (at least one of 3 cannot start on 2 CPUs; on a loaded machine more may miss the 5 s)
    with pytest.raises(TimeoutError, match="[123] of 3 Ray actors did not start within 5 s"):
        localize_many_ray(demo.map_dir, demo.queries, demo.scene.K, actors=3, start_timeout_s=5)
    assert wait_for_free_cpus(ray_local, 2)  # a failed start leaves no actor behind
    # mistakes of the call itself, before any actor starts
    with pytest.raises(ValueError, match="6 queries but 2 cameras"):
        localize_many_ray(demo.map_dir, demo.queries, [demo.scene.K] * 2)
    with pytest.raises(TypeError, match="unknown localization options max_error:"):
        localize_many_ray(demo.map_dir, queries, demo.scene.K, max_error=4.0)
    with pytest.raises(ValueError, match="actors must be an integer >= 1"):
        localize_many_ray(demo.map_dir, queries, demo.scene.K, actors=0)


def _localize_command(demo, out: Path, *extra: str) -> list:
    return ["localize", "--map", str(demo.map_dir), "--images", *map(str, demo.files), str(demo.tmp / "missing.jpg"),
            "--camera", demo.scene.camera.to_string(), "--allow-failures", "--out", str(out), *extra]


def test_cli_ray_auto_writes_the_same_pose_file(ray_local, demo, tmp_path, capsys):
    # locally 2 threads for 5 queries: RANSAC is seeded per query, so threads that run several
    # queries give the poses the actors give
    assert main(_localize_command(demo, tmp_path / "local.txt", "--workers", "2")) == 0
    local_out = capsys.readouterr().out
    assert main(_localize_command(demo, tmp_path / "ray.txt", "--ray", "auto", "--workers", "2")) == 0
    ray_out = capsys.readouterr().out
    assert "4 localized, 1 failed" in local_out and "4 localized, 1 failed" in ray_out
    assert "missing.jpg: failed: bad query" in ray_out
    assert (tmp_path / "ray.txt").read_bytes() == (tmp_path / "local.txt").read_bytes()
    assert sorted(read_pose_file(tmp_path / "ray.txt")) == [f.name for f in demo.files]


def test_ray_stays_optional(demo):
    """``import pylocalize`` and the command line never import Ray; without it, ``--ray`` is one
    line saying how to install it (a child interpreter where ``import ray`` fails)."""
    code = (
        "import sys\n"
        "import pylocalize, pylocalize.distributed.batch, pylocalize.localization.cli\n"
        "from pylocalize.cli import main\n"
        "assert 'ray' not in sys.modules, 'imported ray'\n"
        "sys.modules['ray'] = None\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    child = python_child(code, *_localize_command(demo, demo.tmp / "child.txt", "--ray", "auto"),
                         capture_output=True, text=True, timeout=300)
    assert child.returncode == 1, child.stderr
    assert "Traceback" not in child.stderr
    assert ('pylocalize localize: error: --ray: pylocalize.distributed runs on Ray, which is not installed: '
            'pip install "pylocalize[dist]"') in child.stderr


def test_an_address_where_no_cluster_answers_is_one_line(demo):
    """``--ray HOST:PORT`` where nothing listens stops at once (Ray itself would retry for
    minutes), as does an address that is not one (a child interpreter: Ray not yet started)."""
    import socket

    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address, message in ((f"127.0.0.1:{port}", f"no Ray cluster answers at 127.0.0.1:{port}"),
                             ("nonsense", "Ray address 'nonsense': give 'auto', 'local' or the cluster's HOST:PORT")):
        child = python_child("import sys\nfrom pylocalize.cli import main\nsys.exit(main(sys.argv[1:]))\n",
                             *_localize_command(demo, demo.tmp / "unreached.txt", "--ray", address),
                             capture_output=True, text=True, timeout=120)
        assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
        assert f"pylocalize localize: error: {message}" in child.stderr
    assert not (demo.tmp / "unreached.txt").exists()
