"""Concurrent use of the indexes from several Python threads (issue 16).

What the index docstrings promise, tested as stated: searches may run with searches and
with add / remove / reset / train / len / ntotal / the grid configuration; changes are
serialized by the index lock, so every search sees the index as it was before or after
each change, never part of one.

One writer thread applies a fixed, seeded list of changes, counting the ones finished.
Readers note that count before and after each call: the call may have seen any state
from the first count to one past the last (a change can finish in the core before the
writer counts it). Each result must equal a numpy brute-force reference over one of those
states. Each scenario runs in a child process with faulthandler armed, so a deadlock ends
with the threads' stacks and a failure instead of hanging the suite.
"""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path

import numpy as np
from conftest import brute_knn, hamming_matrix, python_child, random_codes

import pylocalize

TESTS_DIR = Path(__file__).resolve().parent
TIMEOUT_S = 60


def run_scenario(name: str, timeout: int = TIMEOUT_S) -> str:
    code = ("import faulthandler, sys\n"
            f"faulthandler.dump_traceback_later({timeout}, exit=True)\n"
            f"sys.path.insert(0, {str(TESTS_DIR)!r})\n"
            "import test_concurrency as t\n"
            f"t.{name}()\n"
            "print('SCENARIO OK')\n")
    proc = python_child(code, capture_output=True, text=True, timeout=timeout + 30)
    assert proc.returncode == 0 and "SCENARIO OK" in proc.stdout, \
        f"rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


class Run:
    """The writer's progress and the threads' errors."""

    def __init__(self, num_states: int):
        self.num_states = num_states
        self.done = 0  # changes finished; written by the writer only
        self.stop = threading.Event()
        self.errors: list = []
        self.calls = 0

    def observe(self, call):
        """call() and the states it may have seen."""
        first = self.done
        result = call()
        last = min(self.done + 1, self.num_states - 1)
        self.calls += 1
        return result, range(first, last + 1)

    def thread(self, body, loop=True):
        def target():
            try:
                if loop:
                    while not self.stop.is_set():
                        body()
                else:
                    body()
            except BaseException:
                self.errors.append(traceback.format_exc())
                self.stop.set()
        return threading.Thread(target=target, daemon=True)


def hammer(run: Run, changes, readers, pause=0.01, timeout=30.0):
    """Applies `changes` (callables) in a writer thread while `readers` loop; checks that
    every thread ends and none failed."""
    def writer():
        for change in changes:
            time.sleep(pause)
            change()
            run.done += 1
        time.sleep(pause)
        run.stop.set()
    threads = [run.thread(writer, loop=False)] + [run.thread(r) for r in readers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads still running: deadlock?"
    assert not run.errors, "\n".join(run.errors)
    assert run.done == len(changes)


def consistent(window, check) -> bool:
    """Whether check(t) holds for some state t of the window."""
    return any(check(t) for t in window)


# --- BinaryIndex -------------------------------------------------------------------------

def scenario_binary():
    pylocalize.set_num_threads(2)
    rng = np.random.default_rng(1)
    nbits, total, k = 256, 6000, 10
    universe = random_codes(rng, total, nbits)  # the code of id i is universe[i]
    queries = random_codes(rng, 8, nbits)
    dist = hamming_matrix(queries, universe)
    all_ids = np.arange(total, dtype=np.int64)
    index = pylocalize.BinaryIndex(nbits)
    present = np.zeros(total, bool)
    index.add(universe[:1000], all_ids[:1000])
    present[:1000] = True
    states = [present.copy()]
    changes = []
    next_id = 1000
    for step in range(24):
        if step == 12:
            changes.append(index.reset)
            present[:] = False
        elif step % 3 == 2:
            drop = rng.choice(np.flatnonzero(present), 150, replace=False)
            changes.append(lambda drop=drop: index.remove_ids(drop))
            present[drop] = False
        else:
            new = all_ids[next_id:next_id + 200]
            changes.append(lambda new=new: index.add(universe[new], new))
            present[new] = True
            next_id += 200
        states.append(present.copy())
    run = Run(len(states))

    def knn_matches(result, t):
        mask = states[t]
        d, i = brute_knn(dist[:, mask], all_ids[mask], k)
        return np.array_equal(result[0], d) and np.array_equal(result[1], i)

    def search():
        result, window = run.observe(lambda: index.search(queries, k))
        assert consistent(window, lambda t: knn_matches(result, t)), f"search matches no state in {window}"

    def range_search():
        radius = 110
        (lims, d, i), window = run.observe(lambda: index.range_search(queries, radius))

        def matches(t):
            mask = states[t] & (dist <= radius)
            expected = [set(zip(all_ids[row].tolist(), dist[q, row].tolist())) for q, row in enumerate(mask)]
            got = [set(zip(i[a:b].tolist(), d[a:b].tolist())) for a, b in zip(lims[:-1], lims[1:])]
            return got == expected
        assert lims[-1] == len(i) and consistent(window, matches)

    def sizes():
        # Separate calls: each may see a different state of the window.
        (n, ntotal, ids), window = run.observe(lambda: (len(index), index.ntotal, index.ids()))
        assert consistent(window, lambda t: n == states[t].sum())
        assert consistent(window, lambda t: ntotal == states[t].sum())
        assert consistent(window, lambda t: np.array_equal(np.sort(ids), all_ids[states[t]]))

    hammer(run, changes, [search, search, range_search, sizes])
    assert run.calls > 50


def test_binary_index_concurrent_search_and_changes():
    run_scenario("scenario_binary")


# --- MultiBitIndex -----------------------------------------------------------------------

def sdc_reference(cq, cx, dim, u):
    """Cosine of the reconstructions sum_p 2^-p (2 b_p - 1), from the definition."""
    pb = (dim + 7) // 8

    def recon(c):
        planes = [np.unpackbits(c[:, p * pb:(p + 1) * pb], axis=1, bitorder="little")[:, :dim]
                  for p in range(u)]
        return sum(2.0 ** -p * (2.0 * b - 1) for p, b in enumerate(planes))
    rq, rx = recon(cq), recon(cx)
    return (rq @ rx.T) / np.linalg.norm(rq, axis=1)[:, None] / np.linalg.norm(rx, axis=1)[None, :]


def scenario_multibit():
    pylocalize.set_num_threads(2)
    rng = np.random.default_rng(2)
    dim, u, total, k = 64, 2, 4000, 8
    universe = pylocalize.binarize(rng.standard_normal((total, dim)).astype(np.float32), u)
    queries = pylocalize.binarize(rng.standard_normal((6, dim)).astype(np.float32), u)
    ref = sdc_reference(queries, universe, dim, u)
    all_ids = np.arange(total, dtype=np.int64)
    index = pylocalize.MultiBitIndex(dim, u)
    present = np.zeros(total, bool)
    index.add(universe[:800], all_ids[:800])
    present[:800] = True
    states = [present.copy()]
    changes = []
    next_id = 800
    for step in range(20):
        if step == 10:
            changes.append(index.reset)
            present[:] = False
        else:
            new = all_ids[next_id:next_id + 150]
            changes.append(lambda new=new: index.add(universe[new], new))
            present[new] = True
            next_id += 150
        states.append(present.copy())
    run = Run(len(states))

    def topk_matches(scores, ids, t, atol=1e-5):
        mask = states[t]
        n = int(mask.sum())
        k_eff = min(k, n)
        if (ids[:, k_eff:] != -1).any() or (ids[:, :k_eff] < 0).any():
            return False
        if not mask[ids[:, :k_eff]].all():
            return False
        got = np.take_along_axis(ref, ids[:, :k_eff], 1)
        if k_eff == 0:
            return True
        kth = np.sort(ref[:, mask], axis=1)[:, -k_eff]
        return (np.allclose(scores[:, :k_eff], got, rtol=1e-5, atol=atol)
                and (np.diff(scores[:, :k_eff], axis=1) <= atol).all()
                and np.allclose(scores[:, k_eff - 1], kth, rtol=1e-5, atol=atol))

    def search():
        (s, i), window = run.observe(lambda: index.search(queries, k))
        assert consistent(window, lambda t: topk_matches(s, i, t)), f"search matches no state in {window}"

    def sizes():
        # Separate calls: each may see a different state of the window.
        (n, ids), window = run.observe(lambda: (index.ntotal, index.ids()))
        assert consistent(window, lambda t: n == states[t].sum())
        assert consistent(window, lambda t: np.array_equal(np.sort(ids), all_ids[states[t]]))

    hammer(run, changes, [search, search, sizes])
    assert run.calls > 50


def test_multibit_index_concurrent_search_and_changes():
    run_scenario("scenario_multibit")


# --- CANNIndex ---------------------------------------------------------------------------

def kernel_cann(r, p0=120.0, p1=0.4592):
    a = p1 / (1 - p1)
    x = np.clip(r / p0, 0, 1)
    return np.where(r < p0, (1 - x ** a) ** (1 / a), 0.0)


def scenario_cann():
    pylocalize.set_num_threads(2)
    rng = np.random.default_rng(3)
    dim, per_image, num_images, k = 32, 40, 60, 5
    centers = rng.uniform(0, 120, (num_images, dim))
    universe = np.concatenate([c + rng.normal(0, 25, (per_image, dim)) for c in centers]).astype(np.float32)
    image_of = np.repeat(np.arange(num_images, dtype=np.int64) * 7 + 3, per_image)  # feature -> image id
    query_sets = [(centers[rng.integers(num_images)] + rng.normal(0, 25, (30, dim))).astype(np.float32)
                  for _ in range(4)]
    # Distances from every query feature to every feature of the universe.
    qdist = [np.sqrt(((q.astype(np.float64)[:, None] - universe.astype(np.float64)[None]) ** 2).sum(-1))
             for q in query_sets]
    index = pylocalize.CANNIndex(dim)
    grid_view = pylocalize.CANNIndex(dim, method="grid", _impl=index._impl)  # same features
    present = np.zeros(len(universe), bool)

    def add_images(images):
        rows = np.flatnonzero(np.isin(image_of, images))
        return lambda: index.add(universe[rows], image_of[rows]), rows

    change, rows = add_images(image_of[::per_image][:20])
    change()
    present[rows] = True
    states = [present.copy()]
    changes = []
    next_image = 20
    for step in range(24):
        if step == 12:
            changes.append(index.reset)
            present[:] = False
        elif step % 4 == 3:
            have = np.unique(image_of[present])
            drop = rng.choice(have, min(3, len(have)), replace=False)
            changes.append(lambda drop=drop: index.remove_images(drop))
            present[np.isin(image_of, drop)] = False
        else:
            change, rows = add_images(image_of[::per_image][next_image:next_image + 2])
            changes.append(change)
            present[rows] = True
            next_image += 2
        states.append(present.copy())
    run = Run(len(states))
    cache = {}

    def reference(s, t):
        """(image ids ascending, S(m)) of query set s over state t, from the definition."""
        if (s, t) not in cache:
            mask = states[t]
            images = np.unique(image_of[mask])
            scores = np.array([kernel_cann(qdist[s][:, mask & (image_of == m)].min(1)).mean() for m in images])
            cache[s, t] = images, scores
        return cache[s, t]

    def ranking_matches(scores, ids, s, t, atol=1e-4):
        images, ref = reference(s, t)
        k_eff = min(k, len(images))
        if (ids[k_eff:] != -1).any() or not np.isneginf(scores[k_eff:]).all():
            return False
        if not np.isin(ids[:k_eff], images).all():
            return False
        if k_eff == 0:
            return True
        got = ref[np.searchsorted(images, ids[:k_eff])]
        return (np.allclose(scores[:k_eff], got, atol=atol) and (np.diff(scores[:k_eff]) <= atol).all()
                and abs(scores[k_eff - 1] - np.sort(ref)[::-1][k_eff - 1]) <= atol)

    def search():
        s = run.calls % len(query_sets)
        (scores, ids), window = run.observe(lambda: index.search(query_sets[s], k))
        assert consistent(window, lambda t: ranking_matches(scores, ids, s, t)), f"no state in {window}"

    def search_batch():
        (scores, ids), window = run.observe(lambda: index.search_batch(query_sets, k))
        assert consistent(window, lambda t: all(ranking_matches(scores[s], ids[s], s, t)
                                                for s in range(len(query_sets)))), f"no state in {window}"

    def grid_search():
        # Approximate: an image it returns was in the state, with a score no higher than
        # its exact S(m) (grids can only miss the nearest feature, never beat it).
        (scores, ids), window = run.observe(lambda: grid_view.search(query_sets[0], k))

        def plausible(t):
            images, ref = reference(0, t)
            found = ids[ids >= 0]
            if not np.isin(found, images).all():
                return False
            exact = ref[np.searchsorted(images, found)]
            return bool((scores[:len(found)] <= exact + 1e-4).all())
        assert consistent(window, plausible), f"grid search matches no state in {window}"

    def configure():
        # Exclusive-lock changes that leave the exact results alone: train and new grid
        # parameters (the same ones, so the grids are rebuilt on the next grid search).
        grid_view._configure_grid()
        try:
            index.train(4, iterations=2)
        except ValueError as e:  # fewer features than lists, right after a reset
            assert "at least" in str(e)
        (n, num, images), window = run.observe(lambda: (len(index), index.num_images, index.image_ids()))
        assert consistent(window, lambda t: n == states[t].sum())
        assert consistent(window, lambda t: num == len(np.unique(image_of[states[t]])))
        assert consistent(window, lambda t: np.array_equal(images, np.unique(image_of[states[t]])))

    hammer(run, changes, [search, search_batch, grid_search, configure])
    assert run.calls > 30


def test_cann_index_concurrent_search_and_changes():
    run_scenario("scenario_cann")


# --- issue 16 reproducer -----------------------------------------------------------------

def scenario_len_during_train():
    # The reproducer's sizes: train() holds the index's exclusive lock for a second or two
    # while the main thread calls len(). Before the fix the first waited for the GIL (to
    # poll Ctrl-C, once a k-means step took over 50 ms) and the second held the GIL while
    # waiting for the lock.
    pylocalize.set_num_threads(2)
    index = pylocalize.CANNIndex(64)
    index.add((np.random.default_rng(0).standard_normal((200_000, 64)) * 50).astype(np.float32), 0)
    t = threading.Thread(target=index.train, args=(400,), kwargs=dict(iterations=4))
    t.start()
    time.sleep(0.05)
    polls = 0
    while t.is_alive():
        assert len(index) == 200_000 and index.ntotal == 200_000
        polls += 1
    t.join()
    assert index.is_trained and polls > 0


def test_len_during_train_does_not_deadlock():
    run_scenario("scenario_len_during_train")
