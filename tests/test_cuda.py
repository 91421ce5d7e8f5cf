"""The CUDA searches (``device="cuda"``, cpp/cuda) against the CPU indexes, bit for bit.

Without the CUDA build or a usable device the GPU tests skip, and the tests of what a caller
is told (a build without CUDA, no device, a bad device name) run instead. The kernels' logic
itself is checked on the CPU by the ctest ``device_logic`` (cpp/cuda/device_logic_test.cc).
SDC scores match at every SIMD level; float distances (dot products: fused multiply-adds)
match the x86 and NEON levels, and those comparisons skip at the portable scalar level, which
rounds each product.
"""

from __future__ import annotations

import numpy as np
import pytest

import pylocalize
from pylocalize import _core
from pylocalize.index.knn import assign

gpu = pytest.mark.skipif(not pylocalize.has_cuda(), reason="needs the CUDA build and a usable CUDA device")
fused = pytest.mark.skipif(pylocalize.simd_level() == "scalar",
                           reason="the scalar SIMD level rounds unfused; the GPU matches the SIMD levels")


# ---- what a caller is told, with or without a GPU ----------------------------------------------

def test_has_cuda_needs_the_build_and_a_device():
    assert isinstance(pylocalize.has_cuda(), bool)
    assert pylocalize.has_cuda() == (pylocalize.cuda_built() and _core.cuda_device_count() > 0)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:-1", 1.5, True])
def test_bad_device_names_say_the_choices(device):
    with pytest.raises(ValueError, match="'cpu', 'cuda' or 'cuda:N'"):
        pylocalize.BinaryIndex(64, device=device)


def test_cpu_device_is_the_default():
    index = pylocalize.BinaryIndex(64)
    assert index.device == "cpu"
    assert index.to_cpu() is index


@pytest.mark.skipif(pylocalize.has_cuda(), reason="a usable CUDA device is present")
def test_cuda_without_a_device_says_the_fix():
    fix = "-DPYLOCALIZE_CUDA=ON" if not pylocalize.cuda_built() else "no usable CUDA device"
    with pytest.raises(ValueError, match=fix):
        pylocalize.BinaryIndex(64, device="cuda")
    with pytest.raises(ValueError, match=fix):
        pylocalize.MultiBitIndex(64, 2).to_gpu()
    with pytest.raises(ValueError, match=fix):
        pylocalize.CANNIndex(8, device="cuda:0")
    x = np.zeros((4, 8), np.float32)
    with pytest.raises(ValueError, match=fix):
        assign(x, x, device="cuda")


# ---- GPU against CPU ----------------------------------------------------------------------------

def _codes(rng, n, code_size, dup=0.2):
    codes = rng.integers(0, 256, (n, code_size), dtype=np.uint8)
    m = int(n * dup)  # repeated codes: tied distances
    codes[n - m:] = codes[:m]
    return codes


@gpu
@pytest.mark.parametrize("nbits", [8, 64, 200, 256, 1024, 1032])
def test_binary_knn_and_range_match_cpu(nbits):
    rng = np.random.default_rng(nbits)
    n = 3000
    codes = _codes(rng, n, nbits // 8)
    ids = rng.permutation(10 * n)[:n].astype(np.int64)  # not ascending with position
    cpu = pylocalize.BinaryIndex(nbits)
    cpu.add(codes, ids)
    dev = pylocalize.BinaryIndex.deserialize(cpu.serialize()).to_gpu()
    q = np.concatenate([codes[:20], _codes(rng, 20, nbits // 8)])
    for k in (1, 10, 100, n + 5):
        d_cpu, i_cpu = cpu.search(q, k)
        d_gpu, i_gpu = dev.search(q, k)
        np.testing.assert_array_equal(d_gpu, d_cpu)
        np.testing.assert_array_equal(i_gpu, i_cpu)
    radius = nbits // 2 - 2
    for a, b in zip(dev.range_search(q, radius), cpu.range_search(q, radius)):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def small_batches(monkeypatch):
    """Query batches of a few rows (cpp/cuda/device.cuh RowsPerBatch), so that every search
    streams its queries through many batches, as it does when they outgrow the device."""
    monkeypatch.setenv("PYLOCALIZE_CUDA_BATCH_BYTES", "300000")


@gpu
def test_binary_streams_query_batches(small_batches):
    rng = np.random.default_rng(2)
    codes = _codes(rng, 5000, 32)
    cpu = pylocalize.BinaryIndex(256)
    cpu.add(codes)
    dev = pylocalize.BinaryIndex.deserialize(cpu.serialize()).to_gpu()
    q = _codes(rng, 37, 32)
    for a, b in zip(dev.search(q, 9), cpu.search(q, 9)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(dev.range_search(q, 110), cpu.range_search(q, 110)):
        np.testing.assert_array_equal(a, b)


@gpu
@fused
def test_cann_and_assign_stream_query_batches(small_batches):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 60, (8000, 16)).astype(np.float32)
    cpu = pylocalize.CANNIndex(16, p0=100.0)
    cpu.add(x, rng.integers(0, 2000, 8000).astype(np.int64))
    dev = pylocalize.CANNIndex.deserialize(cpu.serialize()).to_gpu()
    q = x[:500] + 1
    for a, b in zip(dev.search(q, 10), cpu.search(q, 10)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(assign(q, x, 3, device="cuda"), assign(q, x, 3)):
        np.testing.assert_array_equal(a, b)


@gpu
def test_binary_many_tiles_and_changes():
    rng = np.random.default_rng(1)
    codes = _codes(rng, 140_000, 32)  # more codes than one device tile
    index = pylocalize.BinaryIndex(256, device="cuda")
    index.add(codes)
    q = codes[::7000]
    cpu = pylocalize.BinaryIndex.deserialize(index.serialize())
    for a, b in zip(index.search(q, 50), cpu.search(q, 50)):
        np.testing.assert_array_equal(a, b)
    # a change drops the device copy: the next search sees it
    index.remove_ids(np.arange(0, 140_000, 3))
    cpu.remove_ids(np.arange(0, 140_000, 3))
    for a, b in zip(index.search(q, 50), cpu.search(q, 50)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="on the CPU"):
        index.search(q, 5000)


@gpu
@pytest.mark.parametrize("bits_per_dim", [1, 2, 3, 4])
def test_sdc_matches_cpu(bits_per_dim):
    rng = np.random.default_rng(bits_per_dim)
    dim, n = 96, 70_000 if bits_per_dim == 2 else 4000  # 2 bits: more codes than one device tile
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[n // 2:n // 2 + 300] = x[:300]  # ties
    xq = rng.normal(size=(25, dim)).astype(np.float32)
    codes, qcodes = pylocalize.binarize(x, bits_per_dim), pylocalize.binarize(xq, bits_per_dim)
    cpu = pylocalize.MultiBitIndex(dim, bits_per_dim)
    cpu.add(codes, ids=np.arange(n, dtype=np.int64)[::-1].copy(), vectors=x)
    dev = pylocalize.MultiBitIndex.deserialize(cpu.serialize()).to_gpu()
    for kw in (dict(k=1), dict(k=10), dict(k=10, candidates=200), dict(k=5, rerank=40, query_vectors=xq),
               dict(k=5, rerank=40, candidates=400, query_vectors=xq)):
        s_cpu, i_cpu = cpu.search(qcodes, **kw)
        s_gpu, i_gpu = dev.search(qcodes, **kw)
        np.testing.assert_array_equal(i_gpu, i_cpu)
        np.testing.assert_array_equal(s_gpu, s_cpu)


@gpu
@fused
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_assign_matches_cpu(dtype):
    rng = np.random.default_rng(7)
    if dtype == np.uint8:
        c = rng.integers(0, 4, (5000, 40)).astype(np.uint8)  # coarse: tied distances
        x = rng.integers(0, 4, (300, 40)).astype(np.uint8)
    else:
        c = rng.normal(size=(5000, 40)).astype(np.float32)
        x = rng.normal(size=(300, 40)).astype(np.float32)
    c[4000:] = c[:1000]
    if dtype == np.float32:  # more rows than one device tile
        c = np.concatenate([c, rng.normal(size=(35000, 40)).astype(np.float32)])
    for m in (1, 8):
        for a, b in zip(assign(x, c, m, device="cuda"), assign(x, c, m)):
            np.testing.assert_array_equal(a, b)


@gpu
def test_inner_product_knn_against_numpy():
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(20000, 64)).astype(np.float32)
    x = rng.normal(size=(50, 64)).astype(np.float32)
    labels, ips = _core.GpuFloatRows(rows, 0).search(x, 10, "ip", 64)
    ref = x.astype(np.float64) @ rows.T.astype(np.float64)
    np.testing.assert_allclose(ips, np.take_along_axis(ref, labels, 1), rtol=1e-5, atol=1e-4)
    best = np.sort(ref, 1)[:, ::-1][:, :10]
    np.testing.assert_allclose(ips, best, rtol=1e-5, atol=1e-4)


@gpu
@fused
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
@pytest.mark.parametrize("kernel", ["cann", "gaussian"])
def test_cann_exact_matches_cpu(dtype, kernel):
    rng = np.random.default_rng(11)
    n, dim = 20000, 32
    x = rng.integers(0, 60, (n, dim)).astype(dtype)
    image_ids = rng.integers(0, 400, n).astype(np.int64) * 3
    cpu = pylocalize.CANNIndex(dim, kernel=kernel, p0=150.0, sigma=40.0)
    cpu.add(x, image_ids)
    dev = pylocalize.CANNIndex.deserialize(cpu.serialize(), kernel=kernel, p0=150.0, sigma=40.0).to_gpu()
    queries = [x[rng.integers(0, n, 300)] + rng.integers(0, 3, (300, dim)).astype(dtype) for _ in range(3)]
    for q in queries:
        for a, b in zip(dev.search(q, 20), cpu.search(q, 20)):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(dev.search_batch(queries, 7), cpu.search_batch(queries, 7)):
        np.testing.assert_array_equal(a, b)
    dev.add(x[:100], np.full(100, 99999, np.int64))  # a change: the device copy is rebuilt
    cpu.add(x[:100], np.full(100, 99999, np.int64))
    for a, b in zip(dev.search(queries[0], 20), cpu.search(queries[0], 20)):
        np.testing.assert_array_equal(a, b)
    dev.method = "grid"
    with pytest.raises(ValueError, match="searches on the CPU only"):
        dev.search(queries[0], 5)


@gpu
@fused
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_cann_ivf_matches_one_cpu_thread(dtype):
    rng = np.random.default_rng(12)
    n, dim = 30000, 32
    x = rng.integers(0, 60, (n, dim)).astype(dtype)
    image_ids = rng.integers(0, 500, n).astype(np.int64)
    cpu = pylocalize.CANNIndex(dim, method="ivf", p0=150.0)
    cpu.add(x, image_ids)
    cpu.train(64, seed=1)
    dev = pylocalize.CANNIndex.deserialize(cpu.serialize()).to_gpu()
    queries = [x[rng.integers(0, n, 300)] + rng.integers(0, 3, (300, dim)).astype(dtype) for _ in range(3)]
    threads = pylocalize.get_num_threads()
    pylocalize.set_num_threads(1)  # the CPU's sum in query order, as the GPU adds
    try:
        for nprobe in (1, 4, 64):
            cpu.nprobe = dev.nprobe = nprobe
            for q in queries:
                for a, b in zip(dev.search(q, 20), cpu.search(q, 20)):
                    np.testing.assert_array_equal(a, b)
        dev.add(x[:50], np.full(50, 7777, np.int64))  # a change: the device copy is rebuilt
        cpu.add(x[:50], np.full(50, 7777, np.int64))
        for a, b in zip(dev.search(queries[0], 20), cpu.search(queries[0], 20)):
            np.testing.assert_array_equal(a, b)
    finally:
        pylocalize.set_num_threads(threads)
