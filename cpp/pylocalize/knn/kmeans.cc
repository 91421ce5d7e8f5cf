#include "pylocalize/knn/kmeans.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "pylocalize/knn/coarse_quantizer.h"
#include "pylocalize/knn/kernels.h"
#include "pylocalize/util/check.h"
#include "pylocalize/util/cpu.h"
#include "pylocalize/util/threads.h"
#include "pylocalize/util/topk.h"

namespace pylocalize {
namespace knn {

void AssignNearestM(const float* centroids, int64_t k, const float* x, int64_t n, int64_t dim, int64_t m,
                    int64_t* labels, float* distances, int num_threads) {
  PYL_CHECK(k >= 1 && m >= 1 && m <= k, "need 1 <= m <= k centroids");
  AssignBlocked(Block(centroids, k, dim), x, n, dim, m, labels, distances, num_threads);
}

void AssignNearestM(const uint8_t* centroids, int64_t k, const uint8_t* x, int64_t n, int64_t dim, int64_t m,
                    int64_t* labels, float* distances, int num_threads) {
  PYL_CHECK(k >= 1 && m >= 1 && m <= k, "need 1 <= m <= k centroids");
  // the rows as floats (the kernels' query type): small integers, which the uint8 kernels
  // multiply exactly
  const std::vector<float> rows(x, x + n * dim);
  AssignBlocked(Block(centroids, k, dim), rows.data(), n, dim, m, labels, distances, num_threads);
}

void AssignNearest(const float* centroids, int64_t k, const float* x, int64_t n, int64_t dim, int64_t* labels,
                   float* distances, int num_threads) {
  AssignNearestM(centroids, k, x, n, dim, 1, labels, distances, num_threads);
}

namespace {

// The training points: a subsample of at most ns rows drawn without replacement, gathered in
// memory order into *xs. Returns the first k rows drawn (distinct random points of x), the
// initial centroids when k-means++ would cost too much.
std::vector<int64_t> Subsample(const RowReader& row, int64_t n, int64_t dim, int64_t k, int64_t ns,
                               std::mt19937_64& rng, std::vector<float>* xs) {
  std::vector<int64_t> sample(static_cast<size_t>(n));
  std::iota(sample.begin(), sample.end(), 0);
  for (int64_t i = 0; i < ns; ++i) {
    std::uniform_int_distribution<int64_t> pick(i, n - 1);
    std::swap(sample[static_cast<size_t>(i)], sample[static_cast<size_t>(pick(rng))]);
  }
  sample.resize(static_cast<size_t>(ns));
  std::vector<int64_t> init(sample.begin(), sample.begin() + k);
  std::sort(sample.begin(), sample.end());  // gather in memory order
  xs->resize(static_cast<size_t>(ns * dim));
  for (int64_t i = 0; i < ns; ++i) row(sample[static_cast<size_t>(i)], xs->data() + i * dim);
  return init;
}

double SquaredDistance(const float* a, const float* b, int64_t dim) {
  double e = 0.0;
  for (int64_t d = 0; d < dim; ++d) {
    const double diff = static_cast<double>(a[d]) - b[d];
    e += diff * diff;
  }
  return e;
}

// A D^2-sampled point of xs (the last one if rounding leaves r > 0 after all of them).
int64_t SampleByPotential(const std::vector<double>& d2, double sum, std::mt19937_64& rng) {
  double r = std::uniform_real_distribution<double>(0.0, sum)(rng);
  for (size_t i = 0; i < d2.size(); ++i) {
    r -= d2[i];
    if (r <= 0.0) return static_cast<int64_t>(i);
  }
  return static_cast<int64_t>(d2.size()) - 1;
}

// Greedy k-means++ seeding: of `trials` D^2-sampled candidates per centroid, keep the one
// that lowers the potential most (random points can share a cluster, which Lloyd never undoes).
void SeedKMeansPlusPlus(const std::vector<float>& xs, int64_t ns, int64_t dim, int64_t k, int trials,
                        std::mt19937_64& rng, float* centroids) {
  std::vector<double> d2(static_cast<size_t>(ns));
  const int64_t first = std::uniform_int_distribution<int64_t>(0, ns - 1)(rng);
  std::memcpy(centroids, xs.data() + first * dim, static_cast<size_t>(dim) * sizeof(float));
  double sum = 0.0;
  for (int64_t i = 0; i < ns; ++i)
    sum += d2[static_cast<size_t>(i)] = SquaredDistance(&xs[i * dim], &xs[first * dim], dim);
  std::vector<double> cand_d2(static_cast<size_t>(ns)), best_d2(static_cast<size_t>(ns));
  for (int64_t c = 1; c < k; ++c) {
    InterruptPoint();  // seeding is serial and can take seconds for many lists
    double best_sum = std::numeric_limits<double>::infinity();
    int64_t best_pick = 0;
    for (int t = 0; t < trials; ++t) {
      const int64_t pick = SampleByPotential(d2, sum, rng);
      double s = 0.0;
      for (int64_t i = 0; i < ns; ++i) {
        cand_d2[static_cast<size_t>(i)] =
            std::min(d2[static_cast<size_t>(i)], SquaredDistance(&xs[i * dim], &xs[pick * dim], dim));
        s += cand_d2[static_cast<size_t>(i)];
      }
      if (s < best_sum) {
        best_sum = s;
        best_pick = pick;
        best_d2.swap(cand_d2);
      }
    }
    std::memcpy(centroids + c * dim, xs.data() + best_pick * dim, static_cast<size_t>(dim) * sizeof(float));
    d2.swap(best_d2);
    sum = best_sum;
  }
}

// Lloyd's update: each centroid with points moves to their mean. Returns the point counts.
std::vector<int64_t> UpdateCentroids(const std::vector<float>& xs, int64_t ns, int64_t dim, int64_t k,
                                     const std::vector<int64_t>& labels, float* centroids) {
  std::vector<double> sum(static_cast<size_t>(k * dim), 0.0);
  std::vector<int64_t> count(static_cast<size_t>(k), 0);
  for (int64_t i = 0; i < ns; ++i) {
    const int64_t c = labels[static_cast<size_t>(i)];
    ++count[static_cast<size_t>(c)];
    for (int64_t d = 0; d < dim; ++d) sum[static_cast<size_t>(c * dim + d)] += xs[static_cast<size_t>(i * dim + d)];
  }
  for (int64_t c = 0; c < k; ++c) {
    if (count[static_cast<size_t>(c)] == 0) continue;
    for (int64_t d = 0; d < dim; ++d) {
      centroids[c * dim + d] =
          static_cast<float>(sum[static_cast<size_t>(c * dim + d)] / count[static_cast<size_t>(c)]);
    }
  }
  return count;
}

// Empty clusters: each takes half of the largest cluster, the two centroids pushed apart by
// a small symmetric perturbation so that the next assignment splits it.
void RepairEmptyClusters(int64_t dim, int64_t k, std::vector<int64_t>* count, std::mt19937_64& rng, float* centroids) {
  std::vector<int64_t>& n = *count;
  for (int64_t c = 0; c < k; ++c) {
    if (n[static_cast<size_t>(c)] != 0) continue;
    const int64_t big = std::max_element(n.begin(), n.end()) - n.begin();
    std::uniform_real_distribution<float> jitter(-1.0f, 1.0f);
    for (int64_t d = 0; d < dim; ++d) {
      const float v = centroids[big * dim + d];
      const float e = 1e-3f * (std::fabs(v) + 1e-3f) * jitter(rng);
      centroids[c * dim + d] = v + e;
      centroids[big * dim + d] = v - e;
    }
    n[static_cast<size_t>(c)] = n[static_cast<size_t>(big)] / 2;
    n[static_cast<size_t>(big)] -= n[static_cast<size_t>(c)];
  }
}

}  // namespace

KMeansResult KMeans(const float* x, int64_t n, int64_t dim, int64_t k, int iterations, uint64_t seed,
                    int64_t max_points_per_centroid, int num_threads, bool plus_plus) {
  const RowReader row = [x, dim](int64_t i, float* out) {
    std::memcpy(out, x + i * dim, static_cast<size_t>(dim) * sizeof(float));
  };
  return KMeans(row, n, dim, k, iterations, seed, max_points_per_centroid, num_threads, plus_plus);
}

KMeansResult KMeans(const RowReader& row, int64_t n, int64_t dim, int64_t k, int iterations, uint64_t seed,
                    int64_t max_points_per_centroid, int num_threads, bool plus_plus) {
  PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
  PYL_CHECK(n >= k, "k-means needs at least k = ", k, " points, got ", n);
  PYL_CHECK(iterations >= 0, "iterations must be >= 0");
  std::mt19937_64 rng(seed);
  const int64_t ns = max_points_per_centroid > 0 ? std::min(n, k * max_points_per_centroid) : n;
  std::vector<float> xs;
  const std::vector<int64_t> init = Subsample(row, n, dim, k, ns, rng, &xs);
  KMeansResult result;
  result.centroids.resize(static_cast<size_t>(k * dim));
  const int trials = 2 + static_cast<int>(std::log(static_cast<double>(k)));
  if (plus_plus && static_cast<double>(ns) * static_cast<double>(k) * static_cast<double>(dim) * trials <= 4e9) {
    SeedKMeansPlusPlus(xs, ns, dim, k, trials, rng, result.centroids.data());
  } else {
    // Large problems: k distinct random points (as FAISS), seeding would cost more than training.
    for (int64_t c = 0; c < k; ++c) row(init[static_cast<size_t>(c)], result.centroids.data() + c * dim);
  }
  std::vector<int64_t> labels(static_cast<size_t>(ns));
  std::vector<float> dist(static_cast<size_t>(ns));
  for (int it = 0; it <= iterations; ++it) {
    InterruptPoint();
    // Many centroids: the two-level quantizer, as the inverted file will assign with it
    if (k >= kTwoLevelMinCentroids) {
      CoarseQuantizer(result.centroids, dim, seed).Assign(xs.data(), ns, 1, labels.data(), dist.data(), num_threads);
    } else {
      AssignNearest(result.centroids.data(), k, xs.data(), ns, dim, labels.data(), dist.data(), num_threads);
    }
    result.inertia = std::accumulate(dist.begin(), dist.end(), 0.0);
    if (it == iterations) break;
    std::vector<int64_t> count = UpdateCentroids(xs, ns, dim, k, labels, result.centroids.data());
    RepairEmptyClusters(dim, k, &count, rng, result.centroids.data());
  }
  return result;
}

}  // namespace knn
}  // namespace pylocalize
