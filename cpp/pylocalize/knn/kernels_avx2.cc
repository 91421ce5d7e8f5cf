// AVX2 + FMA dot-product kernel: a block of 16 vectors is two 256-bit halves.
#include <immintrin.h>

#include "pylocalize/knn/kernel_impl.h"

namespace pylocalize {
namespace knn {
namespace {

struct AVX2Ops {
  static constexpr int kQueryBlock = 4;
  struct V {
    __m256 lo, hi;
  };
  static V Zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static V Load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static V Load(const uint8_t* p) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return {_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)),
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8)))};
  }
  static V FmaBroadcast(V acc, V x, float q) {
    const __m256 b = _mm256_set1_ps(q);
    return {_mm256_fmadd_ps(b, x.lo, acc.lo), _mm256_fmadd_ps(b, x.hi, acc.hi)};
  }
  static void Store(float* out, V v) {
    _mm256_storeu_ps(out, v.lo);
    _mm256_storeu_ps(out + 8, v.hi);
  }
};

}  // namespace

void DotAVX2(const DotArgs& a) { impl::Dot<AVX2Ops>(a); }

}  // namespace knn
}  // namespace pylocalize
