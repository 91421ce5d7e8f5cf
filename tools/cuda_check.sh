#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, in one go: builds the CUDA extension (build/cuda), runs
# tests/test_cuda.py and the ctest device_logic against it, then benchmarks/bench_cuda.py
# (FAISS GPU side by side when faiss-gpu-cu12 is installed). The checkout is not touched: the
# package runs from a temporary copy holding the CUDA build's extension.
#
#   tools/cuda_check.sh [OUT_DIR] [bench_cuda.py options...]     # OUT_DIR default: cuda-check
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-cuda-check}"
shift || true
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
. tools/nvcc_env.sh
cmake -S . -B build/cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DPYLOCALIZE_CUDA=ON -DPYLOCALIZE_BUILD_TESTS=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES:-90}" -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" \
  -DPython_EXECUTABLE="$(which python)" > "$out/cmake.txt"
ninja -C build/cuda > "$out/ninja.txt"
ctest --test-dir build/cuda --output-on-failure -R device_logic | tee "$out/ctest.txt"
repo="$PWD"
out="$(cd "$out" && pwd)"
pkg="$(mktemp -d)"
cp -r pylocalize "$pkg/"
rm -f "$pkg"/pylocalize/_core*.so
cp build/cuda/_core*.so "$pkg/pylocalize/"
# From the copy's folder, so that `import pylocalize` finds the copy, not the checkout.
cd "$pkg"
export PYTHONPATH="$pkg"
python -c "import pylocalize; assert pylocalize.has_cuda(), 'no usable CUDA device'; print(pylocalize.__file__)"
python -m pytest -q -p no:cacheprovider --rootdir "$repo" "$repo/tests/test_cuda.py" 2>&1 | tee "$out/test_cuda.txt"
python "$repo/benchmarks/bench_cuda.py" --json "$out/bench_cuda.json" "$@" 2>&1 | tee "$out/bench_cuda.txt"
cd "$repo"
rm -rf "$pkg"
