// Product quantization, after Jégou, Douze, Schmid, "Product quantization for nearest
// neighbor search" (TPAMI 2011).
//
// A vector of dim floats is cut into m sub-vectors of dsub = dim / m floats; each is
// replaced by the index of its nearest of 256 centroids, learned by k-means on that
// sub-space, so a vector costs m bytes (32 bytes for SIFT with m = 32, against 128 as uint8).
// A query is compared with codes without decoding them (asymmetric distance computation,
// ADC): a table of the query's squared distances to every sub-space centroid (m x 256)
// turns the distance to a code into m table lookups. The codebook products go through the
// blocked SIMD dot kernels (knn/kernels.h), 16 centroids per block.
#pragma once

#include <cstdint>
#include <vector>

#include "pylocalize/knn/kernels.h"

namespace pylocalize {
namespace pq {

constexpr int64_t kCentroids = 256;  // per sub-space: one byte per sub-vector

struct TrainParams {
  int iterations = 16;                   // Lloyd iterations per sub-space
  uint64_t seed = 0;                     // sub-space j uses seed + j
  int64_t max_points_per_centroid = 64;  // k-means subsample: at most 16,384 rows (its seeding is serial)
  void Validate() const;
};

class ProductQuantizer {
 public:
  // m sub-quantizers over dim floats; dim must be a multiple of m.
  ProductQuantizer(int64_t dim, int64_t m);

  int64_t dim() const { return dim_; }
  int64_t m() const { return m_; }
  int64_t dsub() const { return dsub_; }
  bool is_trained() const { return !codebooks_.empty(); }
  // m x 256 x dsub floats: centroid c of sub-space j at (j * 256 + c) * dsub.
  const std::vector<float>& codebooks() const { return codebooks_; }
  // ||centroid||^2, m x 256.
  const std::vector<float>& centroid_norms() const { return norms_; }

  // Learns the codebooks from n float rows (n >= 256, finite): k-means per sub-space.
  void Train(const float* x, int64_t n, const TrainParams& params, int num_threads);
  // Sets saved codebooks (m x 256 x dsub floats, finite).
  void SetCodebooks(const float* codebooks);

  // codes (n x m): each sub-vector's nearest centroid (ties to the smaller index).
  void Encode(const float* x, int64_t n, uint8_t* codes, int num_threads) const;
  // Encode for n rows of `element` (uint8 or float32, n x dim), widened to float a chunk
  // at a time: never a float copy of every row (512 bytes per SIFT row).
  void EncodeRows(const void* rows, knn::Element element, int64_t n, uint8_t* codes, int num_threads) const;
  // x (n x dim): the centroids the codes name.
  void Decode(const uint8_t* codes, int64_t n, float* x) const;

  // Per row of x, m x 256 inner products <x_j, centroid_jc> (tables: n x m x 256).
  void InnerProductTables(const float* x, int64_t n, float* tables) const;
  // Per row of x, m x 256 squared distances ||x_j - centroid_jc||^2: ADC tables.
  void DistanceTables(const float* x, int64_t n, float* tables) const;

 private:
  void CheckTrained() const;
  // The centroids of sub-space j in knn blocks (16 blocks of dsub x 16 floats).
  const float* Blocks(int64_t j) const { return blocked_.data() + j * kCentroids * dsub_; }
  void Prepare();  // norms_ and blocked_ from codebooks_

  int64_t dim_, m_, dsub_;
  std::vector<float> codebooks_;
  std::vector<float> norms_;
  std::vector<float> blocked_;
};

// sum_j table[j * 256 + code[j]]: the ADC distance of a code (with a DistanceTables table).
inline float AdcLookup(const float* table, const uint8_t* code, int64_t m) {
  // Four partial sums: independent additions, so the lookups pipeline.
  float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
  int64_t j = 0;
  for (; j + 4 <= m; j += 4) {
    s0 += table[(j + 0) * kCentroids + code[j + 0]];
    s1 += table[(j + 1) * kCentroids + code[j + 1]];
    s2 += table[(j + 2) * kCentroids + code[j + 2]];
    s3 += table[(j + 3) * kCentroids + code[j + 3]];
  }
  for (; j < m; ++j) s0 += table[j * kCentroids + code[j]];
  return (s0 + s1) + (s2 + s3);
}

// Widens rows [r0, r0 + count) of n x dim `element` rows (uint8 or float32) into out
// (count x dim floats): how uint8 descriptors reach the quantizers a chunk at a time.
void RowsToFloat(const void* rows, knn::Element element, int64_t dim, int64_t r0, int64_t count, float* out);

}  // namespace pq
}  // namespace pylocalize
