// AArch64 NEON dot-product kernel: a block of 16 vectors is four 128-bit registers.
#if defined(__aarch64__)
#include <arm_neon.h>

#include "pylocalize/knn/kernel_impl.h"

namespace pylocalize {
namespace knn {
namespace {

struct NeonOps {
  static constexpr int kQueryBlock = 4;
  struct V {
    float32x4_t v[4];
  };
  static V Zero() {
    V r;
    for (auto& e : r.v) e = vdupq_n_f32(0.0f);
    return r;
  }
  static V Load(const float* p) {
    V r;
    for (int i = 0; i < 4; ++i) r.v[i] = vld1q_f32(p + 4 * i);
    return r;
  }
  static V Load(const uint8_t* p) {
    const uint8x16_t b = vld1q_u8(p);
    const uint16x8_t lo = vmovl_u8(vget_low_u8(b)), hi = vmovl_u8(vget_high_u8(b));
    V r;
    r.v[0] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo)));
    r.v[1] = vcvtq_f32_u32(vmovl_u16(vget_high_u16(lo)));
    r.v[2] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi)));
    r.v[3] = vcvtq_f32_u32(vmovl_u16(vget_high_u16(hi)));
    return r;
  }
  static V FmaBroadcast(V acc, const V& x, float q) {
    for (int i = 0; i < 4; ++i) acc.v[i] = vfmaq_n_f32(acc.v[i], x.v[i], q);
    return acc;
  }
  static void Store(float* out, const V& v) {
    for (int i = 0; i < 4; ++i) vst1q_f32(out + 4 * i, v.v[i]);
  }
};

}  // namespace

void DotNEON(const DotArgs& a) { impl::Dot<NeonOps>(a); }

}  // namespace knn
}  // namespace pylocalize
#endif  // __aarch64__
