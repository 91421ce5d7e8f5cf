// Exact L2 and inner-product k-NN over float32 or uint8 rows on the device (gpu::FloatRows):
// for L2, knn::AssignNearestM's labels and distances (the k-means assignment step); rows are
// stored dimension-major so that a warp reads one dimension of 32 neighbouring rows.
#include <algorithm>

#include "cuda/device.cuh"
#include "cuda/gpu_index.h"
#include "cuda/select.cuh"
#include "pylocalize/knn/kernels.h"
#include "pylocalize/util/check.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace gpu {
namespace {

constexpr int64_t kTileCols = int64_t{1} << 15;
constexpr int kQueriesPerThread = 4;
constexpr int kThreads = 256;

// tile[q * ld + c]: ||x||^2 - 2 <q, x> (L2) or -<q, x> (inner product) for row col0 + c.
template <class T>
__global__ void DotTileKernel(const float* queries, int64_t nq, const T* rows, const float* norms, int64_t n,
                              int64_t dim, bool inner_product, int64_t col0, int64_t ncols, float* tile, int64_t ld,
                              SegmentMarks<float> marks) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= ncols) return;
  const int64_t q0 = static_cast<int64_t>(blockIdx.y) * kQueriesPerThread;
  const int64_t q1 = q0 + kQueriesPerThread < nq ? q0 + kQueriesPerThread : nq;
  for (int64_t q = q0; q < q1; ++q) {
    const float dot = Dot(queries + q * dim, rows + col0 + c, dim, n);
    const float key = inner_product ? -dot : L2Key(norms[col0 + c], dot);
    tile[q * ld + c] = key;
    MarkSegment(marks, q, col0, c, key);
  }
}

}  // namespace

struct FloatRows::Device {
  DeviceMemory mem;
  void* rows = nullptr;  // dim x n elements, dimension-major
  float* norms = nullptr;
};

FloatRows::FloatRows(const void* rows, int element_size, int64_t n, int64_t dim, int device)
    : n_(n), dim_(dim), element_size_(element_size), device_(device), dev_(new Device) {
  PYL_CHECK(element_size == 1 || element_size == 4, "rows must be float32 or uint8");
  UseDevice(device_);
  // Norms in double, then rounded: as the CPU blocks its centroids (knn/coarse_quantizer.cc).
  norms_.resize(static_cast<size_t>(n));
  std::vector<uint8_t> t(static_cast<size_t>(n * dim * element_size));
  for (int64_t i = 0; i < n; ++i) {
    double s = 0.0;
    for (int64_t d = 0; d < dim; ++d) {
      double v;
      if (element_size == 4) {
        const float f = static_cast<const float*>(rows)[i * dim + d];
        reinterpret_cast<float*>(t.data())[d * n + i] = f;
        v = f;
      } else {
        const uint8_t u = static_cast<const uint8_t*>(rows)[i * dim + d];
        t[static_cast<size_t>(d * n + i)] = u;
        v = u;
      }
      s += v * v;
    }
    norms_[static_cast<size_t>(i)] = static_cast<float>(s);
  }
  dev_->rows = dev_->mem.Upload(t.data(), static_cast<int64_t>(t.size()));
  dev_->norms = dev_->mem.Upload(norms_.data(), n);
}

FloatRows::~FloatRows() = default;

void FloatRows::Search(const float* x, int64_t nq, int64_t k, bool inner_product, float* distances,
                       int64_t* labels) const {
  PYL_CHECK(k >= 1 && k <= std::min<int64_t>(kMaxDeviceK, n_), "k must be in 1..", std::min<int64_t>(kMaxDeviceK, n_),
            " on the GPU, got ", k);
  UseDevice(device_);
  const int64_t cols = std::min(kTileCols, n_);
  const int64_t batch = std::min<int64_t>(RowsPerBatch(cols * 4 + k * 12 + dim_ * 4, nq), 65535 * kQueriesPerThread);
  DeviceMemory scratch;
  float* q = scratch.Alloc<float>(batch * dim_);
  float* tile = scratch.Alloc<float>(batch * cols);
  const TopKState<float> top = NewTopK<float>(&scratch, batch, k);
  const SegmentMarks<float> marks = NewSegmentMarks(&scratch, top, static_cast<const int64_t*>(nullptr), batch, cols);
  for (int64_t b0 = 0; b0 < nq; b0 += batch) {
    const int64_t nb = std::min(batch, nq - b0);
    Check(cudaMemcpy(q, x + b0 * dim_, static_cast<size_t>(nb * dim_) * 4, cudaMemcpyHostToDevice), "upload");
    Check(cudaMemset(top.count, 0, static_cast<size_t>(nb) * sizeof(int32_t)), "cudaMemset");
    for (int64_t c0 = 0; c0 < n_; c0 += cols) {
      InterruptPoint();  // Ctrl-C between tiles
      const int64_t nc = std::min(cols, n_ - c0);
      const dim3 grid(static_cast<unsigned>(CeilDiv(nc, kThreads)),
                      static_cast<unsigned>(CeilDiv(nb, kQueriesPerThread)));
      ClearSegmentMarks(marks, nb);
      if (element_size_ == 4) {
        DotTileKernel<float><<<grid, kThreads>>>(q, nb, static_cast<const float*>(dev_->rows), dev_->norms, n_, dim_,
                                                 inner_product, c0, nc, tile, cols, marks);
      } else {
        DotTileKernel<uint8_t><<<grid, kThreads>>>(q, nb, static_cast<const uint8_t*>(dev_->rows), dev_->norms, n_,
                                                   dim_, inner_product, c0, nc, tile, cols, marks);
      }
      CheckLaunch("DotTileKernel");
      MergeTile(tile, nb, cols, nc, nullptr, c0, top, &marks);
    }
    DownloadTopK(top, nb, distances + b0 * k, labels + b0 * k);
  }
  // Keys to distances: + ||x||^2 (clamped at 0) for L2, as AssignBlocked; -key for IP.
  const std::vector<float> xn = knn::SquaredNorms(x, nq, dim_);
  for (int64_t r = 0; r < nq; ++r) {
    for (int64_t j = r * k; j < (r + 1) * k; ++j) {
      distances[j] = inner_product ? -distances[j] : std::max(0.0f, distances[j] + xn[static_cast<size_t>(r)]);
    }
  }
}

}  // namespace gpu
}  // namespace pylocalize
