// AVX-512 F/BW kernels for CPUs without VPOPCNTDQ (Skylake-X, Cascade Lake): 8 codes per
// 512-bit register, popcount by the nibble lookup (vpshufb) + vpsadbw method.
#include <immintrin.h>

#include "pylocalize/hamming/kernel_impl.h"
#include "pylocalize/hamming/kernels_x86_key.h"

namespace pylocalize {
namespace hamming {
namespace {

struct AVX512BWOps : X86FloatKey<AVX512BWOps> {
  static constexpr int kQueryBlock = 4;
  using V = __m512i;
  static V Zero() { return _mm512_setzero_si512(); }
  static V Load(const uint64_t* p) { return _mm512_loadu_si512(p); }
  static V XorBroadcast(V x, uint64_t q) { return _mm512_xor_si512(x, _mm512_set1_epi64(static_cast<long long>(q))); }
  static V Popcount(V v) {
    const __m512i lut = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4));
    const __m512i low = _mm512_set1_epi8(0x0F);
    const __m512i c = _mm512_add_epi8(_mm512_shuffle_epi8(lut, _mm512_and_si512(v, low)),
                                      _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(v, 4), low)));
    return _mm512_sad_epu8(c, _mm512_setzero_si512());
  }
  static V Add(V a, V b) { return _mm512_add_epi64(a, b); }
  static V ShiftLeft(V a, int s) { return _mm512_sll_epi64(a, _mm_cvtsi32_si128(s)); }
  static uint64_t LessMask(V d, int32_t t) { return _mm512_cmplt_epi64_mask(d, _mm512_set1_epi64(t)); }
  static __m256i Pack32(V d) { return _mm512_cvtepi64_epi32(d); }
  static void Store32(int32_t* out, V d) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), Pack32(d)); }
};

}  // namespace

void HammingAVX512BW(const ScanArgs& a) { impl::Hamming<AVX512BWOps>(a); }
void SdcAVX512BW(const ScanArgs& a, int u) { impl::Sdc<AVX512BWOps>(a, u); }

}  // namespace hamming
}  // namespace pylocalize
