// AArch64 NEON kernels (Advanced SIMD is part of the AArch64 baseline): a block of 8
// codes is four 128-bit registers; per-lane popcount by vcnt + pairwise widening adds.
#if defined(__aarch64__)
#include <arm_neon.h>

#include "pylocalize/hamming/kernel_impl.h"

namespace pylocalize {
namespace hamming {
namespace {

struct NeonOps {
  static constexpr int kQueryBlock = 2;
  struct V {
    uint64x2_t v[4];
  };
  static V Zero() {
    V r;
    for (auto& e : r.v) e = vdupq_n_u64(0);
    return r;
  }
  static V Load(const uint64_t* p) {
    V r;
    for (int i = 0; i < 4; ++i) r.v[i] = vld1q_u64(p + 2 * i);
    return r;
  }
  static V XorBroadcast(V x, uint64_t q) {
    const uint64x2_t b = vdupq_n_u64(q);
    for (auto& e : x.v) e = veorq_u64(e, b);
    return x;
  }
  static V Popcount(V x) {
    for (auto& e : x.v) {
      e = vpaddlq_u32(vpaddlq_u16(vpaddlq_u8(vcntq_u8(vreinterpretq_u8_u64(e)))));
    }
    return x;
  }
  static V Add(V a, const V& b) {
    for (int i = 0; i < 4; ++i) a.v[i] = vaddq_u64(a.v[i], b.v[i]);
    return a;
  }
  static V ShiftLeft(V a, int s) {
    const int64x2_t sv = vdupq_n_s64(s);
    for (auto& e : a.v) e = vshlq_u64(e, sv);
    return a;
  }
  static uint64_t LessMask(const V& d, int32_t t) {
    const int64x2_t tv = vdupq_n_s64(t);
    const uint64x2_t weight = {1, 2};
    uint64_t m = 0;
    for (int i = 0; i < 4; ++i) {
      const uint64x2_t lt = vcltq_s64(vreinterpretq_s64_u64(d.v[i]), tv);
      m |= vaddvq_u64(vandq_u64(lt, weight)) << (2 * i);
    }
    return m;
  }
  static int32x4_t Pack32(uint64x2_t lo, uint64x2_t hi) {
    return vreinterpretq_s32_u32(vcombine_u32(vmovn_u64(lo), vmovn_u64(hi)));
  }
  static void Store32(int32_t* out, const V& d) {
    vst1q_s32(out, Pack32(d.v[0], d.v[1]));
    vst1q_s32(out + 4, Pack32(d.v[2], d.v[3]));
  }
  struct F {
    float32x4_t lo, hi;
  };
  static F Key(const V& d, const float* scales, float a, float b) {
    const float32x4_t av = vdupq_n_f32(a);
    // key = -(a - b * S) * scale
    const float32x4_t lo = vmlsq_n_f32(av, vcvtq_f32_s32(Pack32(d.v[0], d.v[1])), b);
    const float32x4_t hi = vmlsq_n_f32(av, vcvtq_f32_s32(Pack32(d.v[2], d.v[3])), b);
    return {vmulq_f32(vnegq_f32(lo), vld1q_f32(scales)), vmulq_f32(vnegq_f32(hi), vld1q_f32(scales + 4))};
  }
  static uint64_t LessMaskF(const F& f, float t) {
    const float32x4_t tv = vdupq_n_f32(t);
    const uint32x4_t weight = {1, 2, 4, 8};
    const uint32_t lo = vaddvq_u32(vandq_u32(vcltq_f32(f.lo, tv), weight));
    const uint32_t hi = vaddvq_u32(vandq_u32(vcltq_f32(f.hi, tv), weight));
    return static_cast<uint64_t>(lo | (hi << 4));
  }
  static void StoreF(float* out, const F& f) {
    vst1q_f32(out, f.lo);
    vst1q_f32(out + 4, f.hi);
  }
};

}  // namespace

void HammingNEON(const ScanArgs& a) { impl::Hamming<NeonOps>(a); }
void SdcNEON(const ScanArgs& a, int u) { impl::Sdc<NeonOps>(a, u); }

}  // namespace hamming
}  // namespace pylocalize
#endif  // __aarch64__
