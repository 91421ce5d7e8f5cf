// Bounded top-k selection with the project's deterministic order.
//
// Results are ordered by (distance, id) ascending, so ties always go to the smaller id
// and results do not depend on thread count or insertion order. Kernels filter candidates
// with a SIMD threshold test against Threshold() and only the survivors reach Push(), so
// the heap is touched rarely; it is a plain binary max-heap of k (distance, id) pairs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace pylocalize {

template <typename D>
class TopK {
 public:
  explicit TopK(int64_t k) : k_(k) { heap_.reserve(static_cast<size_t>(k)); }

  int64_t k() const { return k_; }
  bool full() const { return static_cast<int64_t>(heap_.size()) == k_; }
  size_t size() const { return heap_.size(); }

  // The worst kept distance, or +max while fewer than k are kept.
  D Threshold() const { return full() && k_ > 0 ? heap_.front().first : std::numeric_limits<D>::max(); }

  // Keeps (d, id) if it is among the k best seen so far.
  void Push(D d, int64_t id) {
    if (k_ <= 0) return;
    if (!full()) {
      heap_.emplace_back(d, id);
      std::push_heap(heap_.begin(), heap_.end());
      return;
    }
    const auto& worst = heap_.front();
    if (d < worst.first || (d == worst.first && id < worst.second)) {
      std::pop_heap(heap_.begin(), heap_.end());
      heap_.back() = {d, id};
      std::push_heap(heap_.begin(), heap_.end());
    }
  }

  void Merge(const TopK& other) {
    for (const auto& e : other.heap_) Push(e.first, e.second);
  }

  // Writes the kept pairs best first, padding with (pad_distance, -1) up to k.
  void Extract(D* distances, int64_t* ids, D pad_distance) {
    std::sort_heap(heap_.begin(), heap_.end());
    int64_t i = 0;
    for (; i < static_cast<int64_t>(heap_.size()); ++i) {
      distances[i] = heap_[static_cast<size_t>(i)].first;
      ids[i] = heap_[static_cast<size_t>(i)].second;
    }
    for (; i < k_; ++i) {
      distances[i] = pad_distance;
      ids[i] = -1;
    }
    heap_.clear();
  }

  void Clear() { heap_.clear(); }

 private:
  int64_t k_;
  std::vector<std::pair<D, int64_t>> heap_;
};

}  // namespace pylocalize
