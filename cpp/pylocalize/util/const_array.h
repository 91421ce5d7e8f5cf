// An immutable array that owns its elements or borrows them from memory kept alive by an
// owner (a memory-mapped file: Container::owner()). Search layouts are built once and never
// changed, so one type serves a layout built in memory and one read in place from a file;
// whoever needs to change the data copies it out first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace pylocalize {

template <typename T>
class ConstArray {
 public:
  ConstArray() = default;
  // Owns `values`.
  explicit ConstArray(std::vector<T> values) : owned_(std::move(values)) {}
  // Borrows size elements at data, alive as long as `owner` is.
  ConstArray(const T* data, size_t size, std::shared_ptr<const void> owner)
      : borrowed_(data), size_(size), owner_(std::move(owner)) {}

  const T* data() const { return borrowed_ != nullptr ? borrowed_ : owned_.data(); }
  size_t size() const { return borrowed_ != nullptr ? size_ : owned_.size(); }
  bool empty() const { return size() == 0; }
  const T& operator[](size_t i) const { return data()[i]; }
  const T* begin() const { return data(); }
  const T* end() const { return data() + size(); }
  bool borrowed() const { return borrowed_ != nullptr; }
  // Bytes on the heap (owned) and in the owner's memory (borrowed): one of them is 0.
  int64_t heap_bytes() const { return borrowed() ? 0 : static_cast<int64_t>(owned_.size() * sizeof(T)); }
  int64_t borrowed_bytes() const { return borrowed() ? static_cast<int64_t>(size_ * sizeof(T)) : 0; }

 private:
  std::vector<T> owned_;
  const T* borrowed_ = nullptr;
  size_t size_ = 0;
  std::shared_ptr<const void> owner_;
};

}  // namespace pylocalize
