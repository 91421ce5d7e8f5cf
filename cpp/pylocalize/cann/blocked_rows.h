// Database features in the blocked layout the knn kernels scan (knn::DotTile), with their
// squared norms. The exact and ivf methods differ only in which feature goes to which slot
// (grouped by image; by list, then image); the copy into blocks is written once, here.
#pragma once

#include <cstdint>
#include <vector>

#include "pylocalize/knn/kernels.h"

namespace pylocalize {
namespace cann {

struct BlockedRows {
  knn::Element element = knn::Element::kFloat32;
  int64_t dim = 0;
  std::vector<uint8_t> blocks;  // num_blocks x dim x knn::kBlock elements, a block dimension-major
  std::vector<float> norms;     // ||x||^2 per slot, 0 in padding slots

  int64_t num_blocks() const { return static_cast<int64_t>(norms.size()) / knn::kBlock; }
  // The first element of block b, as knn::DotTile takes it.
  const uint8_t* block(int64_t b) const;
  int64_t MemoryBytes() const;
};

// Slot s of the result holds row source[s] of `rows` (n x dim elements of `element`, in
// insertion order); a slot with source[s] < 0 is padding (zeros). source.size() must be a
// multiple of knn::kBlock. Polls for Ctrl-C: millions of features take a while.
BlockedRows BuildBlockedRows(const uint8_t* rows, knn::Element element, int64_t dim,
                             const std::vector<int64_t>& source);

}  // namespace cann
}  // namespace pylocalize
