// Checks the pieces every CANN method shares against brute-force loops: the blocked layout
// builder (blocked_rows.h), the score accumulator (scoring.h), and the exact and ivf searches
// of CannIndex against S(m) computed from its definition in double. Also a save/load round
// trip of the stored search options, and a trained index loaded from its saved layout. Built by CMake with
// -DPYLOCALIZE_BUILD_TESTS=ON (ctest); exit status 0 when everything agrees.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "pylocalize/cann/blocked_rows.h"
#include "pylocalize/cann/cann_index.h"
#include "pylocalize/cann/scoring.h"
#include "pylocalize/util/testing.h"

namespace pylocalize {
namespace {

using testing::Check;

// Every slot holds its source row, element for element, with its squared norm; padding is zero.
void CheckBlockedRows(std::mt19937_64& rng) {
  for (knn::Element element : {knn::Element::kFloat32, knn::Element::kUInt8}) {
    const int64_t n = 77, dim = 13, es = element == knn::Element::kUInt8 ? 1 : 4;
    std::vector<uint8_t> rows(static_cast<size_t>(n * dim * es));
    std::vector<float> values(static_cast<size_t>(n * dim));
    std::uniform_real_distribution<float> uniform(-3.0f, 3.0f);
    for (int64_t i = 0; i < n * dim; ++i) {
      if (element == knn::Element::kUInt8) {
        rows[static_cast<size_t>(i)] = static_cast<uint8_t>(rng() % 256);
        values[static_cast<size_t>(i)] = rows[static_cast<size_t>(i)];
      } else {
        values[static_cast<size_t>(i)] = uniform(rng);
        std::memcpy(rows.data() + i * 4, &values[static_cast<size_t>(i)], 4);
      }
    }
    std::vector<int64_t> source(static_cast<size_t>(8 * knn::kBlock), -1);  // 128 slots, 51 padding
    std::vector<int64_t> slots(source.size());
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng);
    for (int64_t i = 0; i < n; ++i) source[static_cast<size_t>(slots[static_cast<size_t>(i)])] = i;
    const cann::BlockedRows b = cann::BuildBlockedRows(rows.data(), element, dim, source);
    Check(b.num_blocks() == 8, "num_blocks", static_cast<double>(b.num_blocks()), 8);
    for (int64_t slot = 0; slot < static_cast<int64_t>(source.size()); ++slot) {
      const int64_t src = source[static_cast<size_t>(slot)];
      double norm = 0.0;
      for (int64_t d = 0; d < dim; ++d) {
        const uint8_t* p = b.block(slot / knn::kBlock) + (d * knn::kBlock + slot % knn::kBlock) * es;
        float got;
        if (element == knn::Element::kUInt8) {
          got = *p;
        } else {
          std::memcpy(&got, p, 4);
        }
        const float want = src < 0 ? 0.0f : values[static_cast<size_t>(src * dim + d)];
        Check(got == want, "blocked element", got, want);
        norm += static_cast<double>(want) * want;
      }
      Check(b.norms[static_cast<size_t>(slot)] == static_cast<float>(norm), "blocked norm",
            b.norms[static_cast<size_t>(slot)], norm);
    }
  }
}

// Offers per query feature against a plain min-then-kernel loop.
void CheckAccumulator(std::mt19937_64& rng) {
  CannKernel kernel;
  kernel.p0 = 10.0;
  const int64_t num_images = 9, nq = 25;
  cann::ScoreAccumulator acc(num_images, kernel);
  std::vector<double> want(static_cast<size_t>(num_images), 0.0);
  std::uniform_real_distribution<float> d2(0.0f, 150.0f);
  for (int64_t q = 0; q < nq; ++q) {
    std::vector<float> best(static_cast<size_t>(num_images), INFINITY);
    for (int c = 0; c < 40; ++c) {
      const int32_t image = static_cast<int32_t>(rng() % num_images);
      const float v = d2(rng);
      acc.Offer(image, v);
      best[static_cast<size_t>(image)] = std::min(best[static_cast<size_t>(image)], v);
    }
    acc.CloseFeature();
    for (int64_t m = 0; m < num_images; ++m) {
      if (std::isfinite(best[static_cast<size_t>(m)]))
        want[static_cast<size_t>(m)] += kernel(std::sqrt(static_cast<double>(best[static_cast<size_t>(m)])));
    }
  }
  for (int64_t m = 0; m < num_images; ++m) {
    Check(std::fabs(acc.totals()[static_cast<size_t>(m)] - want[static_cast<size_t>(m)]) < 1e-9, "accumulated score",
          acc.totals()[static_cast<size_t>(m)], want[static_cast<size_t>(m)]);
  }
}

// S(m) of every image from its definition, in double.
std::vector<double> BruteScores(const std::vector<float>& x, const std::vector<int64_t>& ids,
                                const std::vector<int64_t>& images, const std::vector<float>& q, int64_t nq,
                                int64_t dim, const CannKernel& kernel) {
  std::vector<double> s(images.size(), 0.0);
  for (int64_t j = 0; j < nq; ++j) {
    std::vector<double> best(images.size(), INFINITY);
    for (size_t i = 0; i < ids.size(); ++i) {
      double e = 0.0;
      for (int64_t d = 0; d < dim; ++d) {
        const double diff = static_cast<double>(q[static_cast<size_t>(j * dim + d)]) - x[i * dim + d];
        e += diff * diff;
      }
      const size_t m = static_cast<size_t>(std::lower_bound(images.begin(), images.end(), ids[i]) - images.begin());
      best[m] = std::min(best[m], e);
    }
    for (size_t m = 0; m < images.size(); ++m) s[m] += kernel(std::sqrt(best[m]));
  }
  for (double& v : s) v /= static_cast<double>(nq);
  return s;
}

// Exact, and ivf probing every list, rank every image as the brute-force S(m) does; the
// stored search options survive Serialize / Deserialize.
void CheckSearches(std::mt19937_64& rng) {
  const int64_t dim = 12, n = 600, num_images = 30, nq = 17, k = num_images;
  std::normal_distribution<float> normal(0.0f, 20.0f);
  std::vector<float> x(static_cast<size_t>(n * dim)), q(static_cast<size_t>(nq * dim));
  for (float& v : x) v = normal(rng);
  for (float& v : q) v = normal(rng);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t& id : ids) id = 5 + 2 * static_cast<int64_t>(rng() % num_images);
  std::vector<int64_t> images = ids;
  std::sort(images.begin(), images.end());
  images.erase(std::unique(images.begin(), images.end()), images.end());
  CannIndex index(dim);
  index.Add(x.data(), knn::Element::kFloat32, ids.data(), n);
  index.Train(8, 5, 1, 64, 2);
  CannSearchParams params;
  params.kernel.p0 = 60.0;
  const std::vector<double> want = BruteScores(x, ids, images, q, nq, dim, params.kernel);
  for (CannMethod method : {CannMethod::kExact, CannMethod::kIvf}) {
    params.method = method;
    params.nprobe = 8;  // every list: only pairs beyond the cutoff (scoring 0) are skipped
    std::vector<float> scores(static_cast<size_t>(k));
    std::vector<int64_t> found(static_cast<size_t>(k));
    index.Search(params, q.data(), nq, k, scores.data(), found.data(), 2);
    for (int64_t r = 0; r < static_cast<int64_t>(images.size()); ++r) {
      const size_t m = static_cast<size_t>(
          std::lower_bound(images.begin(), images.end(), found[static_cast<size_t>(r)]) - images.begin());
      Check(m < images.size(), "found image id", static_cast<double>(found[static_cast<size_t>(r)]));
      if (m < images.size()) {
        Check(std::fabs(scores[static_cast<size_t>(r)] - want[m]) < 1e-4, CannMethodName(method),
              scores[static_cast<size_t>(r)], want[m]);
      }
    }
  }
  CannSearchOptions options;
  options.params = params;
  options.grid.num_grids = 3;
  options.grid.seed = ~uint64_t{0};
  index.SetSearchOptions(options);
  const std::optional<CannSearchOptions> back = CannIndex::Deserialize(index.Serialize())->search_options();
  Check(back.has_value() && back->params.method == CannMethod::kIvf && back->params.nprobe == 8 &&
            back->params.kernel.p0 == 60.0 && back->grid.num_grids == 3 && back->grid.seed == ~uint64_t{0},
        "stored search options");
  Check(!CannIndex(dim).search_options().has_value(), "no options before they are set");
}

// Scores and image ids of one search, for comparing two indexes exactly.
std::pair<std::vector<float>, std::vector<int64_t>> Ranked(const CannIndex& index, CannMethod method,
                                                           const std::vector<float>& q, int64_t nq) {
  CannSearchParams params;
  params.method = method;
  params.kernel.p0 = 60.0;
  params.nprobe = 3;
  std::vector<float> scores(10);
  std::vector<int64_t> found(10);
  index.Search(params, q.data(), nq, 10, scores.data(), found.data(), 2);
  return {scores, found};
}

// A trained index saved with its ivf layout and loaded mapped (zero copy) or read searches
// as the saved one, by ivf and exact (recovered insertion order), before and after an Add.
void CheckLoadedLayout(std::mt19937_64& rng) {
  const int64_t dim = 16, n = 900, nq = 11;
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<uint8_t> x(static_cast<size_t>(n * dim));
  for (uint8_t& v : x) v = static_cast<uint8_t>(byte(rng));
  std::vector<float> q(static_cast<size_t>(nq * dim));
  for (float& v : q) v = static_cast<float>(byte(rng));
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t& id : ids) id = static_cast<int64_t>(rng() % 40);
  CannIndex index(dim);
  index.Add(x.data(), knn::Element::kUInt8, ids.data(), n);
  index.Train(12, 5, 1, 64, 2);
  const std::string path = "pylocalize_cann_test_layout.pyloc";
  index.Save(path);
  for (bool mmap : {true, false}) {
    std::unique_ptr<CannIndex> loaded = CannIndex::Load(path, mmap);
    Check(loaded->ntotal() == n && loaded->ImageIds() == index.ImageIds(), "loaded features");
    Check(mmap ? loaded->MappedBytes() > n * dim : loaded->MappedBytes() == 0, "mapped bytes",
          static_cast<double>(loaded->MappedBytes()));
    for (CannMethod method : {CannMethod::kIvf, CannMethod::kExact}) {
      Check(Ranked(*loaded, method, q, nq) == Ranked(index, method, q, nq), "loaded layout searches the same");
    }
    loaded->Add(x.data(), knn::Element::kUInt8, ids.data(), 50);
    CannIndex grown(dim);  // the same lists (same k-means), then the same add
    grown.Add(x.data(), knn::Element::kUInt8, ids.data(), n);
    grown.Train(12, 5, 1, 64, 2);
    grown.Add(x.data(), knn::Element::kUInt8, ids.data(), 50);
    Check(loaded->MappedBytes() == 0, "copied out of the file before a change");
    Check(Ranked(*loaded, CannMethod::kIvf, q, nq) == Ranked(grown, CannMethod::kIvf, q, nq), "add after load");
  }
  std::remove(path.c_str());
}

}  // namespace
}  // namespace pylocalize

int main() {
  std::mt19937_64 rng(2026);
  pylocalize::CheckBlockedRows(rng);
  pylocalize::CheckAccumulator(rng);
  pylocalize::CheckSearches(rng);
  pylocalize::CheckLoadedLayout(rng);
  std::printf("cann %s\n", pylocalize::testing::g_failures == 0 ? "ok" : "FAILED");
  return pylocalize::testing::g_failures == 0 ? 0 : 1;
}
