// Method grid: the paper's colored range search with random grids (grid.h). A query feature
// looks up its cell in every grid of the smallest radius first; an image keeps the distance
// of the first radius at which one of its features is truly within the radius.
#include <algorithm>
#include <limits>

#include "pylocalize/cann/layouts.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace cann {
namespace {

// Per-thread state of the grid search, reused across query features.
struct GridScratch {
  explicit GridScratch(const GridLayout& L)
      : done(L.images.size(), 0), seen(L.feature_image.size(), -1), seen_d2(L.feature_image.size()) {}
  std::vector<uint8_t> done;   // per image: found at a smaller radius
  std::vector<int64_t> seen;   // per feature: the query feature that last measured it
  std::vector<float> seen_d2;  // per feature: that distance
  std::vector<int32_t> cell;
};

// Offers the images of query feature q (qv) to `acc`, radius by radius.
void OfferGridCandidates(const GridLayout& L, int64_t dim, const float* qv, int64_t q, GridScratch* s,
                         ScoreAccumulator* acc) {
  const GridParams& gp = L.grids.params();
  for (int j = 0; j < gp.num_radii; ++j) {
    const float r2 = static_cast<float>(L.grids.radius(j) * L.grids.radius(j));
    for (int g = 0; g < gp.num_grids; ++g) {
      s->cell.clear();
      L.grids.Lookup(qv, j, g, &s->cell);
      for (int32_t f : s->cell) {
        const int32_t image = L.feature_image[static_cast<size_t>(f)];
        if (s->done[static_cast<size_t>(image)]) continue;  // found at a smaller radius
        // A feature met in several grids or radii is measured once per query feature.
        if (s->seen[static_cast<size_t>(f)] != q) {
          const float* xv = L.rows.data() + static_cast<int64_t>(f) * dim;
          float d2 = 0.0f;
          for (int64_t d = 0; d < dim; ++d) {
            const float e = qv[d] - xv[d];
            d2 += e * e;
          }
          s->seen[static_cast<size_t>(f)] = q;
          s->seen_d2[static_cast<size_t>(f)] = d2;
        }
        const float d2 = s->seen_d2[static_cast<size_t>(f)];
        if (d2 <= r2) acc->Offer(image, d2);
      }
    }
    // Images found at this radius keep their distance: close them for larger radii.
    for (int32_t image : acc->touched()) s->done[static_cast<size_t>(image)] = 1;
  }
  for (int32_t image : acc->touched()) s->done[static_cast<size_t>(image)] = 0;
}

}  // namespace

GridLayout BuildGridLayout(std::vector<float> float_rows, int64_t dim, const std::vector<int64_t>& image_ids,
                           double r_max, const GridParams& params, int num_threads) {
  GridLayout L;
  L.rows = std::move(float_rows);
  const int64_t n = static_cast<int64_t>(image_ids.size());
  L.images = DistinctImages(image_ids);
  L.feature_image.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    L.feature_image[static_cast<size_t>(i)] = static_cast<int32_t>(
        std::lower_bound(L.images.begin(), L.images.end(), image_ids[static_cast<size_t>(i)]) - L.images.begin());
  }
  if (n > 0) L.grids.Build(L.rows.data(), n, dim, r_max, params, num_threads);
  return L;
}

void SearchGrid(const GridLayout& L, int64_t dim, const float* queries, int64_t nq, int64_t k, const CannKernel& kernel,
                float* scores, int64_t* image_ids, int num_threads) {
  const int64_t num_images = static_cast<int64_t>(L.images.size());
  std::vector<double> total(static_cast<size_t>(num_images), 0.0);
  if (nq > 0 && num_images > 0 && L.grids.built()) {
    const int threads = std::max(1, num_threads);
    ThreadScores per_thread(threads, num_images, kernel);
    const int64_t chunks = std::min<int64_t>(nq, 8 * threads);
    ParallelFor(chunks, threads, [&](int64_t t, int tid) {
      InterruptPoint();
      ScoreAccumulator& acc = per_thread[tid];
      GridScratch scratch(L);
      for (int64_t q = t * nq / chunks; q < (t + 1) * nq / chunks; ++q) {
        OfferGridCandidates(L, dim, queries + q * dim, q, &scratch, &acc);
        acc.CloseFeature();
      }
    });
    total = per_thread.Sum();
  }
  TopImages(total, L.images, nq, k, scores, image_ids);
}

}  // namespace cann
}  // namespace pylocalize
