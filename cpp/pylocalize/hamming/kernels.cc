#include "pylocalize/hamming/kernels.h"

namespace pylocalize {
namespace hamming {

HammingKernel GetHammingKernel(SimdLevel level) {
  switch (level) {
#if defined(__x86_64__) || defined(_M_X64)
    case SimdLevel::kAVX512: return &HammingAVX512;
    case SimdLevel::kAVX512BW: return &HammingAVX512BW;
    case SimdLevel::kAVX2: return &HammingAVX2;
#endif
#if defined(__aarch64__)
    case SimdLevel::kNEON: return &HammingNEON;
#endif
    default: return &HammingScalar;
  }
}

SdcKernel GetSdcKernel(SimdLevel level) {
  switch (level) {
#if defined(__x86_64__) || defined(_M_X64)
    case SimdLevel::kAVX512: return &SdcAVX512;
    case SimdLevel::kAVX512BW: return &SdcAVX512BW;
    case SimdLevel::kAVX2: return &SdcAVX2;
#endif
#if defined(__aarch64__)
    case SimdLevel::kNEON: return &SdcNEON;
#endif
    default: return &SdcScalar;
  }
}

}  // namespace hamming
}  // namespace pylocalize
