// The kernel bodies, written once over an `Ops` policy that each ISA translation unit
// defines in an anonymous namespace (so every instantiation is local to its unit and
// no AVX-512 code can leak into a function the scalar path calls).
//
// Ops provides: V (8 lanes of uint64), Zero(), Load(p) (8 words), XorBroadcast(x, q),
// Popcount(v) (per lane), Add(a, b), ShiftLeft(v, s), LessMask(v, t) -> 8-bit mask of
// lanes < t, Store32(int32_t* out, v) (the 8 lanes narrowed to int32); for SDC, F (8
// floats), Key(v, scales, a, b) = -(a - b * v) * scales, LessMaskF(f, t), StoreF(out, f).
#pragma once

#include <cstdint>

#include "pylocalize/hamming/kernels.h"

namespace pylocalize {
namespace hamming {
namespace impl {

template <class Ops>
inline void Emit(const ScanArgs& a, int64_t q, int64_t b, typename Ops::V d) {
  const uint64_t m = Ops::LessMask(d, a.thresholds[q]);
  a.mask[q * a.mld + b] = static_cast<uint8_t>(m);
  if (m != 0) Ops::Store32(a.dist + q * a.ld + b * kBlock, d);
}

template <class Ops>
inline void EmitKey(const ScanArgs& a, int64_t q, int64_t b, typename Ops::V d, uint64_t allowed = 0xff) {
  uint64_t m = Ops::LessMask(d, a.thresholds[q]) & allowed;  // integer pre-test, exact below
  if (m == 0) {
    a.mask[q * a.mld + b] = 0;
    return;
  }
  const typename Ops::F key = Ops::Key(d, a.scales + b * kBlock, a.sdc_a, a.sdc_b);
  m &= Ops::LessMaskF(key, a.fthresholds[q]);
  a.mask[q * a.mld + b] = static_cast<uint8_t>(m);
  if (m != 0) Ops::StoreF(a.fdist + q * a.ld + b * kBlock, key);
}

// W > 0: compile-time words per code; W == 0: run-time a.words_per_code.
template <class Ops, int W, int QB>
inline void HammingGroup(const ScanArgs& a, int64_t q0) {
  using V = typename Ops::V;
  const int64_t nw = W > 0 ? W : a.words_per_code;
  const uint64_t* qs[QB];
  for (int j = 0; j < QB; ++j) qs[j] = a.queries + (q0 + j) * a.query_stride;
  for (int64_t b = 0; b < a.nblocks; ++b) {
    const uint64_t* blk = a.blocks + b * nw * kBlock;
    V acc[QB];
    for (int j = 0; j < QB; ++j) acc[j] = Ops::Zero();
    for (int64_t w = 0; w < nw; ++w) {
      const V x = Ops::Load(blk + w * kBlock);
      for (int j = 0; j < QB; ++j) {
        acc[j] = Ops::Add(acc[j], Ops::Popcount(Ops::XorBroadcast(x, qs[j][w])));
      }
    }
    for (int j = 0; j < QB; ++j) Emit<Ops>(a, q0 + j, b, acc[j]);
  }
}

template <class Ops, int W>
inline void HammingAll(const ScanArgs& a) {
  constexpr int QB = Ops::kQueryBlock;
  int64_t q = 0;
  for (; q + QB <= a.nq; q += QB) HammingGroup<Ops, W, QB>(a, q);
  for (; q < a.nq; ++q) HammingGroup<Ops, W, 1>(a, q);
}

template <class Ops>
inline void Hamming(const ScanArgs& a) {
  switch (a.words_per_code) {
    case 1: return HammingAll<Ops, 1>(a);
    case 2: return HammingAll<Ops, 2>(a);
    case 3: return HammingAll<Ops, 3>(a);
    case 4: return HammingAll<Ops, 4>(a);
    case 8: return HammingAll<Ops, 8>(a);
    case 16: return HammingAll<Ops, 16>(a);
    default: return HammingAll<Ops, 0>(a);
  }
}

// Accumulates per level s = i + j, then weights levels by 2^(2(U-1)-s) once per block.
// WP > 0: compile-time words per plane (fully unrolled, accumulators stay in registers).
// The sign-plane pair (0, 0) is counted first so that, with a.sign_thresholds, a block
// none of whose codes is close in sign bits to any query of the group stops there.
template <class Ops, int U, int WP, int QB>
inline void SdcGroup(const ScanArgs& a, int64_t q0) {
  using V = typename Ops::V;
  constexpr int kLevels = 2 * U - 1;
  const int64_t wp = WP > 0 ? WP : a.words_per_code / U;
  const int64_t words = U * wp;
  const bool filter = U > 1 && a.sign_thresholds != nullptr;
  const uint64_t* qs[QB];
  int32_t sign_bound[QB];  // read once: the mask stores below may alias them
  for (int j = 0; j < QB; ++j) {
    qs[j] = a.queries + (q0 + j) * a.query_stride;
    sign_bound[j] = filter ? a.sign_thresholds[q0 + j] : 0;
  }
  for (int64_t b = 0; b < a.nblocks; ++b) {
    const uint64_t* blk = a.blocks + b * words * kBlock;
    V acc[QB][kLevels];
    for (int j = 0; j < QB; ++j) {
      for (int s = 0; s < kLevels; ++s) acc[j][s] = Ops::Zero();
    }
    for (int64_t w = 0; w < wp; ++w) {
      const V x = Ops::Load(blk + w * kBlock);
      for (int j = 0; j < QB; ++j) {
        acc[j][0] = Ops::Add(acc[j][0], Ops::Popcount(Ops::XorBroadcast(x, qs[j][w])));
      }
    }
    uint64_t allowed[QB];
    if (filter) {
      uint64_t any = 0;
      for (int j = 0; j < QB; ++j) {
        allowed[j] = Ops::LessMask(acc[j][0], sign_bound[j]);
        any |= allowed[j];
      }
      if (any == 0) {
        for (int j = 0; j < QB; ++j) a.mask[(q0 + j) * a.mld + b] = 0;
        continue;
      }
    } else {
      for (int j = 0; j < QB; ++j) allowed[j] = 0xff;
    }
    for (int64_t w = 0; w < wp; ++w) {
      for (int xp = 0; xp < U; ++xp) {
        const V x = Ops::Load(blk + (xp * wp + w) * kBlock);
        for (int qp = 0; qp < U; ++qp) {
          if (qp + xp == 0) continue;  // counted above
          for (int j = 0; j < QB; ++j) {
            acc[j][qp + xp] = Ops::Add(acc[j][qp + xp], Ops::Popcount(Ops::XorBroadcast(x, qs[j][qp * wp + w])));
          }
        }
      }
    }
    for (int j = 0; j < QB; ++j) {
      V d = acc[j][kLevels - 1];
      for (int s = 0; s < kLevels - 1; ++s) {
        d = Ops::Add(d, Ops::ShiftLeft(acc[j][s], 2 * (U - 1) - s));
      }
      EmitKey<Ops>(a, q0 + j, b, d, allowed[j]);
    }
  }
}

template <class Ops, int U, int WP>
inline void SdcAll(const ScanArgs& a) {
  constexpr int QB = U <= 2 ? 4 : 1;  // 2U-1 accumulators per query must stay in registers
  int64_t q = 0;
  for (; q + QB <= a.nq; q += QB) SdcGroup<Ops, U, WP, QB>(a, q);
  for (; q < a.nq; ++q) SdcGroup<Ops, U, WP, 1>(a, q);
}

// Unrolled for the common sizes: 1 or 2 bits per dimension of 64..512 dimensions.
template <class Ops, int U>
inline void SdcWords(const ScanArgs& a) {
  if (U <= 2) {
    switch (a.words_per_code / U) {
      case 1: return SdcAll<Ops, U, 1>(a);
      case 2: return SdcAll<Ops, U, 2>(a);
      case 4: return SdcAll<Ops, U, 4>(a);
      case 8: return SdcAll<Ops, U, 8>(a);
      default: break;
    }
  }
  SdcAll<Ops, U, 0>(a);
}

template <class Ops>
inline void Sdc(const ScanArgs& a, int u) {
  switch (u) {
    case 1: return SdcWords<Ops, 1>(a);
    case 2: return SdcWords<Ops, 2>(a);
    case 3: return SdcWords<Ops, 3>(a);
    default: return SdcWords<Ops, 4>(a);
  }
}

}  // namespace impl
}  // namespace hamming
}  // namespace pylocalize
