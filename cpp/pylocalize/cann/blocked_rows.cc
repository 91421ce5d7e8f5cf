#include "pylocalize/cann/blocked_rows.h"

#include <cstring>

#include "pylocalize/util/check.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace cann {
namespace {

size_t ElementBytes(knn::Element element) { return element == knn::Element::kUInt8 ? 1 : 4; }

}  // namespace

const uint8_t* BlockedRows::block(int64_t b) const {
  return blocks.data() + static_cast<size_t>(b * dim * knn::kBlock) * ElementBytes(element);
}

int64_t BlockedRows::MemoryBytes() const { return static_cast<int64_t>(blocks.size() + norms.size() * sizeof(float)); }

BlockedRows BuildBlockedRows(const uint8_t* rows, knn::Element element, int64_t dim,
                             const std::vector<int64_t>& source) {
  PYL_CHECK(source.size() % knn::kBlock == 0, "blocked rows need whole blocks of ", knn::kBlock, " slots");
  BlockedRows out;
  out.element = element;
  out.dim = dim;
  const size_t es = ElementBytes(element);
  const int64_t num_slots = static_cast<int64_t>(source.size());
  out.blocks.assign(static_cast<size_t>(num_slots * dim) * es, 0);
  out.norms.assign(static_cast<size_t>(num_slots), 0.0f);
  for (int64_t slot = 0; slot < num_slots; ++slot) {
    if ((slot & 65535) == 65535) InterruptPoint();
    const int64_t src = source[static_cast<size_t>(slot)];
    if (src < 0) continue;
    const uint8_t* row = rows + static_cast<size_t>(src * dim) * es;
    const int64_t b = slot / knn::kBlock, lane = slot % knn::kBlock;
    double norm = 0.0;
    for (int64_t d = 0; d < dim; ++d) {
      std::memcpy(out.blocks.data() + static_cast<size_t>((b * dim + d) * knn::kBlock + lane) * es, row + d * es, es);
      const double v =
          es == 1 ? static_cast<double>(row[d]) : static_cast<double>(reinterpret_cast<const float*>(row)[d]);
      norm += v * v;
    }
    out.norms[static_cast<size_t>(slot)] = static_cast<float>(norm);
  }
  return out;
}

}  // namespace cann
}  // namespace pylocalize
