// The dot-product kernel body over an `Ops` policy defined per ISA in an anonymous
// namespace (see hamming/kernel_impl.h for why). Ops: V (16 floats), Zero(),
// LoadF(const float*), LoadU8(const uint8_t*) (16 elements widened to float),
// FmaBroadcast(acc, x, q) = acc + q * x, Store(float*, V).
#pragma once

#include <cstdint>

#include "pylocalize/knn/kernels.h"

namespace pylocalize {
namespace knn {
namespace impl {

// QB queries against NB blocks at a time: each block element is loaded (and widened from
// uint8) once for the QB queries, and the QB x NB accumulators are independent chains of dim
// FMAs, which hides the FMA latency when QB alone is small (a lone query of an inverted-file
// scan: most lists are probed by one or two query features of an image). Every output is
// the same FMAs in the same order whatever QB and NB, so results do not depend on them.
template <class Ops, class T, int QB, int NB>
inline void DotGroup(const DotArgs& a, int64_t q0) {
  using V = typename Ops::V;
  const int64_t d = a.dim;
  const T* blocks = static_cast<const T*>(a.blocks);
  const float* qs[QB];
  for (int j = 0; j < QB; ++j) qs[j] = a.queries + (q0 + j) * d;
  int64_t b = 0;
  for (; b + NB <= a.nblocks; b += NB) {
    const T* blk = blocks + b * d * kBlock;
    V acc[NB][QB];
    for (int i = 0; i < NB; ++i) {
      for (int j = 0; j < QB; ++j) acc[i][j] = Ops::Zero();
    }
    for (int64_t k = 0; k < d; ++k) {
      for (int i = 0; i < NB; ++i) {
        const V x = Ops::Load(blk + (i * d + k) * kBlock);
        for (int j = 0; j < QB; ++j) acc[i][j] = Ops::FmaBroadcast(acc[i][j], x, qs[j][k]);
      }
    }
    for (int i = 0; i < NB; ++i) {
      for (int j = 0; j < QB; ++j) Ops::Store(a.out + (q0 + j) * a.ld + (b + i) * kBlock, acc[i][j]);
    }
  }
  if (NB > 1 && b < a.nblocks) {  // the last blocks, one at a time
    DotArgs rest = a;
    rest.blocks = blocks + b * d * kBlock;
    rest.nblocks = a.nblocks - b;
    rest.out = a.out + b * kBlock;
    DotGroup<Ops, T, QB, 1>(rest, q0);
  }
}

template <class Ops, class T>
inline void DotAll(const DotArgs& a) {
  constexpr int QB = Ops::kQueryBlock;
  int64_t q = 0;
  for (; q + QB <= a.nq; q += QB) DotGroup<Ops, T, QB, 1>(a, q);
  // The queries left over: in pairs (two blocks at a time), then alone (four at a time),
  // so that two query features probing one list read it once, not twice
  if (QB > 4) {
    for (; q + 4 <= a.nq; q += 4) DotGroup<Ops, T, 4, 1>(a, q);
  }
  for (; q + 2 <= a.nq; q += 2) DotGroup<Ops, T, 2, 2>(a, q);
  for (; q < a.nq; ++q) DotGroup<Ops, T, 1, 4>(a, q);
}

template <class Ops>
inline void Dot(const DotArgs& a) {
  if (a.element == Element::kUInt8) {
    DotAll<Ops, uint8_t>(a);
  } else {
    DotAll<Ops, float>(a);
  }
}

}  // namespace impl
}  // namespace knn
}  // namespace pylocalize
