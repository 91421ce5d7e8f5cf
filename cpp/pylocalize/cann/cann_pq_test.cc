// Checks the product quantizer and CannPqIndex against brute-force loops in double: an ADC
// table lookup equals the squared distance to the decoded vector, and with every list probed
// the index's scores equal S(m) computed from its definition over the decoded features.
// Built by CMake with -DPYLOCALIZE_BUILD_TESTS=ON (ctest); exit status 0 when everything agrees.
#include "pylocalize/cann/cann_pq.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <random>
#include <vector>

#include "pylocalize/pq/product_quantizer.h"
#include "pylocalize/util/testing.h"

namespace pylocalize {
namespace {

using testing::Check;

using testing::SquaredDistance;

// n rows around n / per_image image centres, image i's rows i * per_image ...
std::vector<float> Clustered(std::mt19937_64& rng, int64_t n, int64_t per_image, int64_t dim) {
  std::normal_distribution<float> noise(0.0f, 20.0f);
  std::uniform_real_distribution<float> centre(0.0f, 120.0f);
  std::vector<float> x(static_cast<size_t>(n * dim));
  std::vector<float> c(static_cast<size_t>(dim));
  for (int64_t i = 0; i < n; ++i) {
    if (i % per_image == 0) {
      for (float& v : c) v = centre(rng);
    }
    for (int64_t d = 0; d < dim; ++d) x[static_cast<size_t>(i * dim + d)] = c[static_cast<size_t>(d)] + noise(rng);
  }
  return x;
}

void CheckAdc(std::mt19937_64& rng) {
  const int64_t n = 800, dim = 24, m = 6;
  const std::vector<float> x = Clustered(rng, n, 40, dim);
  pq::ProductQuantizer quantizer(dim, m);
  quantizer.Train(x.data(), n, pq::TrainParams{}, 2);
  std::vector<uint8_t> codes(static_cast<size_t>(n * m));
  quantizer.Encode(x.data(), n, codes.data(), 2);
  std::vector<float> decoded(static_cast<size_t>(n * dim)), tables(static_cast<size_t>(3 * m * pq::kCentroids));
  quantizer.Decode(codes.data(), n, decoded.data());
  quantizer.DistanceTables(x.data(), 3, tables.data());
  for (int64_t q = 0; q < 3; ++q) {
    for (int64_t i = 0; i < n; i += 7) {
      const double adc = pq::AdcLookup(tables.data() + q * m * pq::kCentroids, codes.data() + i * m, m);
      const double ref = SquaredDistance(x.data() + q * dim, decoded.data() + i * dim, dim);
      Check(std::fabs(adc - ref) <= 1e-4 * std::max(1.0, ref), "ADC lookup = distance to the decoded vector", adc, ref);
    }
  }
}

void CheckScores(std::mt19937_64& rng, bool by_residual) {
  const int64_t n = 900, dim = 16, per_image = 30;
  const std::vector<float> x = Clustered(rng, n, per_image, dim);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = 100 + i / per_image;
  CannPqIndex index(dim, 4, by_residual);
  CannPqTrainParams params;
  params.nlist = 5;
  index.Train(x.data(), knn::Element::kFloat32, n, params, 2);
  index.Add(x.data(), knn::Element::kFloat32, ids.data(), n, 2);
  std::vector<float> xr;
  std::vector<int64_t> ir;
  index.Reconstruct(&xr, &ir);
  const std::vector<float> queries(x.begin() + 90 * dim, x.begin() + 110 * dim);  // 20 features of image 103
  CannPqSearchOptions options;
  options.nprobe = 5;  // every list
  std::map<int64_t, double> best_total;
  for (int64_t q = 0; q < 20; ++q) {
    std::map<int64_t, double> best;
    for (int64_t i = 0; i < n; ++i) {
      // less the mean squared quantization error, as the index's search
      const double d2 = std::max(
          0.0, SquaredDistance(queries.data() + q * dim, xr.data() + i * dim, dim) - index.quantization_error());
      auto it = best.find(ir[static_cast<size_t>(i)]);
      if (it == best.end() || d2 < it->second) best[ir[static_cast<size_t>(i)]] = d2;
    }
    for (const auto& [image, d2] : best) best_total[image] += options.kernel(std::sqrt(d2)) / 20.0;
  }
  std::vector<float> scores(5);
  std::vector<int64_t> got(5);
  index.Search(options, queries.data(), 20, 5, scores.data(), got.data(), 2);
  std::vector<double> ref;
  for (const auto& [image, s] : best_total) ref.push_back(s);
  std::sort(ref.rbegin(), ref.rend());
  for (int64_t j = 0; j < 5; ++j) {
    Check(std::fabs(scores[static_cast<size_t>(j)] - best_total[got[static_cast<size_t>(j)]]) < 1e-4,
          "score of the returned image", scores[static_cast<size_t>(j)], best_total[got[static_cast<size_t>(j)]]);
    Check(std::fabs(scores[static_cast<size_t>(j)] - ref[static_cast<size_t>(j)]) < 1e-4, "j-th best score",
          scores[static_cast<size_t>(j)], ref[static_cast<size_t>(j)]);
  }
  Check(got[0] == 103, "the query's own image first", static_cast<double>(got[0]), 103);
}

}  // namespace
}  // namespace pylocalize

int main() {
  std::mt19937_64 rng(2026);
  pylocalize::CheckAdc(rng);
  pylocalize::CheckScores(rng, true);
  pylocalize::CheckScores(rng, false);
  if (pylocalize::testing::g_failures > 0) {
    std::printf("%d checks failed\n", pylocalize::testing::g_failures);
    return 1;
  }
  std::printf("cann_pq_test: all checks passed\n");
  return 0;
}
