# Sourced (`. tools/nvcc_env.sh`) by .ci/run and tools/cuda_check.sh: puts nvcc on PATH for
# the CUDA build (docs/BUILDING.md). The machine's nvcc if it has one, else CUDA 13's compiler
# wheels from PyPI, installed into the active Python environment. (nvidia-cuda-nvcc-cu12 12.9
# ships only ptxas.)
if ! command -v nvcc >/dev/null 2>&1; then
  python -m pip install -q "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-crt==13.0.88" \
    "nvidia-cuda-cccl==13.0.85" "nvidia-nvvm==13.0.88"
  cu="$(python -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
  ln -sfn lib "$cu/lib64"                         # nvcc looks for its libraries in lib64
  ln -sfn libcudart.so.13 "$cu/lib/libcudart.so"  # what CMake's FindCUDAToolkit looks for
  export PATH="$cu/bin:$PATH"
fi
