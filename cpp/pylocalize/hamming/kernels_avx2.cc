// AVX2 kernels (compiled with -mavx2 -mpopcnt -mfma): a block of 8 codes is two 256-bit
// halves; per-lane popcount by the nibble lookup (vpshufb) + vpsadbw method.
#include <immintrin.h>

#include "pylocalize/hamming/kernel_impl.h"
#include "pylocalize/hamming/kernels_x86_key.h"

namespace pylocalize {
namespace hamming {
namespace {

struct AVX2Ops : X86FloatKey<AVX2Ops> {
  static constexpr int kQueryBlock = 2;
  struct V {
    __m256i lo, hi;
  };
  static V Zero() { return {_mm256_setzero_si256(), _mm256_setzero_si256()}; }
  static V Load(const uint64_t* p) {
    return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)),
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 4))};
  }
  static V XorBroadcast(V x, uint64_t q) {
    const __m256i b = _mm256_set1_epi64x(static_cast<long long>(q));
    return {_mm256_xor_si256(x.lo, b), _mm256_xor_si256(x.hi, b)};
  }
  static __m256i Pop(__m256i v) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                         2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0F);
    const __m256i c = _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(v, low)),
                                      _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low)));
    return _mm256_sad_epu8(c, _mm256_setzero_si256());
  }
  static V Popcount(V x) { return {Pop(x.lo), Pop(x.hi)}; }
  static V Add(V a, V b) { return {_mm256_add_epi64(a.lo, b.lo), _mm256_add_epi64(a.hi, b.hi)}; }
  static V ShiftLeft(V a, int s) {
    const __m128i c = _mm_cvtsi32_si128(s);
    return {_mm256_sll_epi64(a.lo, c), _mm256_sll_epi64(a.hi, c)};
  }
  static uint64_t LessMask(V d, int32_t t) {
    const __m256i tv = _mm256_set1_epi64x(t);
    const int lo = _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(tv, d.lo)));
    const int hi = _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(tv, d.hi)));
    return static_cast<uint64_t>(lo | (hi << 4));
  }
  // The 8 lanes narrowed to int32 (values are < 2^31).
  static __m256i Pack32(V d) {
    const __m256i idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const __m256i lo = _mm256_permutevar8x32_epi32(d.lo, idx);
    const __m256i hi = _mm256_permutevar8x32_epi32(d.hi, idx);
    return _mm256_permute2x128_si256(lo, hi, 0x20);
  }
  static void Store32(int32_t* out, V d) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), Pack32(d)); }
};

}  // namespace

void HammingAVX2(const ScanArgs& a) { impl::Hamming<AVX2Ops>(a); }
void SdcAVX2(const ScanArgs& a, int u) { impl::Sdc<AVX2Ops>(a, u); }

}  // namespace hamming
}  // namespace pylocalize
