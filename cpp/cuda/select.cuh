// k-selection on the device: per query row, the k smallest (key, label) pairs of a tile of
// keys, merged into a running top-k across tiles (ties to the smaller label, as TopK of
// util/topk.h). A block per row filters a segment of the tile against the row's current k-th
// pair and, when some pass, bitonic-sorts them with the kept k in shared memory; with a tight
// threshold most segments pass nothing and cost one read. The decisions are device_logic.h's.
#pragma once

#include <cstdint>

#include "cuda/device.cuh"
#include "cuda/device_logic.h"

namespace pylocalize {
namespace gpu {

constexpr int64_t kSelectSegment = 1024;  // tile columns filtered before a merge
constexpr int64_t kMaxDeviceK = 2048;     // the largest k the shared-memory merge holds
constexpr int kSelectThreads = 256;

// Running top-k of nrows rows: keys and labels (nrows x k) best first, count kept per row.
template <class D>
struct TopKState {
  D* keys;
  int64_t* labels;
  int32_t* count;
  int64_t k;
};

inline int64_t SelectSharedBytes(int64_t k, int64_t key_size) {
  const int64_t p = PowerOfTwoAtLeast(k + kSelectSegment);
  return p * (key_size + static_cast<int64_t>(sizeof(int64_t)));
}

// What a tile kernel needs to mark, per row, the segments of kSelectSegment columns holding
// a key that passes the row's running k-th pair. It reads the pair before this tile's merge,
// which only tightens it: an unmarked segment has nothing to merge, and MergeTileKernel skips
// reading it (once the top-k is full, most segments). any == nullptr: no marks.
template <class D>
struct SegmentMarks {
  TopKState<D> top;
  const int64_t* labels;  // as MergeTile's
  uint8_t* any;           // rows x nseg
  int64_t nseg;
};

// Marks the segment of column c (label: labels[col0 + c], or col0 + c) if its key passes.
template <class D>
__device__ inline void MarkSegment(const SegmentMarks<D>& m, int64_t row, int64_t col0, int64_t c, D key) {
  if (m.any == nullptr) return;
  const int64_t k = m.top.k;
  const bool full = m.top.count[row] == k;
  const int64_t label = m.labels != nullptr ? m.labels[col0 + c] : col0 + c;
  if (Passes(key, label, full, full ? m.top.keys[row * k + k - 1] : PadKey<D>(),
             full ? m.top.labels[row * k + k - 1] : int64_t{-1})) {
    m.any[row * m.nseg + c / kSelectSegment] = 1;  // every writer writes 1: no race to lose
  }
}

// Row r of `tile` (rows ld apart) holds the keys of columns [0, ncols); column c's label is
// labels[col0 + c], or col0 + c without labels. any (rows x nseg, or nullptr): the segments
// a tile kernel marked (SegmentMarks); the others are skipped.
template <class D>
__global__ void MergeTileKernel(const D* tile, int64_t ld, int64_t ncols, const int64_t* labels, int64_t col0,
                                TopKState<D> top, const uint8_t* any, int64_t nseg) {
  extern __shared__ int64_t shared[];
  const int64_t k = top.k;
  const int64_t p = PowerOfTwoAtLeast(k + kSelectSegment);
  int64_t* lab = shared;
  D* key = reinterpret_cast<D*>(shared + p);
  __shared__ int n_cand;
  __shared__ int32_t kept;
  __shared__ D t_key;
  __shared__ int64_t t_label;
  const int64_t row = blockIdx.x;
  const int tid = threadIdx.x, nt = blockDim.x;
  const D* keys_in = tile + row * ld;
  D* top_keys = top.keys + row * k;
  int64_t* top_labels = top.labels + row * k;
  for (int64_t seg = 0; seg < ncols; seg += kSelectSegment) {
    if (any != nullptr && any[row * nseg + seg / kSelectSegment] == 0) continue;  // the whole block skips
    __syncthreads();  // the previous segment's readers of the shared state are done
    if (tid == 0) {
      n_cand = 0;
      kept = top.count[row];
      t_key = kept == k ? top_keys[k - 1] : PadKey<D>();
      t_label = kept == k ? top_labels[k - 1] : -1;
    }
    __syncthreads();
    const bool full = kept == k;
    const int64_t end = seg + kSelectSegment < ncols ? seg + kSelectSegment : ncols;
    for (int64_t c = seg + tid; c < end; c += nt) {
      const D v = keys_in[c];
      const int64_t l = labels != nullptr ? labels[col0 + c] : col0 + c;
      if (Passes(v, l, full, t_key, t_label)) {
        const int s = atomicAdd(&n_cand, 1);
        key[k + s] = v;
        lab[k + s] = l;
      }
    }
    __syncthreads();
    const int m = n_cand;
    if (m == 0) continue;
    for (int64_t i = tid; i < p; i += nt) {
      if (i < kept) {
        key[i] = top_keys[i];
        lab[i] = top_labels[i];
      } else if (i < k || i >= k + m) {
        key[i] = PadKey<D>();
        lab[i] = INT64_MAX;
      }
    }
    __syncthreads();
    BitonicStages(p, [&](int64_t size, int64_t stride) {
      for (int64_t i = tid; i < p; i += nt) BitonicStep(key, lab, i, size, stride);
      __syncthreads();
    });
    const int64_t now = kept + m < k ? kept + m : k;
    for (int64_t i = tid; i < now; i += nt) {
      top_keys[i] = key[i];
      top_labels[i] = lab[i];
    }
    if (tid == 0) top.count[row] = static_cast<int32_t>(now);
  }
}

// Device scratch for the top-k of nrows rows, emptied.
template <class D>
TopKState<D> NewTopK(DeviceMemory* mem, int64_t nrows, int64_t k) {
  TopKState<D> t{mem->Alloc<D>(nrows * k), mem->Alloc<int64_t>(nrows * k), mem->Alloc<int32_t>(nrows), k};
  Check(cudaMemset(t.count, 0, static_cast<size_t>(nrows) * sizeof(int32_t)), "cudaMemset");
  return t;
}

// Marks for nrows rows of tiles of `cols` columns, with the labels MergeTile gets.
template <class D>
SegmentMarks<D> NewSegmentMarks(DeviceMemory* mem, const TopKState<D>& top, const int64_t* labels, int64_t nrows,
                                int64_t cols) {
  const int64_t nseg = CeilDiv(cols, kSelectSegment);
  return SegmentMarks<D>{top, labels, mem->Alloc<uint8_t>(nrows * nseg), nseg};
}

// Unmarks every segment of the first nrows rows: before each tile kernel.
template <class D>
void ClearSegmentMarks(const SegmentMarks<D>& m, int64_t nrows) {
  Check(cudaMemset(m.any, 0, static_cast<size_t>(nrows * m.nseg)), "cudaMemset");
}

// Merges a tile into the running top-k; marks (or nullptr): the segments worth reading.
template <class D>
void MergeTile(const D* tile, int64_t nrows, int64_t ld, int64_t ncols, const int64_t* labels, int64_t col0,
               const TopKState<D>& top, const SegmentMarks<D>* marks = nullptr) {
  const int64_t bytes = SelectSharedBytes(top.k, sizeof(D));
  Check(cudaFuncSetAttribute(MergeTileKernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
        "cudaFuncSetAttribute");
  MergeTileKernel<D><<<static_cast<unsigned>(nrows), kSelectThreads, static_cast<size_t>(bytes)>>>(
      tile, ld, ncols, labels, col0, top, marks != nullptr ? marks->any : nullptr, marks != nullptr ? marks->nseg : 0);
  CheckLaunch("MergeTileKernel");
}

// Copies the top-k of nrows rows to the host, padding each row with (pad, -1) up to k.
template <class D>
void DownloadTopK(const TopKState<D>& top, int64_t nrows, D* keys, int64_t* labels) {
  std::vector<int32_t> count(static_cast<size_t>(nrows));
  Download(count.data(), top.count, nrows);
  Download(keys, top.keys, nrows * top.k);
  Download(labels, top.labels, nrows * top.k);
  for (int64_t r = 0; r < nrows; ++r) {
    for (int64_t i = count[static_cast<size_t>(r)]; i < top.k; ++i) {
      keys[r * top.k + i] = PadKey<D>();
      labels[r * top.k + i] = -1;
    }
  }
}

}  // namespace gpu
}  // namespace pylocalize
