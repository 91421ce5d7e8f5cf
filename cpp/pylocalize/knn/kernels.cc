#include "pylocalize/knn/kernels.h"

namespace pylocalize {
namespace knn {

DotKernel GetDotKernel(SimdLevel level) {
  switch (level) {
#if defined(__x86_64__) || defined(_M_X64)
    case SimdLevel::kAVX512:
    case SimdLevel::kAVX512BW: return &DotAVX512;
    case SimdLevel::kAVX2: return &DotAVX2;
#endif
#if defined(__aarch64__)
    case SimdLevel::kNEON: return &DotNEON;
#endif
    default: return &DotScalar;
  }
}

}  // namespace knn
}  // namespace pylocalize
