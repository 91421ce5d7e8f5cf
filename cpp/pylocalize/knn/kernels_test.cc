// Checks the dot-product kernels (knn::DotTile) against a double reference at every SIMD
// level this machine supports: uint8 and float rows; 1 to 9 queries (every group size and
// remainder the kernels split them into); odd and large dimensions; integer queries (which
// the AVX2 kernel computes with 16-bit multiply-adds, and must give exactly the float
// kernel's numbers) next to negative, fractional and out-of-range ones, which it must not.
// Built by CMake with -DPYLOCALIZE_BUILD_TESTS=ON (ctest); exit status 0 when everything agrees.
#include "pylocalize/knn/kernels.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "pylocalize/util/cpu.h"
#include "pylocalize/util/testing.h"

namespace pylocalize {
namespace {

using testing::Check;

enum class QueryKind { kUInt8, kSigned, kFraction, kLarge };

// Rows in the blocked layout (kernels.h) and their plain copy, as doubles.
struct Rows {
  std::vector<uint8_t> bytes;  // the blocked layout, uint8 or float elements
  std::vector<double> plain;   // n x dim
  int64_t nblocks;
};

Rows MakeRows(std::mt19937_64& rng, int64_t n, int64_t dim, knn::Element element) {
  Rows r;
  r.nblocks = (n + knn::kBlock - 1) / knn::kBlock;
  const size_t esize = element == knn::Element::kUInt8 ? 1 : 4;
  r.bytes.assign(static_cast<size_t>(r.nblocks * dim * knn::kBlock) * esize, 0);
  r.plain.assign(static_cast<size_t>(r.nblocks * knn::kBlock * dim), 0.0);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t d = 0; d < dim; ++d) {
      const size_t at = static_cast<size_t>(((i / knn::kBlock) * dim + d) * knn::kBlock + i % knn::kBlock);
      const int v = byte(rng);
      r.plain[static_cast<size_t>(i * dim + d)] = v;
      if (element == knn::Element::kUInt8) {
        r.bytes[at] = static_cast<uint8_t>(v);
      } else {
        reinterpret_cast<float*>(r.bytes.data())[at] = static_cast<float>(v);
      }
    }
  }
  return r;
}

std::vector<float> MakeQueries(std::mt19937_64& rng, int64_t nq, int64_t dim, QueryKind kind) {
  std::vector<float> q(static_cast<size_t>(nq * dim));
  std::uniform_int_distribution<int> byte(0, 255), sign(-255, 255);
  for (float& v : q) {
    switch (kind) {
      case QueryKind::kUInt8: v = static_cast<float>(byte(rng)); break;
      case QueryKind::kSigned: v = static_cast<float>(sign(rng)); break;
      case QueryKind::kFraction: v = static_cast<float>(byte(rng)) + 0.25f; break;
      case QueryKind::kLarge: v = static_cast<float>(byte(rng)) * 300.0f; break;
    }
  }
  return q;
}

void CheckTile(const Rows& rows, knn::Element element, const std::vector<float>& q, int64_t nq, int64_t dim, bool exact,
               const char* what) {
  const int64_t ld = rows.nblocks * knn::kBlock + 3;  // an ld wider than the tile
  std::vector<float> out(static_cast<size_t>(nq * ld), -1.0f);
  knn::DotTile(q.data(), nq, dim, rows.bytes.data(), element, rows.nblocks, out.data(), ld);
  for (int64_t j = 0; j < nq; ++j) {
    for (int64_t i = 0; i < rows.nblocks * knn::kBlock; ++i) {
      double ref = 0.0;
      for (int64_t d = 0; d < dim; ++d)
        ref += q[static_cast<size_t>(j * dim + d)] * rows.plain[static_cast<size_t>(i * dim + d)];
      const double got = out[static_cast<size_t>(j * ld + i)];
      if (exact) {
        Check(got == ref, what, got, ref);
      } else {
        Check(std::fabs(got - ref) <= 1e-5 * (std::fabs(ref) + 1.0) * dim, what, got, ref);
      }
    }
    // nothing written past the tile's columns
    for (int64_t i = rows.nblocks * knn::kBlock; i < ld; ++i)
      Check(out[static_cast<size_t>(j * ld + i)] == -1.0f, what);
  }
}

}  // namespace
}  // namespace pylocalize

int main() {
  using namespace pylocalize;
  std::mt19937_64 rng(5);
  for (SimdLevel level : SupportedSimdLevels()) {
    SetSimdLevel(level);
    for (knn::Element element : {knn::Element::kUInt8, knn::Element::kFloat32}) {
      for (int64_t dim : {1, 2, 33, 128, 258, 259}) {
        const Rows rows = MakeRows(rng, 75, dim, element);
        for (int64_t nq = 1; nq <= 9; ++nq) {
          for (QueryKind kind : {QueryKind::kUInt8, QueryKind::kSigned, QueryKind::kFraction, QueryKind::kLarge}) {
            // integers of at most 255 keep every partial sum below 2^24 up to dim 258: exact
            const bool exact = (kind == QueryKind::kUInt8 || kind == QueryKind::kSigned) && dim <= 258;
            CheckTile(rows, element, MakeQueries(rng, nq, dim, kind), nq, dim, exact, SimdLevelName(level));
          }
        }
      }
    }
  }
  std::printf(testing::g_failures == 0 ? "knn kernels: all checks passed\n" : "knn kernels: %d failures\n",
              testing::g_failures);
  return testing::g_failures == 0 ? 0 : 1;
}
