// Exact Hamming k-NN and range search over binary codes of any size (a multiple of 8 bits).
//
// Codes live in the blocked layout of kernels.h; fast paths are compiled for 64, 128,
// 256, 512 and 1024 bits and any other size runs the generic kernel. Many queries run in
// parallel over queries, a few over the database. Searches take a shared lock and
// add/remove/reset an exclusive one, so concurrent searches from several threads are
// safe and an add waits for running searches.
#pragma once

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "pylocalize/hamming/code_store.h"
#include "pylocalize/util/format.h"

namespace pylocalize {

class BinaryIndex {
 public:
  // Largest nbits: what the file format's loader accepts, so every index saves and loads.
  static constexpr int64_t kMaxBits = int64_t{1} << 24;

  explicit BinaryIndex(int64_t nbits);

  int64_t nbits() const { return nbits_; }
  int64_t code_size() const { return nbits_ / 8; }
  int64_t ntotal() const;

  // codes: n x code_size bytes; ids: n ids, or nullptr for next_id(), next_id()+1, ...
  void Add(const uint8_t* codes, int64_t n, const int64_t* ids);
  void Search(const uint8_t* queries, int64_t nq, int64_t k, int32_t* distances, int64_t* ids) const;
  hamming::RangeResult RangeSearch(const uint8_t* queries, int64_t nq, int32_t radius) const;
  // Removes every code whose id is in ids; returns how many were removed.
  int64_t RemoveIds(const int64_t* ids, int64_t n);
  void Reset();
  // Codes in insertion order (n x code_size bytes) and their ids.
  std::vector<uint8_t> Codes() const;
  std::vector<int64_t> Ids() const;

  void Save(const std::string& path) const;
  static std::unique_ptr<BinaryIndex> Load(const std::string& path, bool mmap);
  std::vector<uint8_t> Serialize() const;
  static std::unique_ptr<BinaryIndex> Deserialize(std::vector<uint8_t> bytes);

 private:
  void ToWords(const uint8_t* codes, int64_t n, std::vector<uint64_t>* words) const;
  ContainerWriter Writer() const;
  static std::unique_ptr<BinaryIndex> FromContainer(const Container& c, bool borrow);

  int64_t nbits_;
  int64_t words_;
  hamming::CodeStore store_;
  hamming::IdList ids_;
  mutable std::shared_mutex mutex_;
};

}  // namespace pylocalize
