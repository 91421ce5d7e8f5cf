// The SDC float key on 8 lanes, shared by the x86 kernel files (all compiled with at
// least AVX2 + FMA). Included into each ISA unit's anonymous namespace use only: every
// unit gets its own copy, so no wider instruction leaks into a narrower unit.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace pylocalize {
namespace hamming {
namespace {

// Derived provides Pack32(V) -> __m256i, the 8 lanes narrowed to int32.
template <class Derived>
struct X86FloatKey {
  using F = __m256;
  template <class V>
  static F Key(V d, const float* scales, float a, float b) {
    const __m256 df = _mm256_cvtepi32_ps(Derived::Pack32(d));
    const __m256 neg_sim = _mm256_fmsub_ps(_mm256_set1_ps(b), df, _mm256_set1_ps(a));  // b S - a
    return _mm256_mul_ps(neg_sim, _mm256_loadu_ps(scales));
  }
  static uint64_t LessMaskF(F f, float t) {
    return static_cast<uint64_t>(_mm256_movemask_ps(_mm256_cmp_ps(f, _mm256_set1_ps(t), _CMP_LT_OQ)));
  }
  static void StoreF(float* out, F f) { _mm256_storeu_ps(out, f); }
};

}  // namespace
}  // namespace hamming
}  // namespace pylocalize
