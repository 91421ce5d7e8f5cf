// Inner-product kernels between float queries and database vectors in a blocked layout,
// one set per SIMD level (the float counterpart of hamming/kernels.h).
//
// Layout: vectors are stored in blocks of 16, dimension-major inside a block: element
// `dim` of vector (16*b + l) is at blocks[(b*d + dim)*16 + l], as float32 or uint8. One
// 512-bit load then holds one dimension of 16 vectors; a broadcast query element and an
// FMA update 16 dot products at once, with no horizontal sums.
#pragma once

#include <cstdint>
#include <vector>

#include "pylocalize/util/cpu.h"

namespace pylocalize {
namespace knn {

constexpr int64_t kBlock = 16;  // vectors per block

enum class Element : int { kFloat32 = 0, kUInt8 = 1 };

struct DotArgs {
  const float* queries;  // nq rows of dim floats
  int64_t nq;
  int64_t dim;
  const void* blocks;  // nblocks blocks of dim * 16 elements
  Element element;
  int64_t nblocks;
  float* out;  // nq rows of ld: out[q*ld + 16*b + l] = <query q, vector 16b+l>
  int64_t ld;
};

using DotKernel = void (*)(const DotArgs& args);
DotKernel GetDotKernel(SimdLevel level);

// out (nq x ld) = dot products of nq float rows with the vectors of nblocks blocks, by the
// kernel of the active SIMD level.
void DotTile(const float* queries, int64_t nq, int64_t dim, const void* blocks, Element element, int64_t nblocks,
             float* out, int64_t ld);

// Squared L2 norms of n float rows (accumulated in double).
std::vector<float> SquaredNorms(const float* x, int64_t n, int64_t dim);

void DotScalar(const DotArgs& a);
#if defined(__x86_64__) || defined(_M_X64)
void DotAVX2(const DotArgs& a);
void DotAVX512(const DotArgs& a);
#endif
#if defined(__aarch64__)
void DotNEON(const DotArgs& a);
#endif

}  // namespace knn
}  // namespace pylocalize
