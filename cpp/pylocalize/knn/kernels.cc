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

void DotTile(const float* queries, int64_t nq, int64_t dim, const void* blocks, Element element, int64_t nblocks,
             float* out, int64_t ld) {
  DotArgs a;
  a.queries = queries;
  a.nq = nq;
  a.dim = dim;
  a.blocks = blocks;
  a.element = element;
  a.nblocks = nblocks;
  a.out = out;
  a.ld = ld;
  GetDotKernel(ActiveSimdLevel())(a);
}

std::vector<float> SquaredNorms(const float* x, int64_t n, int64_t dim) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double s = 0.0;
    for (int64_t d = 0; d < dim; ++d) s += static_cast<double>(x[i * dim + d]) * x[i * dim + d];
    out[static_cast<size_t>(i)] = static_cast<float>(s);
  }
  return out;
}

}  // namespace knn
}  // namespace pylocalize
