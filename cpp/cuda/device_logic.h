// The logic of the CUDA kernels (cpp/cuda/*.cu) that decides their results, written once as
// PYL_HD functions: nvcc compiles them into the kernels, and device_logic_test.cc runs the
// very same functions on the CPU against the CPU indexes (BinaryIndex, MultiBitIndex,
// knn::AssignNearestM, CannIndex), so the GPU's distances, tie order and CANN scores are
// checked on machines without a GPU.
//
// Everything here matches the CPU core bit for bit:
// - Hamming distances and the SDC integer sum S are integers (hamming/kernels.h).
// - Dot products are a chain of fused multiply-adds in dimension order from 0, as in the x86
//   and NEON SIMD kernels (the portable scalar level rounds each product, so it can differ
//   from these in the last bit).
// - The SDC key (b S - a) * scale: b is a power of two, so b S is exact and every SIMD level,
//   fused or not, rounds the key the same way.
// - k-selection keeps the k smallest (key, id) pairs, ties to the smaller id (util/topk.h).
// - CANN exact takes per (query feature, image) the minimum of ||x||^2 - 2 q.x over the
//   image's features and sums s(sqrt(max(0, min + ||q||^2))) per image in query order.
#pragma once

#include <cstdint>
#include <limits>

#include "pylocalize/cann/kernel_value.h"
#include "pylocalize/util/host_device.h"

namespace pylocalize {
namespace gpu {

// ---- distances of one pair -------------------------------------------------------------

// popcount(q ^ x) over `words` words; x's words are `x_stride` apart (the device keeps codes
// word-major, so neighbouring threads read neighbouring codes).
PYL_HD int32_t HammingDistance(const uint64_t* q, const uint64_t* x, int64_t words, int64_t x_stride) {
  int32_t d = 0;
  for (int64_t w = 0; w < words; ++w) d += Popcount64(q[w] ^ x[w * x_stride]);
  return d;
}

// S = sum over plane pairs (i, j) of 2^(2(u-1)-i-j) popcount(q_i ^ x_j): q and x hold u
// planes of wp words each, plane-major (x's words x_stride apart).
PYL_HD int32_t SdcSum(const uint64_t* q, const uint64_t* x, int u, int64_t wp, int64_t x_stride) {
  int32_t s = 0;
  for (int i = 0; i < u; ++i) {
    for (int j = 0; j < u; ++j) {
      int32_t c = 0;
      for (int64_t w = 0; w < wp; ++w) c += Popcount64(q[i * wp + w] ^ x[(j * wp + w) * x_stride]);
      s += c << (2 * (u - 1) - i - j);
    }
  }
  return s;
}

// The ranking key of an SDC score, -(a - b S) * scale (b S is exact: b is a power of two).
PYL_HD float SdcKey(int32_t s, float scale, float a, float b) {
  return FusedMultiplyAdd(b, static_cast<float>(s), -a) * scale;
}

// <q, x> for float queries and float or uint8 rows (x's elements x_stride apart).
template <class T>
PYL_HD float Dot(const float* q, const T* x, int64_t dim, int64_t x_stride) {
  float acc = 0.0f;
  for (int64_t d = 0; d < dim; ++d) acc = FusedMultiplyAdd(q[d], static_cast<float>(x[d * x_stride]), acc);
  return acc;
}

// ||x||^2 - 2 <q, x>: what the CPU ranks rows by (||q||^2 is added to the k kept).
PYL_HD float L2Key(float x_norm, float dot) { return x_norm - 2.0f * dot; }

// ---- k-selection -----------------------------------------------------------------------

template <class D>
PYL_HD D PadKey();
template <>
PYL_HD int32_t PadKey<int32_t>() {
  return 2147483647;
}
template <>
PYL_HD float PadKey<float>() {
  return __builtin_huge_valf();
}

// (a, ia) ranks before (b, ib): smaller key, then smaller id.
template <class D>
PYL_HD bool Before(D a, int64_t ia, D b, int64_t ib) {
  return a < b || (a == b && ia < ib);
}

// Whether a candidate enters a top-k list whose worst kept pair is (t, it) when full, or
// anything while it is not: the pad key marks an excluded candidate (an SDC code outside a
// progressive search's sign bound), never a result.
template <class D>
PYL_HD bool Passes(D key, int64_t id, bool full, D t, int64_t it) {
  return key < PadKey<D>() && (!full || Before(key, id, t, it));
}

// One compare-exchange of a bitonic sort of n (a power of two) pairs by (key, id), for the
// thread `i` < n of stage (size, stride): a block runs every i between barriers; the CPU
// test runs them in a loop. Padding pairs (PadKey, INT64_MAX) sort last.
template <class D>
PYL_HD void BitonicStep(D* keys, int64_t* ids, int64_t i, int64_t size, int64_t stride) {
  const int64_t j = i ^ stride;
  if (j <= i) return;
  const bool ascending = (i & size) == 0;
  if (Before(keys[j], ids[j], keys[i], ids[i]) == ascending) {
    const D k = keys[i];
    keys[i] = keys[j];
    keys[j] = k;
    const int64_t t = ids[i];
    ids[i] = ids[j];
    ids[j] = t;
  }
}

// The stages of a bitonic sort of n pairs, calling step(size, stride) for each in order.
template <class Step>
PYL_HD void BitonicStages(int64_t n, Step step) {
  for (int64_t size = 2; size <= n; size <<= 1) {
    for (int64_t stride = size >> 1; stride > 0; stride >>= 1) step(size, stride);
  }
}

// The smallest power of two >= n (n >= 1).
PYL_HD int64_t PowerOfTwoAtLeast(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

// ---- CANN ------------------------------------------------------------------------------

// What a (query feature, image) pair at squared distance d2 adds to the image's sum
// (cann::ScoreAccumulator::Add).
PYL_HD double CannPairContribution(int type, double p0, double p1, double sigma, double d2) {
  return cann::KernelValueSquared(type, p0, p1, sigma, d2);
}

// Method exact: min_key is the smallest ||x||^2 - 2 q.x over the image's features, q_norm = ||q||^2.
PYL_HD double CannContribution(int type, double p0, double p1, double sigma, float min_key, float q_norm) {
  return CannPairContribution(type, p0, p1, sigma, static_cast<double>(min_key) + static_cast<double>(q_norm));
}

// Method ivf: the squared distance of a query feature to the feature in a probed list's slot,
// as the CPU tests it against the kernel's cutoff (cut2) and offers it; a negative result
// means the pair is not a candidate.
PYL_HD float IvfCandidate(float q_norm, float x_norm, float dot, float cut2) {
  const float e = q_norm + x_norm - 2.0f * dot;
  if (!(e < cut2)) return -1.0f;
  return e > 0.0f ? e : 0.0f;
}

}  // namespace gpu
}  // namespace pylocalize
