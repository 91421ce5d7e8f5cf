// k-means (Lloyd) and nearest-centroid assignment on the blocked dot kernels.
//
// Assignment computes ||c||^2 - 2 <x, c> against centroids stored in knn blocks, so it runs
// at the speed of the SIMD dot kernel. Training subsamples to at most
// max_points_per_centroid * k points, seeds with k-means++ where that costs no more than a
// few seconds (else k distinct random points, as FAISS), and re-seeds an empty cluster by
// splitting the largest one. Everything follows from the seed.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace pylocalize {
namespace knn {

// Nearest centroid of each of n rows: labels (n) and squared L2 distances (n, optional).
void AssignNearest(const float* centroids, int64_t k, const float* x, int64_t n, int64_t dim, int64_t* labels,
                   float* distances, int num_threads);

// The `m` nearest centroids of each row, best first: labels (n x m), distances (n x m).
void AssignNearestM(const float* centroids, int64_t k, const float* x, int64_t n, int64_t dim, int64_t m,
                    int64_t* labels, float* distances, int num_threads);
// The same for uint8 rows and centroids (descriptors against descriptors): the same labels
// and distances as their float copies give, computed on a quarter of the bytes.
void AssignNearestM(const uint8_t* centroids, int64_t k, const uint8_t* x, int64_t n, int64_t dim, int64_t m,
                    int64_t* labels, float* distances, int num_threads);

struct KMeansResult {
  std::vector<float> centroids;  // k x dim
  double inertia = 0.0;          // sum of squared distances of the training points
};

// plus_plus = false seeds with k distinct random points whatever the cost of k-means++ (for
// grouping centroids, where seeding would cost more than the grouping is worth).
KMeansResult KMeans(const float* x, int64_t n, int64_t dim, int64_t k, int iterations, uint64_t seed,
                    int64_t max_points_per_centroid, int num_threads, bool plus_plus = true);

// Writes row i (dim floats) to out: how KMeans reads rows stored in another element type,
// so that only the training subsample is ever converted to float.
using RowReader = std::function<void(int64_t i, float* out)>;

// KMeans over n rows read through `row`; the same result as KMeans over those rows as floats.
KMeansResult KMeans(const RowReader& row, int64_t n, int64_t dim, int64_t k, int iterations, uint64_t seed,
                    int64_t max_points_per_centroid, int num_threads, bool plus_plus = true);

}  // namespace knn
}  // namespace pylocalize
