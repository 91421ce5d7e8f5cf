// What code shared by the CPU core and the CUDA kernels (cpp/cuda) needs to compile on both:
// PYL_HD marks a function __host__ __device__ under nvcc and plain inline elsewhere, so the
// per-pair and per-block logic of the GPU kernels is the same source the C++ tests run on
// the CPU. No CUDA header is needed to include this file.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define PYL_HD __host__ __device__ inline
#else
#define PYL_HD inline
#endif

namespace pylocalize {

PYL_HD int Popcount64(uint64_t x) {
#if defined(__CUDA_ARCH__)
  return __popcll(x);
#else
  return __builtin_popcountll(x);
#endif
}

// a * b + c rounded once: the fused multiply-add the x86 and NEON SIMD kernels use, so a
// GPU and a CPU accumulating in the same order get the same bits.
PYL_HD float FusedMultiplyAdd(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

}  // namespace pylocalize
