// Portable dot-product kernel.
#include "pylocalize/knn/kernel_impl.h"

namespace pylocalize {
namespace knn {
namespace {

struct ScalarOps {
  static constexpr int kQueryBlock = 2;
  struct V {
    float l[kBlock];
  };
  static V Zero() { return V{}; }
  static V Load(const float* p) {
    V v;
    for (int i = 0; i < kBlock; ++i) v.l[i] = p[i];
    return v;
  }
  static V Load(const uint8_t* p) {
    V v;
    for (int i = 0; i < kBlock; ++i) v.l[i] = static_cast<float>(p[i]);
    return v;
  }
  static V FmaBroadcast(V acc, const V& x, float q) {
    for (int i = 0; i < kBlock; ++i) acc.l[i] += q * x.l[i];
    return acc;
  }
  static void Store(float* out, const V& v) {
    for (int i = 0; i < kBlock; ++i) out[i] = v.l[i];
  }
};

}  // namespace

void DotScalar(const DotArgs& a) { impl::Dot<ScalarOps>(a); }

}  // namespace knn
}  // namespace pylocalize
