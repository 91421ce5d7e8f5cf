#include "pylocalize/cann/blocked_rows.h"

#include <cstring>
#include <utility>

#include "pylocalize/util/check.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace cann {

const uint8_t* BlockedRows::block(int64_t b) const {
  return blocks.data() + static_cast<size_t>(b * dim * knn::kBlock) * element_size();
}

void BlockedRows::GetRow(int64_t slot, uint8_t* out) const {
  const size_t es = element_size();
  const uint8_t* first = block(slot / knn::kBlock) + static_cast<size_t>(slot % knn::kBlock) * es;
  for (int64_t d = 0; d < dim; ++d) {
    std::memcpy(out + static_cast<size_t>(d) * es, first + static_cast<size_t>(d * knn::kBlock) * es, es);
  }
}

BlockedRows BuildBlockedRows(const uint8_t* rows, knn::Element element, int64_t dim,
                             const std::vector<int64_t>& source) {
  PYL_CHECK(source.size() % knn::kBlock == 0, "blocked rows need whole blocks of ", knn::kBlock, " slots");
  BlockedRows out;
  out.element = element;
  out.dim = dim;
  const size_t es = out.element_size();
  const int64_t num_slots = static_cast<int64_t>(source.size());
  std::vector<uint8_t> blocks(static_cast<size_t>(num_slots * dim) * es, 0);
  std::vector<float> norms(static_cast<size_t>(num_slots), 0.0f);
  for (int64_t slot = 0; slot < num_slots; ++slot) {
    if ((slot & 65535) == 65535) InterruptPoint();
    const int64_t src = source[static_cast<size_t>(slot)];
    if (src < 0) continue;
    const uint8_t* row = rows + static_cast<size_t>(src * dim) * es;
    const int64_t b = slot / knn::kBlock, lane = slot % knn::kBlock;
    double norm = 0.0;
    for (int64_t d = 0; d < dim; ++d) {
      std::memcpy(blocks.data() + static_cast<size_t>((b * dim + d) * knn::kBlock + lane) * es, row + d * es, es);
      const double v =
          es == 1 ? static_cast<double>(row[d]) : static_cast<double>(reinterpret_cast<const float*>(row)[d]);
      norm += v * v;
    }
    norms[static_cast<size_t>(slot)] = static_cast<float>(norm);
  }
  out.blocks = ConstArray<uint8_t>(std::move(blocks));
  out.norms = ConstArray<float>(std::move(norms));
  return out;
}

}  // namespace cann
}  // namespace pylocalize
