// SDC k-NN over multi-bit codes on the device (gpu::SdcCodes): the candidates of
// MultiBitIndex::Search, exhaustive or progressive. Codes are stored word-major, as binary
// codes are (binary_codes.cu); a tile holds the float keys of a query batch against
// kTileCols codes, codes outside a progressive search's sign bound keyed as excluded.
#include <algorithm>

#include "cuda/device.cuh"
#include "cuda/gpu_index.h"
#include "cuda/select.cuh"
#include "pylocalize/util/check.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace gpu {
namespace {

constexpr int64_t kTileCols = int64_t{1} << 16;
constexpr int kQueriesPerThread = 4;
constexpr int kThreads = 256;

__global__ void SdcTileKernel(const uint64_t* queries, int64_t nq, const int32_t* sign_bounds, const uint64_t* codes,
                              const float* inv_norms, int64_t n, int u, int64_t wp, float a, float b, int64_t col0,
                              int64_t ncols, float* tile, int64_t ld, SegmentMarks<float> marks) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= ncols) return;
  const int64_t q0 = static_cast<int64_t>(blockIdx.y) * kQueriesPerThread;
  const int64_t q1 = q0 + kQueriesPerThread < nq ? q0 + kQueriesPerThread : nq;
  const uint64_t* x = codes + col0 + c;
  const float scale = inv_norms[col0 + c];
  for (int64_t q = q0; q < q1; ++q) {
    const uint64_t* qw = queries + q * u * wp;
    float key = PadKey<float>();  // excluded unless the sign plane is close enough
    if (sign_bounds == nullptr || HammingDistance(qw, x, wp, n) < sign_bounds[q]) {
      key = SdcKey(SdcSum(qw, x, u, wp, n), scale, a, b);
    }
    tile[q * ld + c] = key;
    MarkSegment(marks, q, col0, c, key);
  }
}

}  // namespace

struct SdcCodes::Device {
  DeviceMemory mem;
  uint64_t* codes = nullptr;  // words x n, word-major
  float* inv_norms = nullptr;
  int64_t* ids = nullptr;
};

SdcCodes::SdcCodes(const uint64_t* words, const int64_t* ids, const float* inv_norms, int64_t n, int bits_per_dim,
                   int64_t words_per_plane, float a, float b, int device)
    : n_(n), bits_(bits_per_dim), wp_(words_per_plane), a_(a), b_(b), device_(device), dev_(new Device) {
  UseDevice(device_);
  const int64_t w = bits_ * wp_;
  std::vector<uint64_t> t(static_cast<size_t>(w * n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < w; ++j) t[static_cast<size_t>(j * n + i)] = words[i * w + j];
  }
  dev_->codes = dev_->mem.Upload(t.data(), w * n);
  dev_->inv_norms = dev_->mem.Upload(inv_norms, n);
  dev_->ids = dev_->mem.Upload(ids, n);
}

SdcCodes::~SdcCodes() = default;

void SdcCodes::SearchKeys(const uint64_t* query_words, int64_t nq, int64_t k, const int32_t* sign_bounds,
                          bool by_position, float* keys, int64_t* labels) const {
  PYL_CHECK(k >= 1 && k <= kMaxDeviceK, "k (or rerank) must be in 1..", kMaxDeviceK, " on the GPU, got ", k,
            ": search larger k on the CPU (device='cpu')");
  UseDevice(device_);
  const int64_t w = bits_ * wp_;
  const int64_t cols = std::min(kTileCols, std::max<int64_t>(n_, 1));
  const int64_t batch = std::min<int64_t>(RowsPerBatch(cols * 4 + k * 12 + w * 8 + 8, nq), 65535 * kQueriesPerThread);
  DeviceMemory scratch;
  uint64_t* q = scratch.Alloc<uint64_t>(batch * w);
  int32_t* bounds = sign_bounds != nullptr ? scratch.Alloc<int32_t>(batch) : nullptr;
  float* tile = scratch.Alloc<float>(batch * cols);
  const TopKState<float> top = NewTopK<float>(&scratch, batch, k);
  const int64_t* labels_of = by_position ? nullptr : dev_->ids;
  const SegmentMarks<float> marks = NewSegmentMarks(&scratch, top, labels_of, batch, cols);
  for (int64_t b0 = 0; b0 < nq; b0 += batch) {
    const int64_t nb = std::min(batch, nq - b0);
    Check(cudaMemcpy(q, query_words + b0 * w, static_cast<size_t>(nb * w) * 8, cudaMemcpyHostToDevice), "upload");
    if (bounds != nullptr) {
      Check(cudaMemcpy(bounds, sign_bounds + b0, static_cast<size_t>(nb) * 4, cudaMemcpyHostToDevice), "upload");
    }
    Check(cudaMemset(top.count, 0, static_cast<size_t>(nb) * sizeof(int32_t)), "cudaMemset");
    for (int64_t c0 = 0; c0 < n_; c0 += cols) {
      InterruptPoint();  // Ctrl-C between tiles
      const int64_t nc = std::min(cols, n_ - c0);
      const dim3 grid(static_cast<unsigned>(CeilDiv(nc, kThreads)),
                      static_cast<unsigned>(CeilDiv(nb, kQueriesPerThread)));
      ClearSegmentMarks(marks, nb);
      SdcTileKernel<<<grid, kThreads>>>(q, nb, bounds, dev_->codes, dev_->inv_norms, n_, bits_, wp_, a_, b_, c0, nc,
                                        tile, cols, marks);
      CheckLaunch("SdcTileKernel");
      MergeTile(tile, nb, cols, nc, labels_of, c0, top, &marks);
    }
    DownloadTopK(top, nb, keys + b0 * k, labels + b0 * k);
  }
}

}  // namespace gpu
}  // namespace pylocalize
