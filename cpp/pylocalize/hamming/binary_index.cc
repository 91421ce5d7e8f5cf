#include "pylocalize/hamming/binary_index.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>

#include "pylocalize/util/check.h"
#include "pylocalize/util/cpu.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace {

constexpr const char* kTag = "BinaryIndex";

void HammingTile(const hamming::ScanArgs& args, const void* context) {
  reinterpret_cast<hamming::HammingKernel>(const_cast<void*>(context))(args);
}

}  // namespace

BinaryIndex::BinaryIndex(int64_t nbits) : nbits_(nbits), words_((nbits + 63) / 64), store_((nbits + 63) / 64) {
  PYL_CHECK(nbits > 0 && nbits % 8 == 0 && nbits <= kMaxBits, "nbits must be a positive multiple of 8 up to ", kMaxBits,
            ", got ", nbits);
}

int64_t BinaryIndex::ntotal() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return store_.size();
}

void BinaryIndex::ToWords(const uint8_t* codes, int64_t n, std::vector<uint64_t>* words) const {
  words->assign(static_cast<size_t>(n * words_), 0);
  const int64_t cs = code_size();
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(words->data() + i * words_, codes + i * cs, static_cast<size_t>(cs));
  }
}

void BinaryIndex::Add(const uint8_t* codes, int64_t n, const int64_t* ids) {
  PYL_CHECK(n >= 0, "negative number of codes");
  if (n == 0) return;
  std::vector<uint64_t> words;
  ToWords(codes, n, &words);
  std::unique_lock<std::shared_mutex> lock(mutex_);
  ids_.Append(ids, n);
  store_.Append(words.data(), n);
}

void BinaryIndex::Search(const uint8_t* queries, int64_t nq, int64_t k, int32_t* distances, int64_t* ids) const {
  PYL_CHECK(k > 0, "k must be >= 1, got ", k);
  std::vector<uint64_t> qwords;
  ToWords(queries, nq, &qwords);
  std::shared_lock<std::shared_mutex> lock(mutex_);
  const hamming::ScanSource src{&store_, ids_.data(), ids_.ascending(), &HammingTile,
                                reinterpret_cast<const void*>(hamming::GetHammingKernel(ActiveSimdLevel()))};
  hamming::KnnScan(src, qwords.data(), nq, words_, k, distances, ids, INT32_MAX, GetNumThreads());
}

hamming::RangeResult BinaryIndex::RangeSearch(const uint8_t* queries, int64_t nq, int32_t radius) const {
  PYL_CHECK(radius >= 0, "radius must be >= 0, got ", radius);
  std::vector<uint64_t> qwords;
  ToWords(queries, nq, &qwords);
  std::shared_lock<std::shared_mutex> lock(mutex_);
  const hamming::ScanSource src{&store_, ids_.data(), ids_.ascending(), &HammingTile,
                                reinterpret_cast<const void*>(hamming::GetHammingKernel(ActiveSimdLevel()))};
  return hamming::RangeScan(src, qwords.data(), nq, words_, radius, GetNumThreads());
}

int64_t BinaryIndex::RemoveIds(const int64_t* ids, int64_t n) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  int64_t removed = 0;
  const std::vector<uint8_t> keep = ids_.KeepMask(ids, n, &removed);
  if (removed == 0) return 0;
  store_.Compact(keep);
  ids_.Compact(keep);
  return removed;
}

void BinaryIndex::Reset() {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  store_.Clear();
  ids_.Clear();
}

std::vector<uint8_t> BinaryIndex::Codes() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  const int64_t n = store_.size(), cs = code_size();
  std::vector<uint8_t> out(static_cast<size_t>(n * cs));
  std::vector<uint64_t> row(static_cast<size_t>(words_));
  for (int64_t i = 0; i < n; ++i) {
    store_.GetRow(i, row.data());
    std::memcpy(out.data() + i * cs, row.data(), static_cast<size_t>(cs));
  }
  return out;
}

std::vector<int64_t> BinaryIndex::Ids() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return std::vector<int64_t>(ids_.data(), ids_.data() + ids_.size());
}

ContainerWriter BinaryIndex::Writer() const {
  ContainerWriter w(kTag);
  w.SetMeta("nbits", nbits_);
  w.SetMeta("ntotal", store_.size());
  w.SetMeta("next_id", ids_.next_id());
  w.AddSection("blocks", DType::kUInt64, {store_.num_words()}, store_.blocks());
  w.AddSection("ids", DType::kInt64, {store_.size()}, ids_.data());
  return w;
}

void BinaryIndex::Save(const std::string& path) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  Writer().WriteFile(path);
}

std::vector<uint8_t> BinaryIndex::Serialize() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return Writer().ToBytes();
}

std::unique_ptr<BinaryIndex> BinaryIndex::FromContainer(const Container& c, bool borrow) {
  c.ExpectTag(kTag);
  const int64_t nbits = c.Meta("nbits");
  const int64_t n = c.Meta("ntotal");
  PYL_CHECK_FORMAT(nbits > 0 && nbits % 8 == 0 && nbits <= kMaxBits && n >= 0,
                   "BinaryIndex file has invalid nbits or ntotal (corrupt)");
  auto index = std::make_unique<BinaryIndex>(nbits);
  const ArrayView& blocks = c.Section("blocks", DType::kUInt64);
  const ArrayView& ids = c.Section("ids", DType::kInt64);
  const int64_t words = (nbits + 63) / 64;
  PYL_CHECK_FORMAT(ids.size() == n && blocks.size() == (n + 7) / 8 * 8 * words,
                   "BinaryIndex file sections do not match ntotal (corrupt)");
  const auto* bptr = reinterpret_cast<const uint64_t*>(blocks.data);
  const auto* iptr = reinterpret_cast<const int64_t*>(ids.data);
  if (borrow) {
    index->store_.Borrow(bptr, n, c.owner());
  } else {
    index->store_.AssignBlocks(bptr, n);
  }
  // Bits past nbits in a code's last word would count into its distances.
  std::vector<uint64_t> used(static_cast<size_t>(words), ~uint64_t{0});
  if (nbits % 64 != 0) used.back() = (uint64_t{1} << (nbits % 64)) - 1;
  const int64_t bad = index->store_.FirstCodeOutside(used);
  PYL_CHECK_FORMAT(bad < 0, "BinaryIndex file: code ", bad, " sets bits beyond nbits=", nbits,
                   " (corrupt); rebuild the index from its codes");
  index->ids_.Assign(iptr, n, c.Meta("next_id"), borrow ? c.owner() : nullptr);
  return index;
}

std::unique_ptr<BinaryIndex> BinaryIndex::Load(const std::string& path, bool mmap) {
  return FromContainer(Container::FromFile(path, mmap), mmap);
}

std::unique_ptr<BinaryIndex> BinaryIndex::Deserialize(std::vector<uint8_t> bytes) {
  return FromContainer(Container::FromBytes(std::move(bytes)), false);
}

}  // namespace pylocalize
