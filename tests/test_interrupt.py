"""Ctrl-C (SIGINT) stops long core calls promptly, with the right exception (issue 16).

Each scenario runs in a child process, so a regression (a call that ignores Ctrl-C) fails
on the timeout instead of hanging the suite. The parent sends a real SIGINT, as a
terminal does, after stamping the time it sent it; the child measures from that stamp to
the moment it catches the exception. Both use time.monotonic(), one clock for the whole
machine on the platforms these tests run on.

The bound is the one the issue asks for, 0.5 s. The core polls per block of work (a few
milliseconds), so a healthy run takes tens of milliseconds; a loaded CI machine can
still stall the child for a while, so a scenario gets a second try before it fails.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from conftest import python_child

import pylocalize

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

LATENCY_BOUND_S = 0.5
PRELUDE = """
import os, signal, sys, threading, time
import numpy as np
import pylocalize as pl
pl.set_num_threads(2)
STAMP = sys.argv[1]

def ready():
    print("READY", flush=True)

def caught(exc):
    # The parent writes the stamp before it sends the signal.
    sent = float(open(STAMP).read())
    print(f"CAUGHT {type(exc).__name__} {time.monotonic() - sent:.4f}", flush=True)
"""


def run_child(body: str, delay: float = 0.6, timeout: float = 60.0) -> str:
    """Runs PRELUDE + body; once it prints READY, waits `delay` s and sends SIGINT.
    Returns the child's stdout (stderr is appended on failure)."""
    with tempfile.TemporaryDirectory() as tmp:
        stamp = os.path.join(tmp, "stamp")
        proc = python_child(PRELUDE + body, stamp, popen=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
        try:
            deadline = time.monotonic() + timeout
            line = ""
            while not line.startswith("READY"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                    raise AssertionError("child did not get ready")
                line = proc.stdout.readline()
                if not line:
                    raise AssertionError("child ended before READY:\n" + proc.stderr.read())
            time.sleep(delay)
            with open(stamp + ".tmp", "w") as f:
                f.write(repr(time.monotonic()))
            os.replace(stamp + ".tmp", stamp)
            os.kill(proc.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except BaseException:
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode == 0, f"child failed (rc {proc.returncode}):\n{out}\n{err}"
    return out


def caught(out: str):
    """(exception name, latency in s) from the child's CAUGHT line."""
    lines = [line.split() for line in out.splitlines() if line.startswith("CAUGHT")]
    assert lines, f"the call was not interrupted:\n{out}"
    return lines[0][1], float(lines[0][2])


def assert_prompt(body: str, expected: str = "KeyboardInterrupt", tries: int = 2) -> float:
    latencies = []
    for _ in range(tries):
        name, latency = caught(run_child(body))
        assert name == expected
        latencies.append(latency)
        if latency < LATENCY_BOUND_S:
            print(f"Ctrl-C latency {latency * 1000:.0f} ms")  # shown with pytest -s (benchmarks/README.md)
            return latency
    raise AssertionError(f"Ctrl-C took {latencies} s to stop the call (bound {LATENCY_BOUND_S} s)")


# Exact CANN search: 100k features, a third of them in one image (its chunk is scanned in
# pieces), 4 query images of 10k features, one per thread: each takes seconds, so a poll
# between query images alone would not meet the bound.
CANN_SETUP = """
rng = np.random.default_rng(0)
n = 100_000
ids = np.concatenate([np.zeros(n // 3, np.int64), rng.integers(1, 40, n - n // 3)])
index = pl.CANNIndex(64)
index.add((rng.standard_normal((n, 64)) * 50).astype(np.float32), ids)
queries = [(rng.standard_normal((10_000, 64)) * 50).astype(np.float32) for _ in range(4)]
"""


def test_cann_search_batch_stops_within_bound():
    assert_prompt(CANN_SETUP + """
ready()
try:
    index.search_batch(queries, 5)
    print("FINISHED")
except KeyboardInterrupt as e:
    caught(e)
""")


def test_render_large_faces_stops_within_bound():
    # 300 screen-filling quads drawn back to front at 7x7 supersampling, one view: each
    # of the view's bands takes seconds, spent inside single triangles.
    assert_prompt("""
from pylocalize.render import Mesh, Renderer
z = np.repeat(np.linspace(4.0, 2.0, 300), 4)[:, None]
corners = np.tile([[-10.0, -10.0], [10.0, -10.0], [10.0, 10.0], [-10.0, 10.0]], (300, 1))
vertices = np.hstack([corners, z]).astype(np.float32)
base = 4 * np.arange(300)[:, None]
faces = np.concatenate([base + [0, 1, 2], base + [0, 2, 3]]).astype(np.int32)
mesh = Mesh(vertices, faces)
K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
pose = np.hstack([np.eye(3), np.zeros((3, 1))])
ready()
try:
    Renderer(640, 480, K, supersample=7).render(mesh, pose, outputs=("rgb", "depth"))
    print("FINISHED")
except KeyboardInterrupt as e:
    caught(e)
""")


def test_train_in_main_thread_stops_within_bound():
    # k-means++ seeding of 300 lists is serial and takes seconds.
    assert_prompt("""
rng = np.random.default_rng(0)
index = pl.CANNIndex(64)
index.add((rng.standard_normal((60_000, 64)) * 50).astype(np.float32), 0)
ready()
try:
    index.train(300, iterations=50)
    print("FINISHED")
except KeyboardInterrupt as e:
    caught(e)
print("TRAINED", index.is_trained)
""")


def test_grid_build_stops_within_bound():
    # 4096 grids over 40k features: a long build (and far from the memory bound).
    assert_prompt("""
rng = np.random.default_rng(0)
index = pl.CANNIndex(32, method="grid", grid=dict(num_grids=1024, num_radii=4))
index.add((rng.standard_normal((40_000, 32)) * 50).astype(np.float32), rng.integers(0, 100, 40_000))
ready()
try:
    index.search(np.zeros((3, 32), np.float32), 3)
    print("FINISHED")
except KeyboardInterrupt as e:
    caught(e)
""")


def test_user_signal_handler_exception_propagates():
    # A handler installed with signal.signal runs once, and its exception (not
    # KeyboardInterrupt) comes out of the interrupted core call.
    out = run_child(CANN_SETUP + """
class Stop(Exception):
    pass
calls = []
def handler(signum, frame):
    calls.append(signum)
    raise Stop()
signal.signal(signal.SIGINT, handler)
ready()
try:
    index.search_batch(queries, 5)
    print("FINISHED")
except Stop as e:
    caught(e)
time.sleep(0.2)  # a second, stray exception would surface here
print("CALLS", len(calls))
print("HANDLER_RESTORED", signal.getsignal(signal.SIGINT) is handler)
""")
    name, latency = caught(out)
    assert name == "Stop"
    assert "CALLS 1" in out
    assert "HANDLER_RESTORED True" in out


def test_no_second_keyboard_interrupt_after_the_first():
    out = run_child(CANN_SETUP + """
ready()
try:
    index.search_batch(queries, 5)
except KeyboardInterrupt as e:
    caught(e)
try:
    for _ in range(20):  # bytecode and core calls: a pending signal would raise here
        time.sleep(0.01)
        len(index)
    print("CLEAN")
except KeyboardInterrupt:
    print("SECOND")
print("DEFAULT_HANDLER", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
""")
    assert caught(out)[0] == "KeyboardInterrupt"
    assert "CLEAN" in out and "DEFAULT_HANDLER True" in out


def test_call_from_other_thread_is_not_interrupted():
    # Ctrl-C stops the main thread's call; a search running in another thread at the same
    # time completes with the right result.
    out = run_child(CANN_SETUP + """
small = queries[0][:300]
expected = index.search(small, 5)
result = {}
def worker():
    result["got"] = index.search_batch([small] * 6, 5)
t = threading.Thread(target=worker)
t.start()
ready()
try:
    index.search_batch(queries, 5)
    print("FINISHED")
except KeyboardInterrupt as e:
    caught(e)
t.join()
got = result["got"]
print("WORKER_OK", all(np.array_equal(got[1][i], expected[1]) and np.allclose(got[0][i], expected[0])
                       for i in range(6)))
""")
    assert caught(out)[0] == "KeyboardInterrupt"
    assert "WORKER_OK True" in out


def test_signal_while_only_another_thread_is_in_the_core():
    # The main thread is in Python (sleeping): KeyboardInterrupt is raised there as usual,
    # and the other thread's core call is not stopped by it.
    # The worker searches in a loop, so that some search spans the signal whatever the
    # machine's speed; each result must be the right one.
    out = run_child(CANN_SETUP + """
part = [q[:1500] for q in queries[:2]]
expected = index.search(part[0], 5)
spans, wrong, stop = [], [], threading.Event()
def worker():
    try:
        while not stop.is_set():
            start = time.monotonic()
            got = index.search_batch(part, 5)
            spans.append((start, time.monotonic()))
            if not np.array_equal(got[1][0], expected[1]):
                wrong.append(got)
    except BaseException as e:  # a search stopped by the main thread's signal lands here
        wrong.append(e)
t = threading.Thread(target=worker)
t.start()
ready()
try:
    while True:
        time.sleep(0.01)
except KeyboardInterrupt as e:
    caught(e)
time.sleep(0.2)
stop.set()
t.join()
sent = float(open(STAMP).read())
# a search in flight at the signal, or started after it, completed with the right result
print("WORKER_OK", not wrong and spans[-1][1] > sent)
""")
    assert caught(out)[0] == "KeyboardInterrupt"
    assert "WORKER_OK True" in out


def test_huge_grid_is_refused_quickly():
    # Issue 16 reproducer: num_grids=10**6 used to be accepted and to fill memory for
    # minutes at the first search, deaf to Ctrl-C.
    start = time.monotonic()
    with pytest.raises(ValueError, match="num_grids must be in 1..1024"):
        pylocalize.CANNIndex(16, method="grid", grid=dict(num_grids=10**6))
    with pytest.raises(ValueError, match="num_grids \\* num_radii must be <= 4096"):
        pylocalize.CANNIndex(16, method="grid", grid=dict(num_grids=1024, num_radii=16))
    # The core has the same bounds, for callers of the binding.
    impl = pylocalize.CANNIndex(16)._impl
    with pytest.raises(ValueError, match="num_grids must be in 1..1024"):
        impl.set_grid_params(10**6, 4, 8, 0.5, 256, 0, 120.0)
    with pytest.raises(ValueError, match="dims must be in 1..16"):
        impl.set_grid_params(16, 4, 17, 0.5, 256, 0, 120.0)
    impl.set_grid_params(1024, 4, 16, 0.5, 256, 0, 120.0)  # in bounds
    assert time.monotonic() - start < 1.0


def test_grid_memory_estimate_is_refused():
    # In bounds, but 4096 grids over 2M features would need hundreds of GiB: refused, with the fix.
    rng = np.random.default_rng(0)
    index = pylocalize.CANNIndex(2, method="grid", grid=dict(num_grids=1024, num_radii=4, dims=2))
    index.add(rng.standard_normal((2_000_000, 2)).astype(np.float32), 0)
    with pytest.raises(ValueError, match="lower num_grids or num_radii"):
        index.search(np.zeros((1, 2), np.float32), 1)
