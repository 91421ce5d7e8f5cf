// Database features in the blocked layout the knn kernels scan (knn::DotTile), with their
// squared norms. The exact and ivf methods differ only in which feature goes to which slot
// (grouped by image; by list, then image); the copy into blocks is written once, here.
#pragma once

#include <cstdint>
#include <vector>

#include "pylocalize/knn/kernels.h"
#include "pylocalize/util/const_array.h"

namespace pylocalize {
namespace cann {

struct BlockedRows {
  knn::Element element = knn::Element::kFloat32;
  int64_t dim = 0;
  // Owned, or borrowed from a memory-mapped index file (CannIndex::Load).
  ConstArray<uint8_t> blocks;  // num_blocks x dim x knn::kBlock elements, a block dimension-major
  ConstArray<float> norms;     // ||x||^2 per slot, 0 in padding slots

  int64_t num_blocks() const { return static_cast<int64_t>(norms.size()) / knn::kBlock; }
  // The first element of block b, as knn::DotTile takes it.
  const uint8_t* block(int64_t b) const;
  // The row in slot `slot` (dim elements, element_size() bytes each) copied to `out`.
  void GetRow(int64_t slot, uint8_t* out) const;
  size_t element_size() const { return element == knn::Element::kUInt8 ? 1 : 4; }
  int64_t HeapBytes() const { return blocks.heap_bytes() + norms.heap_bytes(); }
  int64_t MappedBytes() const { return blocks.borrowed_bytes() + norms.borrowed_bytes(); }
};

// Slot s of the result holds row source[s] of `rows` (n x dim elements of `element`, in
// insertion order); a slot with source[s] < 0 is padding (zeros). source.size() must be a
// multiple of knn::kBlock. Polls for Ctrl-C: millions of features take a while.
BlockedRows BuildBlockedRows(const uint8_t* rows, knn::Element element, int64_t dim,
                             const std::vector<int64_t>& source);

}  // namespace cann
}  // namespace pylocalize
