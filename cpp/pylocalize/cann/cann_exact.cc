// Method exact (the reference the approximate methods are measured against): every
// distance, computed with the blocked SIMD dot kernels over features grouped by image.
#include <algorithm>
#include <limits>
#include <numeric>

#include "pylocalize/cann/layouts.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace cann {
namespace {

constexpr int64_t kChunkFeatures = 4096;  // features per task: a tile that stays in L2
constexpr int64_t kQueryGroup = 32;
// Database blocks per DotTile: ~8k features, a few ms per poll for Ctrl-C.
constexpr int64_t kPieceBlocks = 2 * kChunkFeatures / knn::kBlock;

// Chunks of whole images of about kChunkFeatures features: images [chunk[c], chunk[c+1]).
// Each image's score then has a single writer.
std::vector<int64_t> ImageChunks(const std::vector<int64_t>& offsets) {
  const int64_t num_images = static_cast<int64_t>(offsets.size()) - 1;
  std::vector<int64_t> chunk{0};
  for (int64_t i = 0; i < num_images; ++i) {
    if (offsets[static_cast<size_t>(i + 1)] - offsets[static_cast<size_t>(chunk.back())] >= kChunkFeatures) {
      chunk.push_back(i + 1);
    }
  }
  if (chunk.back() != num_images) chunk.push_back(num_images);
  return chunk;
}

// The (query feature, image) minima of one chunk, for a group of query features.
struct ChunkMinima {
  int64_t i0, i1;           // the chunk's images
  std::vector<float> best;  // ng x (i1 - i0): min over the image's features of ||x||^2 - 2 q.x
};

// Folds one piece of the chunk into the minima: tile holds q.x for the group's features
// (rows of ld) against slots from row0, of which [p0, p1) belong to the chunk. `first` is
// the first image not wholly before the piece.
void FoldPiece(const ExactLayout& L, const float* tile, int64_t ld, int64_t ng, int64_t row0, int64_t p0, int64_t p1,
               int64_t first, ChunkMinima* m) {
  const int64_t ni = m->i1 - m->i0;
  for (int64_t j = 0; j < ng; ++j) {
    const float* row = tile + j * ld;
    float* bj = m->best.data() + j * ni;
    for (int64_t i = first; i < m->i1 && L.offsets[static_cast<size_t>(i)] < p1; ++i) {
      const int64_t lo = std::max(L.offsets[static_cast<size_t>(i)], p0);
      const int64_t hi = std::min(L.offsets[static_cast<size_t>(i + 1)], p1);
      float best = bj[i - m->i0];
      for (int64_t f = lo; f < hi; ++f)
        best = std::min(best, L.rows.norms[static_cast<size_t>(f)] - 2.0f * row[f - row0]);
      bj[i - m->i0] = best;
    }
  }
}

// Scores images [i0, i1) for every query feature into `total`.
void ScoreChunk(const ExactLayout& L, int64_t dim, const float* queries, int64_t nq, const std::vector<float>& qnorm,
                int64_t i0, int64_t i1, ScoreAccumulator* total) {
  const int64_t f0 = L.offsets[static_cast<size_t>(i0)], f1 = L.offsets[static_cast<size_t>(i1)];
  const int64_t b0 = f0 / knn::kBlock, b1 = (f1 + knn::kBlock - 1) / knn::kBlock;
  // A chunk may end with one huge image: its blocks are scanned in pieces of at most
  // kPieceBlocks (one tile each, a poll for Ctrl-C between them), and each (query
  // feature, image) minimum is kept across pieces, so the time between polls and the
  // tile size stay bounded whatever the image size.
  const int64_t ld = std::min(b1 - b0, kPieceBlocks) * knn::kBlock;
  ChunkMinima m{i0, i1, std::vector<float>(static_cast<size_t>(kQueryGroup * (i1 - i0)))};
  std::vector<float> tile(static_cast<size_t>(kQueryGroup * ld));
  for (int64_t g = 0; g < nq; g += kQueryGroup) {
    const int64_t ng = std::min(kQueryGroup, nq - g);
    std::fill(m.best.begin(), m.best.end(), std::numeric_limits<float>::infinity());
    int64_t first = i0;
    for (int64_t pb = b0; pb < b1; pb += kPieceBlocks) {
      InterruptPoint();
      const int64_t pe = std::min(b1, pb + kPieceBlocks);
      knn::DotTile(queries + g * dim, ng, dim, L.rows.block(pb), L.rows.element, pe - pb, tile.data(), ld);
      const int64_t p1 = std::min(pe * knn::kBlock, f1);
      FoldPiece(L, tile.data(), ld, ng, pb * knn::kBlock, std::max(pb * knn::kBlock, f0), p1, first, &m);
      while (first < i1 && L.offsets[static_cast<size_t>(first + 1)] <= p1) ++first;
    }
    for (int64_t j = 0; j < ng; ++j) {
      const float qn = qnorm[static_cast<size_t>(g + j)];
      const float* bj = m.best.data() + j * (i1 - i0);
      for (int64_t i = i0; i < i1; ++i) total->Add(i, static_cast<double>(bj[i - i0]) + qn);
    }
  }
}

}  // namespace

ExactLayout BuildExactLayout(const uint8_t* rows, knn::Element element, int64_t dim,
                             const std::vector<int64_t>& image_ids) {
  ExactLayout L;
  const int64_t n = static_cast<int64_t>(image_ids.size());
  L.n = n;
  const int64_t nblocks = (n + knn::kBlock - 1) / knn::kBlock;
  std::vector<int64_t> order(static_cast<size_t>(nblocks * knn::kBlock), -1);  // slot -> row, -1 pads
  std::iota(order.begin(), order.begin() + n, 0);
  std::stable_sort(order.begin(), order.begin() + n, [&](int64_t a, int64_t b) { return image_ids[a] < image_ids[b]; });
  L.rows = BuildBlockedRows(rows, element, dim, order);
  for (int64_t pos = 0; pos < n; ++pos) {
    const int64_t id = image_ids[static_cast<size_t>(order[static_cast<size_t>(pos)])];
    if (L.images.empty() || L.images.back() != id) {
      L.images.push_back(id);
      L.offsets.push_back(pos);
    }
  }
  L.offsets.push_back(n);
  return L;
}

void SearchExact(const ExactLayout& L, int64_t dim, const float* queries, int64_t nq, int64_t k,
                 const CannKernel& kernel, float* scores, int64_t* image_ids, int num_threads) {
  const int64_t num_images = static_cast<int64_t>(L.images.size());
  ScoreAccumulator total(num_images, kernel);  // written by chunk: one writer per image
  if (nq > 0 && num_images > 0) {
    const std::vector<float> qnorm = knn::SquaredNorms(queries, nq, dim);
    const std::vector<int64_t> chunk = ImageChunks(L.offsets);
    ParallelFor(static_cast<int64_t>(chunk.size()) - 1, num_threads, [&](int64_t c, int) {
      ScoreChunk(L, dim, queries, nq, qnorm, chunk[static_cast<size_t>(c)], chunk[static_cast<size_t>(c + 1)], &total);
    });
  }
  TopImages(total.totals(), L.images, nq, k, scores, image_ids);
}

}  // namespace cann
}  // namespace pylocalize
