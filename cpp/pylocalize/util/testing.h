// What the C++ tests (*_test.cc, built with -DPYLOCALIZE_BUILD_TESTS=ON) share: a failure
// counter that prints the first failures, and a squared distance in double as the
// brute-force reference.
#pragma once

#include <cstdint>
#include <cstdio>

namespace pylocalize {
namespace testing {

inline int g_failures = 0;

inline void Check(bool ok, const char* what, double a = 0, double b = 0) {
  if (!ok && ++g_failures <= 20) std::printf("FAIL %s (%g, %g)\n", what, a, b);
}

inline double SquaredDistance(const float* a, const float* b, int64_t dim) {
  double s = 0.0;
  for (int64_t d = 0; d < dim; ++d) s += (static_cast<double>(a[d]) - b[d]) * (static_cast<double>(a[d]) - b[d]);
  return s;
}

}  // namespace testing
}  // namespace pylocalize
