// Checks the coarse quantizer against brute force in double: flat below the threshold it is
// exact; two-level, every answer's distance is the true distance to that centroid, answers
// are distinct and best first, each centroid finds itself, results do not depend on the
// thread count, and most rows of clustered data find their true nearest centroid.
// Built by CMake with -DPYLOCALIZE_BUILD_TESTS=ON (ctest); exit status 0 when everything agrees.
#include "pylocalize/knn/coarse_quantizer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <set>
#include <vector>

#include "pylocalize/util/testing.h"

namespace pylocalize {
namespace {

using testing::Check;

using testing::SquaredDistance;

// n rows scattered around `modes` random centres (SIFT-like magnitudes)
std::vector<float> Clustered(std::mt19937_64& rng, int64_t n, int64_t modes, int64_t dim) {
  std::uniform_real_distribution<float> centre(0.0f, 120.0f);
  std::normal_distribution<float> noise(0.0f, 12.0f);
  std::vector<float> c(static_cast<size_t>(modes * dim));
  for (float& v : c) v = centre(rng);
  std::uniform_int_distribution<int64_t> pick(0, modes - 1);
  std::vector<float> x(static_cast<size_t>(n * dim));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = pick(rng);
    for (int64_t d = 0; d < dim; ++d)
      x[static_cast<size_t>(i * dim + d)] = c[static_cast<size_t>(j * dim + d)] + noise(rng);
  }
  return x;
}

// The index of the true nearest centroid of row x (smaller index on ties).
int64_t Nearest(const std::vector<float>& c, int64_t k, const float* x, int64_t dim) {
  int64_t best = 0;
  double best_d = SquaredDistance(c.data(), x, dim);
  for (int64_t j = 1; j < k; ++j) {
    const double d = SquaredDistance(c.data() + j * dim, x, dim);
    if (d < best_d) best = j, best_d = d;
  }
  return best;
}

// Shared checks: m distinct labels, best first, distances equal to the true ones.
void CheckAnswers(const knn::CoarseQuantizer& q, const std::vector<float>& x, int64_t n, int64_t m,
                  const std::vector<int64_t>& labels, const std::vector<float>& dist) {
  const int64_t dim = q.dim();
  for (int64_t r = 0; r < n; ++r) {
    std::set<int64_t> seen;
    for (int64_t j = 0; j < m; ++j) {
      const int64_t l = labels[static_cast<size_t>(r * m + j)];
      Check(l >= 0 && l < q.size(), "label in range", static_cast<double>(l));
      if (l < 0 || l >= q.size()) continue;
      seen.insert(l);
      const double truth = SquaredDistance(q.centroids().data() + l * dim, x.data() + r * dim, dim);
      const float got = dist[static_cast<size_t>(r * m + j)];
      Check(std::fabs(got - truth) <= 1e-3 * (truth + 100.0), "distance is the true one", got, truth);
      if (j > 0) Check(got >= dist[static_cast<size_t>(r * m + j - 1)] - 1e-2f, "best first");
    }
    Check(static_cast<int64_t>(seen.size()) == m, "distinct labels", static_cast<double>(seen.size()));
  }
}

void TestFlatIsExact() {
  std::mt19937_64 rng(1);
  const int64_t dim = 24, k = 300, n = 500, m = 3;
  const std::vector<float> c = Clustered(rng, k, 40, dim), x = Clustered(rng, n, 40, dim);
  const knn::CoarseQuantizer q(c, dim);
  Check(!q.two_level(), "below the threshold the quantizer is flat");
  std::vector<int64_t> labels(static_cast<size_t>(n * m));
  std::vector<float> dist(static_cast<size_t>(n * m));
  q.Assign(x.data(), n, m, labels.data(), dist.data(), 2);
  CheckAnswers(q, x, n, m, labels, dist);
  for (int64_t r = 0; r < n; ++r) {
    Check(labels[static_cast<size_t>(r * m)] == Nearest(c, k, x.data() + r * dim, dim), "flat finds the nearest");
  }
}

void TestTwoLevel() {
  std::mt19937_64 rng(2);
  const int64_t dim = 32, k = 2000, n = 3000, m = 4;
  const std::vector<float> c = Clustered(rng, k, 200, dim), x = Clustered(rng, n, 200, dim);
  const knn::CoarseQuantizer q(c, dim, 7);
  Check(q.two_level(), "from the threshold on the quantizer is two-level");
  std::vector<int64_t> labels(static_cast<size_t>(n * m)), labels1(static_cast<size_t>(n * m));
  std::vector<float> dist(static_cast<size_t>(n * m)), dist1(static_cast<size_t>(n * m));
  q.Assign(x.data(), n, m, labels.data(), dist.data(), 2);
  q.Assign(x.data(), n, m, labels1.data(), dist1.data(), 1);
  CheckAnswers(q, x, n, m, labels, dist);
  Check(labels == labels1 && dist == dist1, "the same answers on 1 and 2 threads");
  int64_t found = 0;
  for (int64_t r = 0; r < n; ++r) found += labels[static_cast<size_t>(r * m)] == Nearest(c, k, x.data() + r * dim, dim);
  Check(found >= n * 8 / 10, "two-level finds the true nearest centroid of most rows", static_cast<double>(found),
        static_cast<double>(n));
  // A centroid's own group is its nearest centre, always probed: it finds itself.
  std::vector<int64_t> self(static_cast<size_t>(k));
  std::vector<float> self_d(static_cast<size_t>(k));
  q.Assign(c.data(), k, 1, self.data(), self_d.data(), 2);
  int64_t itself = 0;
  for (int64_t j = 0; j < k; ++j) itself += self[static_cast<size_t>(j)] == j || self_d[static_cast<size_t>(j)] == 0.0f;
  Check(itself == k, "every centroid finds itself", static_cast<double>(itself), static_cast<double>(k));
  // More answers than the probed groups hold: those rows are searched flat, still exact.
  const int64_t all = k;
  std::vector<int64_t> every(static_cast<size_t>(all * 2));
  std::vector<float> every_d(static_cast<size_t>(all * 2));
  q.Assign(x.data(), 2, all, every.data(), every_d.data(), 2);
  CheckAnswers(q, x, 2, all, every, every_d);
}

}  // namespace
}  // namespace pylocalize

int main() {
  pylocalize::TestFlatIsExact();
  pylocalize::TestTwoLevel();
  if (pylocalize::testing::g_failures > 0) {
    std::printf("%d failure(s)\n", pylocalize::testing::g_failures);
    return 1;
  }
  std::printf("coarse quantizer: all checks passed\n");
  return 0;
}
