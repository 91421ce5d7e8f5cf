#include "pylocalize/pq/product_quantizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "pylocalize/knn/kmeans.h"
#include "pylocalize/util/check.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace pq {
namespace {

constexpr int64_t kRowChunk = 256;  // rows per encoding task: a 256 x 256 tile stays in L2

// Sub-vector j of `count` rows of x (rows of dim floats) into out (count x dsub).
void GatherSub(const float* x, int64_t count, int64_t dim, int64_t j, int64_t dsub, float* out) {
  for (int64_t r = 0; r < count; ++r) {
    std::memcpy(out + r * dsub, x + r * dim + j * dsub, static_cast<size_t>(dsub) * sizeof(float));
  }
}

}  // namespace

void TrainParams::Validate() const {
  PYL_CHECK(iterations >= 0, "PQ training iterations must be >= 0, got ", iterations);
  PYL_CHECK(max_points_per_centroid >= 1, "PQ max_points_per_centroid must be >= 1, got ", max_points_per_centroid);
}

ProductQuantizer::ProductQuantizer(int64_t dim, int64_t m) : dim_(dim), m_(m), dsub_(m > 0 ? dim / m : 0) {
  PYL_CHECK(dim >= 1, "dim must be >= 1, got ", dim);
  PYL_CHECK(m >= 1 && m <= dim && dim % m == 0, "m (bytes per code) must divide dim = ", dim, ", got ", m,
            "; for 128-d descriptors use 8, 16, 32 or 64");
}

void ProductQuantizer::Train(const float* x, int64_t n, const TrainParams& params, int num_threads) {
  params.Validate();
  PYL_CHECK(n >= kCentroids, "training a product quantizer needs at least ", kCentroids, " rows, got ", n,
            "; pass a larger sample");
  for (int64_t i = 0; i < n * dim_; ++i) {
    PYL_CHECK(std::isfinite(x[i]), "PQ training rows contain NaN or Inf (row ", i / dim_, ")");
  }
  std::vector<float> books(static_cast<size_t>(m_ * kCentroids * dsub_));
  const int64_t dim = dim_, dsub = dsub_;
  // One sub-space per task, each k-means on one thread: the same codebooks whatever the
  // thread count, and no nested parallel loop over 256 small centroids.
  ParallelFor(m_, num_threads, [&](int64_t j, int) {
    const knn::RowReader row = [x, dim, dsub, j](int64_t i, float* out) {
      std::memcpy(out, x + i * dim + j * dsub, static_cast<size_t>(dsub) * sizeof(float));
    };
    knn::KMeansResult km =
        knn::KMeans(row, n, dsub, kCentroids, params.iterations, params.seed + static_cast<uint64_t>(j),
                    params.max_points_per_centroid, /*num_threads=*/1);
    std::copy(km.centroids.begin(), km.centroids.end(), books.begin() + j * kCentroids * dsub);
  });
  codebooks_ = std::move(books);
  Prepare();
}

void ProductQuantizer::SetCodebooks(const float* codebooks) {
  const int64_t size = m_ * kCentroids * dsub_;
  for (int64_t i = 0; i < size; ++i) PYL_CHECK(std::isfinite(codebooks[i]), "PQ codebooks contain NaN or Inf");
  codebooks_.assign(codebooks, codebooks + size);
  Prepare();
}

void ProductQuantizer::Prepare() {
  norms_.assign(static_cast<size_t>(m_ * kCentroids), 0.0f);
  blocked_.assign(codebooks_.size(), 0.0f);
  for (int64_t j = 0; j < m_; ++j) {
    for (int64_t c = 0; c < kCentroids; ++c) {
      const float* v = codebooks_.data() + (j * kCentroids + c) * dsub_;
      double norm = 0.0;
      for (int64_t d = 0; d < dsub_; ++d) {
        norm += static_cast<double>(v[d]) * v[d];
        // knn block layout: element d of centroid c at ((c / 16) * dsub + d) * 16 + c % 16
        blocked_[static_cast<size_t>(j * kCentroids * dsub_ + ((c / knn::kBlock) * dsub_ + d) * knn::kBlock +
                                     c % knn::kBlock)] = v[d];
      }
      norms_[static_cast<size_t>(j * kCentroids + c)] = static_cast<float>(norm);
    }
  }
}

void ProductQuantizer::CheckTrained() const { PYL_CHECK(is_trained(), "the product quantizer needs train() first"); }

void ProductQuantizer::Encode(const float* x, int64_t n, uint8_t* codes, int num_threads) const {
  CheckTrained();
  const int64_t chunks = (n + kRowChunk - 1) / kRowChunk;
  ParallelFor(chunks, num_threads, [&](int64_t t, int) {
    InterruptPoint();
    const int64_t r0 = t * kRowChunk, count = std::min(kRowChunk, n - r0);
    std::vector<float> sub(static_cast<size_t>(count * dsub_)), tile(static_cast<size_t>(count * kCentroids));
    for (int64_t j = 0; j < m_; ++j) {
      GatherSub(x + r0 * dim_, count, dim_, j, dsub_, sub.data());
      knn::DotTile(sub.data(), count, dsub_, Blocks(j), knn::Element::kFloat32, kCentroids / knn::kBlock, tile.data(),
                   kCentroids);
      const float* norm = norms_.data() + j * kCentroids;
      for (int64_t r = 0; r < count; ++r) {
        // ||x - c||^2 - ||x||^2 = ||c||^2 - 2 <x, c>: the same order of centroids
        const float* dot = tile.data() + r * kCentroids;
        int64_t best = 0;
        float best_d = norm[0] - 2.0f * dot[0];
        for (int64_t c = 1; c < kCentroids; ++c) {
          const float d = norm[c] - 2.0f * dot[c];
          if (d < best_d) best_d = d, best = c;
        }
        codes[(r0 + r) * m_ + j] = static_cast<uint8_t>(best);
      }
    }
  });
}

void ProductQuantizer::EncodeRows(const void* rows, knn::Element element, int64_t n, uint8_t* codes,
                                  int num_threads) const {
  constexpr int64_t kChunk = int64_t{1} << 16;
  std::vector<float> chunk;
  for (int64_t r0 = 0; r0 < n; r0 += kChunk) {
    const int64_t count = std::min(kChunk, n - r0);
    chunk.resize(static_cast<size_t>(count * dim_));
    RowsToFloat(rows, element, dim_, r0, count, chunk.data());
    Encode(chunk.data(), count, codes + r0 * m_, num_threads);
  }
}

void ProductQuantizer::Decode(const uint8_t* codes, int64_t n, float* x) const {
  CheckTrained();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < m_; ++j) {
      const float* c = codebooks_.data() + (j * kCentroids + codes[i * m_ + j]) * dsub_;
      std::memcpy(x + i * dim_ + j * dsub_, c, static_cast<size_t>(dsub_) * sizeof(float));
    }
  }
}

void ProductQuantizer::InnerProductTables(const float* x, int64_t n, float* tables) const {
  CheckTrained();
  constexpr int64_t kRows = 64;
  std::vector<float> sub(static_cast<size_t>(kRows * dsub_)), tile(static_cast<size_t>(kRows * kCentroids));
  for (int64_t r0 = 0; r0 < n; r0 += kRows) {
    const int64_t count = std::min(kRows, n - r0);
    for (int64_t j = 0; j < m_; ++j) {
      GatherSub(x + r0 * dim_, count, dim_, j, dsub_, sub.data());
      knn::DotTile(sub.data(), count, dsub_, Blocks(j), knn::Element::kFloat32, kCentroids / knn::kBlock, tile.data(),
                   kCentroids);
      for (int64_t r = 0; r < count; ++r) {
        std::memcpy(tables + ((r0 + r) * m_ + j) * kCentroids, tile.data() + r * kCentroids,
                    static_cast<size_t>(kCentroids) * sizeof(float));
      }
    }
  }
}

void ProductQuantizer::DistanceTables(const float* x, int64_t n, float* tables) const {
  InnerProductTables(x, n, tables);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < m_; ++j) {
      double qn = 0.0;
      for (int64_t d = 0; d < dsub_; ++d)
        qn += static_cast<double>(x[i * dim_ + j * dsub_ + d]) * x[i * dim_ + j * dsub_ + d];
      float* t = tables + (i * m_ + j) * kCentroids;
      const float* norm = norms_.data() + j * kCentroids;
      for (int64_t c = 0; c < kCentroids; ++c) t[c] = std::max(0.0f, static_cast<float>(qn) + norm[c] - 2.0f * t[c]);
    }
  }
}

void RowsToFloat(const void* rows, knn::Element element, int64_t dim, int64_t r0, int64_t count, float* out) {
  if (element == knn::Element::kUInt8) {
    const uint8_t* src = static_cast<const uint8_t*>(rows) + r0 * dim;
    for (int64_t i = 0; i < count * dim; ++i) out[i] = static_cast<float>(src[i]);
  } else {
    std::memcpy(out, static_cast<const float*>(rows) + r0 * dim, static_cast<size_t>(count * dim) * sizeof(float));
  }
}

}  // namespace pq
}  // namespace pylocalize
