// Codes in the blocked layout of kernels.h, owned or borrowed from a memory-mapped file,
// and the scan drivers that run a kernel over them for k-NN and range search.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "pylocalize/hamming/kernels.h"

namespace pylocalize {
namespace hamming {

class CodeStore {
 public:
  explicit CodeStore(int64_t words_per_code) : words_(words_per_code) {}

  int64_t size() const { return n_; }
  int64_t words_per_code() const { return words_; }
  int64_t num_blocks() const { return (n_ + kBlock - 1) / kBlock; }
  const uint64_t* blocks() const { return data_; }
  int64_t num_words() const { return num_blocks() * words_ * kBlock; }

  // rows: n codes, words_per_code words each (padding bits zero).
  void Append(const uint64_t* rows, int64_t n);
  void GetRow(int64_t i, uint64_t* out) const;
  // Keeps the codes whose keep[i] != 0, in order.
  void Compact(const std::vector<uint8_t>& keep);
  void Clear();
  // Copies n codes already in the blocked layout (e.g. from a file).
  void AssignBlocks(const uint64_t* blocks, int64_t n);
  // Borrows blocks from a mapping that `owner` keeps alive; copied on the first change.
  void Borrow(const uint64_t* blocks, int64_t n, std::shared_ptr<const void> owner);
  bool borrowed() const { return owner_ != nullptr; }
  // A code with a bit set outside allowed[w] in some word w (words_per_code masks), or
  // -1 if there is none. Loaders use it to refuse codes whose padding bits are set: kernels
  // would count them into distances beyond the code length.
  int64_t FirstCodeOutside(const std::vector<uint64_t>& allowed) const;

 private:
  void MakeOwned();
  int64_t words_;
  int64_t n_ = 0;
  std::vector<uint64_t> owned_;
  const uint64_t* data_ = nullptr;
  std::shared_ptr<const void> owner_;
};

// The ids of stored codes, owned or borrowed from a mapped file (copied on the first
// change), and what scans need to know of them.
class IdList {
 public:
  const int64_t* data() const { return data_; }
  int64_t size() const { return n_; }
  // Ids strictly increase with position: then strict thresholds give ties to the smaller id.
  bool ascending() const { return ascending_; }
  // Default id of the next code: one past the largest id ever added.
  int64_t next_id() const { return next_id_; }

  // Appends n ids, or next_id(), next_id() + 1, ... when ids is nullptr. Throws
  // std::invalid_argument (changing nothing) for a negative id.
  void Append(const int64_t* ids, int64_t n);
  // keep[i] = 0 where ids_[i] is one of `drop` (n ids, repeats allowed), 1 elsewhere; the
  // count of zeros goes to *removed. What remove_ids then applies to every per-code array.
  std::vector<uint8_t> KeepMask(const int64_t* drop, int64_t n, int64_t* removed) const;
  // Keeps the ids whose keep[i] != 0, in order.
  void Compact(const std::vector<uint8_t>& keep);
  void Clear();
  // Takes ids read from a file: borrowed while `owner` (if not null) keeps them alive,
  // copied otherwise. `ascending` is derived here, never trusted from the file.
  void Assign(const int64_t* ids, int64_t n, int64_t next_id, std::shared_ptr<const void> owner);

 private:
  void MakeOwned();
  std::vector<int64_t> owned_;
  const int64_t* data_ = nullptr;
  int64_t n_ = 0;
  bool ascending_ = true;
  int64_t next_id_ = 0;
  std::shared_ptr<const void> owner_;
};

// Calls a kernel on one tile; the drivers below cut the work into tiles.
using TileKernel = void (*)(const ScanArgs& args, const void* context);

struct ScanSource {
  const CodeStore* store;
  const int64_t* ids;  // ids[i] of code i; nullptr: the position is the id
  bool ids_ascending;  // ids strictly increase with position: strict thresholds suffice
  TileKernel kernel;
  const void* context;
  // SDC kernels only (see ScanArgs): per-code scales and the score's affine constants.
  const float* scales = nullptr;
  float sdc_a = 0.0f, sdc_b = 0.0f;
  float scale_min = 0.0f, scale_max = 0.0f;  // over the stored codes
  const int32_t* sign_thresholds = nullptr;  // SDC progressive search: one per query
};

// k nearest codes per query by kernel distance (D = int32_t for Hamming, float for the
// SDC keys), ties to the smaller id; rows padded with (pad, -1). queries: nq rows of
// query_stride words.
template <typename D>
void KnnScan(const ScanSource& src, const uint64_t* queries, int64_t nq, int64_t query_stride, int64_t k, D* distances,
             int64_t* ids, D pad, int num_threads);

struct RangeResult {
  std::vector<int64_t> lims;  // nq + 1
  std::vector<int32_t> distances;
  std::vector<int64_t> ids;
};

// All codes with distance <= radius, per query sorted by (distance, id).
RangeResult RangeScan(const ScanSource& src, const uint64_t* queries, int64_t nq, int64_t query_stride, int32_t radius,
                      int num_threads);

}  // namespace hamming
}  // namespace pylocalize
