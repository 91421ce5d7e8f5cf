// AVX2 + FMA dot-product kernel: a block of 16 vectors is two 256-bit halves. uint8 rows
// against small-integer queries take 16-bit multiply-adds instead (DotIntegerGroup below).
#include <immintrin.h>

#include <cmath>
#include <cstdint>

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

// uint8 rows against queries of small integers (uint8 descriptors, as every map and query
// of SIFT-like features has): 16-bit multiply-adds on pairs of dimensions instead of
// widening every byte to float. With |q| <= 255 and dim <= kMaxExactDim every partial sum
// is an integer below 2^24, so the float FMAs of AVX2Ops compute it exactly too: both give
// the same numbers, and this one is used where it is faster, for the one or two queries
// left over after the groups of four (most lists of an inverted-file scan).
constexpr int64_t kMaxExactDim = 258;  // 258 * 255 * 255 < 2^24

bool SmallIntegerQueries(const float* q, int64_t n, int64_t dim) {
  if (dim > kMaxExactDim) return false;
  // Run on every tile of a scan: 8 at a time (NaN fails every comparison)
  const __m256 lo = _mm256_set1_ps(-255.0f), hi = _mm256_set1_ps(255.0f);
  const int64_t total = n * dim;
  int64_t i = 0;
  for (; i + 8 <= total; i += 8) {
    const __m256 v = _mm256_loadu_ps(q + i);
    const __m256 ok =
        _mm256_and_ps(_mm256_and_ps(_mm256_cmp_ps(v, lo, _CMP_GE_OQ), _mm256_cmp_ps(v, hi, _CMP_LE_OQ)),
                      _mm256_cmp_ps(v, _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), _CMP_EQ_OQ));
    if (_mm256_movemask_ps(ok) != 0xff) return false;
  }
  for (; i < total; ++i) {
    const float v = q[i];
    if (!(v >= -255.0f && v <= 255.0f) || v != std::nearbyint(v)) return false;
  }
  return true;
}

template <int QB>
void DotIntegerGroup(const DotArgs& a, int64_t q0) {
  const int64_t d = a.dim, pairs = (d + 1) / 2;
  const uint8_t* blocks = static_cast<const uint8_t*>(a.blocks);
  // per query, dimensions (2p, 2p + 1) as two int16 in one int32, to broadcast
  int32_t qpair[QB][(kMaxExactDim + 1) / 2];
  for (int j = 0; j < QB; ++j) {
    const float* q = a.queries + (q0 + j) * d;
    for (int64_t p = 0; p < pairs; ++p) {
      const int32_t lo = static_cast<int32_t>(q[2 * p]), hi = 2 * p + 1 < d ? static_cast<int32_t>(q[2 * p + 1]) : 0;
      qpair[j][p] = static_cast<int32_t>((static_cast<uint32_t>(lo) & 0xffffu) | (static_cast<uint32_t>(hi) << 16));
    }
  }
  for (int64_t b = 0; b < a.nblocks; ++b) {
    const uint8_t* blk = blocks + b * d * kBlock;
    __m256i lo_acc[QB], hi_acc[QB];
    for (int j = 0; j < QB; ++j) lo_acc[j] = hi_acc[j] = _mm256_setzero_si256();
    for (int64_t p = 0; p < pairs; ++p) {
      // 16 rows of dimensions 2p and 2p + 1, interleaved per row: within each 128-bit lane,
      // `lo` holds rows 0-3 (8-11 in the upper lane) and `hi` rows 4-7 (12-15)
      const __m256i x0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2 * p * kBlock)));
      const __m256i x1 =
          2 * p + 1 < d
              ? _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + (2 * p + 1) * kBlock)))
              : _mm256_setzero_si256();
      const __m256i lo = _mm256_unpacklo_epi16(x0, x1), hi = _mm256_unpackhi_epi16(x0, x1);
      for (int j = 0; j < QB; ++j) {
        const __m256i qq = _mm256_set1_epi32(qpair[j][p]);
        lo_acc[j] = _mm256_add_epi32(lo_acc[j], _mm256_madd_epi16(lo, qq));
        hi_acc[j] = _mm256_add_epi32(hi_acc[j], _mm256_madd_epi16(hi, qq));
      }
    }
    for (int j = 0; j < QB; ++j) {
      float* out = a.out + (q0 + j) * a.ld + b * kBlock;
      _mm256_storeu_ps(out, _mm256_cvtepi32_ps(_mm256_permute2x128_si256(lo_acc[j], hi_acc[j], 0x20)));
      _mm256_storeu_ps(out + 8, _mm256_cvtepi32_ps(_mm256_permute2x128_si256(lo_acc[j], hi_acc[j], 0x31)));
    }
  }
}

}  // namespace

void DotAVX2(const DotArgs& a) {
  if (a.element != Element::kUInt8 || !SmallIntegerQueries(a.queries, a.nq, a.dim)) {
    impl::Dot<AVX2Ops>(a);
    return;
  }
  int64_t q = 0;
  for (; q + 4 <= a.nq; q += 4) DotIntegerGroup<4>(a, q);
  for (; q + 2 <= a.nq; q += 2) DotIntegerGroup<2>(a, q);
  for (; q < a.nq; ++q) DotIntegerGroup<1>(a, q);
}

}  // namespace knn
}  // namespace pylocalize
