// The search layouts of CannIndex (cann_index.h), one per method, shared by cann_index.cc
// (which caches them and counts their memory) and the method's own file, which builds
// and searches it (cann_exact.cc, cann_ivf.cc, cann_grid.cc), as faiss keeps one file per
// index type. A layout is built on one snapshot of the features and never changed after:
// a search holds a shared_ptr to the one it started on. The ivf layout is also what a
// trained index saves, and a loaded one borrows its large arrays from the mapped file.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "pylocalize/cann/blocked_rows.h"
#include "pylocalize/cann/grid.h"
#include "pylocalize/cann/scoring.h"
#include "pylocalize/knn/coarse_quantizer.h"

namespace pylocalize {
namespace cann {

// Method exact: features grouped by image (stable), in knn blocks.
struct ExactLayout {
  int64_t n = 0;
  BlockedRows rows;
  std::vector<int64_t> images;   // distinct image ids, ascending
  std::vector<int64_t> offsets;  // features of images[i]: slots [offsets[i], offsets[i+1])
  int64_t HeapBytes() const {
    return rows.HeapBytes() + static_cast<int64_t>((images.size() + offsets.size()) * sizeof(int64_t));
  }
};

// Method ivf: features ordered by (list, image), each list padded to whole knn blocks.
// The per-slot and per-feature arrays are borrowed from the file of a memory-mapped index;
// the small per-list and per-image ones are always owned.
struct IvfLayout {
  knn::CoarseQuantizer quantizer;  // the lists' centroids, and how rows find their lists
  BlockedRows rows;
  std::vector<int64_t> list_block;   // nlist + 1: first block of each list
  ConstArray<int32_t> slot_image;    // per slot: index into `images`, -1 for padding
  std::vector<int64_t> images;       // distinct image ids, ascending
  ConstArray<int64_t> feature_slot;  // per feature in insertion order: its slot
  int64_t HeapBytes() const {
    return rows.HeapBytes() + slot_image.heap_bytes() + feature_slot.heap_bytes() + quantizer.HeapBytes() +
           static_cast<int64_t>((images.size() + list_block.size()) * sizeof(int64_t));
  }
  int64_t MappedBytes() const {
    return rows.MappedBytes() + slot_image.borrowed_bytes() + feature_slot.borrowed_bytes();
  }
};

// Method grid: random grids over the features, each feature's image index and float row.
struct GridLayout {
  RandomGrids grids;
  std::vector<float> rows;             // n x dim, insertion order
  std::vector<int32_t> feature_image;  // index into `images`
  std::vector<int64_t> images;         // distinct image ids, ascending
  int64_t HeapBytes() const {
    return grids.MemoryBytes() +
           static_cast<int64_t>(rows.size() * sizeof(float) + feature_image.size() * sizeof(int32_t));
  }
};

// The distinct image ids, ascending: the index of an image in every layout's `images`.
inline std::vector<int64_t> DistinctImages(std::vector<int64_t> image_ids) {
  std::sort(image_ids.begin(), image_ids.end());
  image_ids.erase(std::unique(image_ids.begin(), image_ids.end()), image_ids.end());
  return image_ids;
}

// rows: n x dim elements of `element`, insertion order; image_ids: n. The searches write
// the best k images of one query image (queries: nq x dim float32, checked by the caller)
// as cann::TopImages does.
ExactLayout BuildExactLayout(const uint8_t* rows, knn::Element element, int64_t dim,
                             const std::vector<int64_t>& image_ids);
void SearchExact(const ExactLayout& layout, int64_t dim, const float* queries, int64_t nq, int64_t k,
                 const CannKernel& kernel, float* scores, int64_t* image_ids, int num_threads);

IvfLayout BuildIvfLayout(const uint8_t* rows, knn::Element element, int64_t dim, const std::vector<int64_t>& image_ids,
                         const std::vector<float>& centroids, int num_threads);
// Refuses (FormatError) an ivf layout read from a file whose arrays disagree in size or
// index outside each other, before a search trusts them; n features, dim, nlist centroids.
void ValidateIvfLayout(const IvfLayout& layout, int64_t n, int64_t dim);
// The features in insertion order, recovered from the layout: rows (n x dim elements) and
// image ids. Refuses (FormatError) a feature_slot entry outside the layout's features.
void IvfInsertionOrder(const IvfLayout& layout, std::vector<uint8_t>* rows, std::vector<int64_t>* image_ids);
void SearchIvf(const IvfLayout& layout, int64_t dim, const float* queries, int64_t nq, int64_t k,
               const CannKernel& kernel, int64_t nprobe, float* scores, int64_t* image_ids, int num_threads);

GridLayout BuildGridLayout(std::vector<float> float_rows, int64_t dim, const std::vector<int64_t>& image_ids,
                           double r_max, const GridParams& params, int num_threads);
void SearchGrid(const GridLayout& layout, int64_t dim, const float* queries, int64_t nq, int64_t k,
                const CannKernel& kernel, float* scores, int64_t* image_ids, int num_threads);

}  // namespace cann
}  // namespace pylocalize
