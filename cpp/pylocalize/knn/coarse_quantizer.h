// The nearest of k centroids for many rows: how an inverted file assigns its features to
// lists and which lists a query feature probes.
//
// Flat (every centroid, exact) below kTwoLevelMinCentroids. Above, two-level: the centroids
// are clustered into about sqrt(k) groups; a row is compared with the group centres, then
// with the members of its kGroupProbe nearest groups only, about sqrt(k) (1 + kGroupProbe)
// distances instead of k. A city-scale map has ~10^4 lists for ~10^7 features, where the
// flat assignment alone would take longer than the whole build target and a third of a
// query's time budget; the two-level one misses a row's nearest centroid only when it lies
// in a group whose centre is not among the row's nearest kGroupProbe (measured in
// benchmarks/bench_coarse_quantizer.py). Both sides of an inverted file use the same
// quantizer, so features and the query features that should meet them land alike.
#pragma once

#include <cstdint>
#include <vector>

#include "pylocalize/knn/kernels.h"

namespace pylocalize {
namespace knn {

constexpr int64_t kTwoLevelMinCentroids = 1024;
constexpr int64_t kGroupProbe = 8;

// Centroids in knn blocks (kernels.h) with their squared norms; padded lanes have norm
// +inf, so they never win. float32, or uint8 when the centroids are descriptors themselves
// (matching a query's features against a map's: a quarter of the bytes, and the integer
// kernel when the rows are small integers too).
struct BlockedCentroids {
  Element element = Element::kFloat32;
  std::vector<uint8_t> blocks;  // nblocks x dim x kBlock elements
  std::vector<float> norms;
  int64_t nblocks = 0;
  int64_t k = 0;  // the centroids; lanes from k on are padding

  size_t element_size() const { return element == Element::kUInt8 ? 1 : sizeof(float); }
  // The first element of block b, as DotTile takes it.
  const void* block(int64_t b, int64_t dim) const {
    return blocks.data() + static_cast<size_t>(b * dim * kBlock) * element_size();
  }
};

BlockedCentroids Block(const float* centroids, int64_t k, int64_t dim);
BlockedCentroids Block(const uint8_t* centroids, int64_t k, int64_t dim);

// The m nearest of the blocked centroids to each of n rows, best first (ties to the smaller
// index): labels (n x m, -1 past the centroids) and squared L2 distances (n x m, optional).
void AssignBlocked(const BlockedCentroids& b, const float* x, int64_t n, int64_t dim, int64_t m, int64_t* labels,
                   float* distances, int num_threads);

class CoarseQuantizer {
 public:
  CoarseQuantizer() = default;
  // seed: the grouping's k-means (deterministic for a given seed and centroids);
  // group_probe: the groups whose members a row is compared with (two-level only)
  CoarseQuantizer(std::vector<float> centroids, int64_t dim, uint64_t seed = 0, int64_t group_probe = kGroupProbe);

  int64_t size() const { return dim_ > 0 ? static_cast<int64_t>(centroids_.size()) / dim_ : 0; }
  int64_t dim() const { return dim_; }
  const std::vector<float>& centroids() const { return centroids_; }
  bool two_level() const { return !group_start_.empty(); }

  // The m (1 <= m <= size) nearest centroids of each of n rows, best first: labels (n x m)
  // and squared L2 distances (n x m, optional). Exact when flat; see above when two-level.
  void Assign(const float* x, int64_t n, int64_t m, int64_t* labels, float* distances, int num_threads) const;

  int64_t HeapBytes() const;

 private:
  void AssignTwoLevel(const float* x, int64_t n, int64_t m, int64_t* labels, float* distances, int num_threads) const;
  void SearchGroups(const float* x, int64_t n, int64_t gp, const std::vector<int64_t>& groups, int64_t m,
                    std::vector<int64_t>* cand_label, std::vector<float>* cand_d2, int num_threads) const;

  std::vector<float> centroids_;  // k x dim
  int64_t dim_ = 0;
  int64_t group_probe_ = kGroupProbe;
  BlockedCentroids flat_;  // every centroid: the flat method, and rows the groups cannot serve
  // Two-level only: the group centres, and each group's members in blocks of their own
  BlockedCentroids centres_;
  std::vector<int64_t> group_start_;  // per group + 1: its first block in `members_`
  BlockedCentroids members_;
  std::vector<int64_t> member_id_;  // per member slot: its centroid, -1 for padding
};

}  // namespace knn
}  // namespace pylocalize
