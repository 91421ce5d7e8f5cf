// AVX-512 kernels with VPOPCNTDQ (Ice Lake, Sapphire Rapids, Zen 4+): XOR with the
// broadcast query word and one vpopcntq give 8 partial distances per instruction.
#include <immintrin.h>

#include "pylocalize/hamming/kernel_impl.h"
#include "pylocalize/hamming/kernels_x86_key.h"

namespace pylocalize {
namespace hamming {
namespace {

struct AVX512Ops : X86FloatKey<AVX512Ops> {
  static constexpr int kQueryBlock = 4;
  using V = __m512i;
  static V Zero() { return _mm512_setzero_si512(); }
  static V Load(const uint64_t* p) { return _mm512_loadu_si512(p); }
  static V XorBroadcast(V x, uint64_t q) { return _mm512_xor_si512(x, _mm512_set1_epi64(static_cast<long long>(q))); }
  static V Popcount(V v) { return _mm512_popcnt_epi64(v); }
  static V Add(V a, V b) { return _mm512_add_epi64(a, b); }
  static V ShiftLeft(V a, int s) { return _mm512_sll_epi64(a, _mm_cvtsi32_si128(s)); }
  static uint64_t LessMask(V d, int32_t t) { return _mm512_cmplt_epi64_mask(d, _mm512_set1_epi64(t)); }
  static __m256i Pack32(V d) { return _mm512_cvtepi64_epi32(d); }
  static void Store32(int32_t* out, V d) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), Pack32(d)); }
};

}  // namespace

void HammingAVX512(const ScanArgs& a) { impl::Hamming<AVX512Ops>(a); }
void SdcAVX512(const ScanArgs& a, int u) { impl::Sdc<AVX512Ops>(a, u); }

}  // namespace hamming
}  // namespace pylocalize
