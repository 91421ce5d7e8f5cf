// The CANN score kernel s(r) as a function of plain values, so that CannKernel (scoring.h)
// and the CUDA scoring (cpp/cuda) evaluate one definition.
#pragma once

#include <cmath>

#include "pylocalize/util/host_device.h"

namespace pylocalize {
namespace cann {

// type 0 (kCann): max(0, 1 - (r/p0)^(p1/(1-p1)))^((1-p1)/p1), zero beyond p0;
// type 1 (kGaussian): exp(-r^2 / (2 sigma^2)).
PYL_HD double KernelValue(int type, double p0, double p1, double sigma, double r) {
  if (type == 1) return exp(-r * r / (2.0 * sigma * sigma));
  if (r >= p0) return 0.0;
  const double a = p1 / (1.0 - p1);
  return pow(1.0 - pow(r / p0, a), 1.0 / a);
}

// s(sqrt(max(0, d2))): the kernel at a squared distance, what every method adds per (query
// feature, image) pair (ScoreAccumulator::Add, and the CUDA scoring).
PYL_HD double KernelValueSquared(int type, double p0, double p1, double sigma, double d2) {
  return KernelValue(type, p0, p1, sigma, sqrt(d2 > 0.0 ? d2 : 0.0));
}

}  // namespace cann
}  // namespace pylocalize
