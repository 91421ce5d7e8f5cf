// Exact Hamming k-NN and range search on the device (gpu::BinaryCodes): BinaryIndex's
// results. Codes are stored word-major (word w of code i at w * n + i) so that a warp reads
// 32 neighbouring codes' words at once; queries go through in batches, the database in
// tiles of kTileCols codes whose distances are computed for the batch and then selected.
#include <algorithm>
#include <cstring>

#include "cuda/device.cuh"
#include "cuda/gpu_index.h"
#include "cuda/select.cuh"
#include "pylocalize/util/check.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace gpu {
namespace {

constexpr int64_t kTileCols = int64_t{1} << 16;
constexpr int kQueriesPerThread = 8;  // a thread keeps its code in registers for these
constexpr int kThreads = 256;

// tile[q * ld + c] = Hamming distance of query q to code col0 + c, its segment marked when it
// passes (marks.any == nullptr: range search, no marks). W > 0: words per code known at
// compile time (the code stays in registers); 0: words at run time.
template <int W>
__global__ void HammingTileKernel(const uint64_t* queries, int64_t nq, const uint64_t* codes, int64_t n, int64_t words,
                                  int64_t col0, int64_t ncols, int32_t* tile, int64_t ld, SegmentMarks<int32_t> marks) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= ncols) return;
  const int64_t q0 = static_cast<int64_t>(blockIdx.y) * kQueriesPerThread;
  const int64_t q1 = q0 + kQueriesPerThread < nq ? q0 + kQueriesPerThread : nq;
  const uint64_t* x = codes + col0 + c;
  if (W > 0) {
    uint64_t r[W > 0 ? W : 1];
    for (int w = 0; w < W; ++w) r[w] = x[w * n];
    for (int64_t q = q0; q < q1; ++q) {
      const int32_t d = HammingDistance(queries + q * W, r, W, 1);
      tile[q * ld + c] = d;
      MarkSegment(marks, q, col0, c, d);
    }
  } else {
    for (int64_t q = q0; q < q1; ++q) {
      const int32_t d = HammingDistance(queries + q * words, x, words, n);
      tile[q * ld + c] = d;
      MarkSegment(marks, q, col0, c, d);
    }
  }
}

void HammingTile(const uint64_t* queries, int64_t nq, const uint64_t* codes, int64_t n, int64_t words, int64_t col0,
                 int64_t ncols, int32_t* tile, int64_t ld, const SegmentMarks<int32_t>& marks) {
  const dim3 grid(static_cast<unsigned>(CeilDiv(ncols, kThreads)),
                  static_cast<unsigned>(CeilDiv(nq, kQueriesPerThread)));
  switch (words) {
    case 1: HammingTileKernel<1><<<grid, kThreads>>>(queries, nq, codes, n, words, col0, ncols, tile, ld, marks); break;
    case 2: HammingTileKernel<2><<<grid, kThreads>>>(queries, nq, codes, n, words, col0, ncols, tile, ld, marks); break;
    case 4: HammingTileKernel<4><<<grid, kThreads>>>(queries, nq, codes, n, words, col0, ncols, tile, ld, marks); break;
    case 8: HammingTileKernel<8><<<grid, kThreads>>>(queries, nq, codes, n, words, col0, ncols, tile, ld, marks); break;
    default:
      HammingTileKernel<0><<<grid, kThreads>>>(queries, nq, codes, n, words, col0, ncols, tile, ld, marks);
      break;
  }
  CheckLaunch("HammingTileKernel");
}

// Per row, how many of the tile's columns are within radius (added to count[row]).
__global__ void RangeCountKernel(const int32_t* tile, int64_t ld, int64_t ncols, int32_t radius, int64_t* count) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < ncols && tile[blockIdx.y * ld + c] <= radius) {
    atomicAdd(reinterpret_cast<unsigned long long*>(count + blockIdx.y), 1ull);
  }
}

// Writes the columns within radius of each row at out + start[row] (in any order: the host
// sorts each query's results by (distance, id)).
__global__ void RangeWriteKernel(const int32_t* tile, int64_t ld, int64_t ncols, int32_t radius, const int64_t* ids,
                                 int64_t col0, const int64_t* start, int64_t* cursor, int32_t* out_d, int64_t* out_id) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= ncols) return;
  const int32_t d = tile[blockIdx.y * ld + c];
  if (d > radius) return;
  const int64_t at = start[blockIdx.y] +
                     static_cast<int64_t>(atomicAdd(reinterpret_cast<unsigned long long*>(cursor + blockIdx.y), 1ull));
  out_d[at] = d;
  out_id[at] = ids[col0 + c];
}

// Query rows of words, as BinaryIndex::ToWords lays them out.
std::vector<uint64_t> QueryWords(const uint8_t* queries, int64_t nq, int64_t code_size, int64_t words) {
  std::vector<uint64_t> out(static_cast<size_t>(nq * words), 0);
  for (int64_t i = 0; i < nq; ++i) std::memcpy(out.data() + i * words, queries + i * code_size, code_size);
  return out;
}

}  // namespace

struct BinaryCodes::Device {
  DeviceMemory mem;
  uint64_t* codes = nullptr;  // words x n, word-major
  int64_t* ids = nullptr;
};

BinaryCodes::BinaryCodes(const uint8_t* codes, const int64_t* ids, int64_t n, int64_t nbits, int device)
    : n_(n), nbits_(nbits), words_((nbits + 63) / 64), device_(device), ids_(ids, ids + n), dev_(new Device) {
  UseDevice(device_);
  const int64_t cs = nbits / 8;
  std::vector<uint64_t> t(static_cast<size_t>(words_ * n), 0);
  std::vector<uint64_t> row(static_cast<size_t>(words_));
  for (int64_t i = 0; i < n; ++i) {
    std::fill(row.begin(), row.end(), 0);
    std::memcpy(row.data(), codes + i * cs, static_cast<size_t>(cs));
    for (int64_t w = 0; w < words_; ++w) t[static_cast<size_t>(w * n + i)] = row[static_cast<size_t>(w)];
  }
  dev_->codes = dev_->mem.Upload(t.data(), words_ * n);
  dev_->ids = dev_->mem.Upload(ids, n);
}

BinaryCodes::~BinaryCodes() = default;

void BinaryCodes::Search(const uint8_t* queries, int64_t nq, int64_t k, int32_t* distances, int64_t* ids) const {
  PYL_CHECK(k >= 1 && k <= kMaxDeviceK, "k must be in 1..", kMaxDeviceK, " on the GPU, got ", k,
            ": search larger k on the CPU (device='cpu')");
  UseDevice(device_);
  const std::vector<uint64_t> qwords = QueryWords(queries, nq, nbits_ / 8, words_);
  const int64_t cols = std::min(kTileCols, std::max<int64_t>(n_, 1));
  const int64_t batch =
      std::min<int64_t>(RowsPerBatch(cols * 4 + k * 12 + words_ * 8 + 4, nq), 65535 * kQueriesPerThread);
  DeviceMemory scratch;
  uint64_t* q = scratch.Alloc<uint64_t>(batch * words_);
  int32_t* tile = scratch.Alloc<int32_t>(batch * cols);
  const TopKState<int32_t> top = NewTopK<int32_t>(&scratch, batch, k);
  const SegmentMarks<int32_t> marks = NewSegmentMarks(&scratch, top, dev_->ids, batch, cols);
  for (int64_t b0 = 0; b0 < nq; b0 += batch) {
    const int64_t nb = std::min(batch, nq - b0);
    Check(cudaMemcpy(q, qwords.data() + b0 * words_, static_cast<size_t>(nb * words_) * 8, cudaMemcpyHostToDevice),
          "upload");
    Check(cudaMemset(top.count, 0, static_cast<size_t>(nb) * sizeof(int32_t)), "cudaMemset");
    for (int64_t c0 = 0; c0 < n_; c0 += cols) {
      const int64_t nc = std::min(cols, n_ - c0);
      InterruptPoint();  // Ctrl-C between tiles
      ClearSegmentMarks(marks, nb);
      HammingTile(q, nb, dev_->codes, n_, words_, c0, nc, tile, cols, marks);
      MergeTile(tile, nb, cols, nc, dev_->ids, c0, top, &marks);
    }
    DownloadTopK(top, nb, distances + b0 * k, ids + b0 * k);
  }
}

hamming::RangeResult BinaryCodes::RangeSearch(const uint8_t* queries, int64_t nq, int32_t radius) const {
  PYL_CHECK(radius >= 0, "radius must be >= 0, got ", radius);
  UseDevice(device_);
  const std::vector<uint64_t> qwords = QueryWords(queries, nq, nbits_ / 8, words_);
  const int64_t cols = std::min(kTileCols, std::max<int64_t>(n_, 1));
  const int64_t batch = std::min<int64_t>(RowsPerBatch(cols * 4 + words_ * 8 + 24, nq), 65535);
  DeviceMemory scratch;
  uint64_t* q = scratch.Alloc<uint64_t>(batch * words_);
  int32_t* tile = scratch.Alloc<int32_t>(batch * cols);
  int64_t* count = scratch.Alloc<int64_t>(batch);
  int64_t* start = scratch.Alloc<int64_t>(batch);
  std::vector<std::vector<std::pair<int32_t, int64_t>>> found(static_cast<size_t>(nq));
  std::vector<int64_t> hcount(static_cast<size_t>(batch)), hstart(static_cast<size_t>(batch));
  for (int64_t b0 = 0; b0 < nq; b0 += batch) {
    const int64_t nb = std::min(batch, nq - b0);
    Check(cudaMemcpy(q, qwords.data() + b0 * words_, static_cast<size_t>(nb * words_) * 8, cudaMemcpyHostToDevice),
          "upload");
    for (int64_t c0 = 0; c0 < n_; c0 += cols) {
      const int64_t nc = std::min(cols, n_ - c0);
      InterruptPoint();  // Ctrl-C between tiles
      HammingTile(q, nb, dev_->codes, n_, words_, c0, nc, tile, cols, SegmentMarks<int32_t>{});
      const dim3 grid(static_cast<unsigned>(CeilDiv(nc, kThreads)), static_cast<unsigned>(nb));
      Check(cudaMemset(count, 0, static_cast<size_t>(nb) * 8), "cudaMemset");
      RangeCountKernel<<<grid, kThreads>>>(tile, cols, nc, radius, count);
      CheckLaunch("RangeCountKernel");
      Download(hcount.data(), count, nb);
      int64_t total = 0;
      for (int64_t r = 0; r < nb; ++r) {
        hstart[static_cast<size_t>(r)] = total;
        total += hcount[static_cast<size_t>(r)];
      }
      if (total == 0) continue;
      DeviceMemory out;
      int32_t* out_d = out.Alloc<int32_t>(total);
      int64_t* out_id = out.Alloc<int64_t>(total);
      Check(cudaMemcpy(start, hstart.data(), static_cast<size_t>(nb) * 8, cudaMemcpyHostToDevice), "upload");
      Check(cudaMemset(count, 0, static_cast<size_t>(nb) * 8), "cudaMemset");
      RangeWriteKernel<<<grid, kThreads>>>(tile, cols, nc, radius, dev_->ids, c0, start, count, out_d, out_id);
      CheckLaunch("RangeWriteKernel");
      std::vector<int32_t> hd(static_cast<size_t>(total));
      std::vector<int64_t> hi(static_cast<size_t>(total));
      Download(hd.data(), out_d, total);
      Download(hi.data(), out_id, total);
      for (int64_t r = 0; r < nb; ++r) {
        auto& f = found[static_cast<size_t>(b0 + r)];
        for (int64_t i = hstart[static_cast<size_t>(r)];
             i < hstart[static_cast<size_t>(r)] + hcount[static_cast<size_t>(r)]; ++i) {
          f.emplace_back(hd[static_cast<size_t>(i)], hi[static_cast<size_t>(i)]);
        }
      }
    }
  }
  hamming::RangeResult result;
  result.lims.assign(1, 0);
  for (auto& f : found) {
    std::sort(f.begin(), f.end());  // by (distance, id), as the CPU index orders them
    for (const auto& e : f) {
      result.distances.push_back(e.first);
      result.ids.push_back(e.second);
    }
    result.lims.push_back(static_cast<int64_t>(result.ids.size()));
  }
  return result;
}

}  // namespace gpu
}  // namespace pylocalize
