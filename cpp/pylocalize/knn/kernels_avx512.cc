// AVX-512F dot-product kernel (used for both AVX-512 levels): 16 vectors per register.
#include <immintrin.h>

#include "pylocalize/knn/kernel_impl.h"

namespace pylocalize {
namespace knn {
namespace {

struct AVX512Ops {
  static constexpr int kQueryBlock = 8;
  using V = __m512;
  static V Zero() { return _mm512_setzero_ps(); }
  static V Load(const float* p) { return _mm512_loadu_ps(p); }
  static V Load(const uint8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static V FmaBroadcast(V acc, V x, float q) { return _mm512_fmadd_ps(_mm512_set1_ps(q), x, acc); }
  static void Store(float* out, V v) { _mm512_storeu_ps(out, v); }
};

}  // namespace

void DotAVX512(const DotArgs& a) { impl::Dot<AVX512Ops>(a); }

}  // namespace knn
}  // namespace pylocalize
