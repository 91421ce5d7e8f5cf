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

template <class Ops, class T, int QB>
inline void DotGroup(const DotArgs& a, int64_t q0) {
  using V = typename Ops::V;
  const int64_t d = a.dim;
  const T* blocks = static_cast<const T*>(a.blocks);
  const float* qs[QB];
  for (int j = 0; j < QB; ++j) qs[j] = a.queries + (q0 + j) * d;
  for (int64_t b = 0; b < a.nblocks; ++b) {
    const T* blk = blocks + b * d * kBlock;
    V acc[QB];
    for (int j = 0; j < QB; ++j) acc[j] = Ops::Zero();
    for (int64_t k = 0; k < d; ++k) {
      const V x = Ops::Load(blk + k * kBlock);
      for (int j = 0; j < QB; ++j) acc[j] = Ops::FmaBroadcast(acc[j], x, qs[j][k]);
    }
    for (int j = 0; j < QB; ++j) Ops::Store(a.out + (q0 + j) * a.ld + b * kBlock, acc[j]);
  }
}

// One query against NB blocks at a time. A lone query's accumulator is one chain of dim
// dependent FMAs per block, which waits on the FMA latency; NB blocks give NB independent
// chains. This is the common case of an inverted-file scan, where a list is probed by one
// or two query features of a single image. Each output is still the same FMAs in the same
// order, so results are identical to DotGroup's.
template <class Ops, class T, int NB>
inline void DotOneQuery(const DotArgs& a, int64_t q) {
  using V = typename Ops::V;
  const int64_t d = a.dim;
  const T* blocks = static_cast<const T*>(a.blocks);
  const float* qs = a.queries + q * d;
  int64_t b = 0;
  for (; b + NB <= a.nblocks; b += NB) {
    const T* blk = blocks + b * d * kBlock;
    V acc[NB];
    for (int j = 0; j < NB; ++j) acc[j] = Ops::Zero();
    for (int64_t k = 0; k < d; ++k) {
      for (int j = 0; j < NB; ++j) acc[j] = Ops::FmaBroadcast(acc[j], Ops::Load(blk + (j * d + k) * kBlock), qs[k]);
    }
    for (int j = 0; j < NB; ++j) Ops::Store(a.out + q * a.ld + (b + j) * kBlock, acc[j]);
  }
  for (; b < a.nblocks; ++b) {
    const T* blk = blocks + b * d * kBlock;
    V acc = Ops::Zero();
    for (int64_t k = 0; k < d; ++k) acc = Ops::FmaBroadcast(acc, Ops::Load(blk + k * kBlock), qs[k]);
    Ops::Store(a.out + q * a.ld + b * kBlock, acc);
  }
}

template <class Ops, class T>
inline void DotAll(const DotArgs& a) {
  constexpr int QB = Ops::kQueryBlock;
  int64_t q = 0;
  for (; q + QB <= a.nq; q += QB) DotGroup<Ops, T, QB>(a, q);
  for (; q < a.nq; ++q) DotOneQuery<Ops, T, 4>(a, q);
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
