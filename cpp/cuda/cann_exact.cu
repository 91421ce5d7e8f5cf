// CANN method exact on the device (gpu::CannExact): CannIndex's scores from its exact layout
// (features grouped by image in knn blocks, cann/layouts.h), uploaded as it is. One block per
// (image, group of query features) takes the minimum of ||x||^2 - 2 q.x over the image's
// features; one thread per image then sums the kernel over the query features in order, so
// the sums are the CPU's; the host ranks the images with cann::TopImages.
#include <algorithm>

#include "cuda/device.cuh"
#include "cuda/device_logic.h"
#include "cuda/gpu_index.h"
#include "pylocalize/cann/cann_index.h"
#include "pylocalize/cann/layouts.h"
#include "pylocalize/util/check.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace gpu {
namespace {

constexpr int kQueriesPerBlock = 8;
constexpr int kThreads = 128;
constexpr int64_t kMaxDim = 3072;  // kQueriesPerBlock query features in 96 KB of shared memory

// minima[q * num_images + image] for the block's image and query features [q0, q0 + nj).
template <class T>
__global__ void MinimaKernel(const T* blocks, const float* norms, const int64_t* offsets, int64_t num_images,
                             const float* queries, int64_t nq, int64_t dim, float* minima) {
  extern __shared__ float shared_q[];  // nj x dim query features
  __shared__ float partial[kQueriesPerBlock][kThreads];
  const int64_t image = blockIdx.x;
  const int64_t q0 = static_cast<int64_t>(blockIdx.y) * kQueriesPerBlock;
  const int nj = static_cast<int>(q0 + kQueriesPerBlock < nq ? kQueriesPerBlock : nq - q0);
  const int tid = threadIdx.x;
  for (int64_t i = tid; i < nj * dim; i += kThreads) shared_q[i] = queries[q0 * dim + i];
  __syncthreads();
  float best[kQueriesPerBlock];
  for (int j = 0; j < kQueriesPerBlock; ++j) best[j] = PadKey<float>();
  for (int64_t f = offsets[image] + tid; f < offsets[image + 1]; f += kThreads) {
    // slot f: block f / 16, lane f % 16, its dimensions 16 apart (knn/kernels.h)
    const T* x = blocks + (f / knn::kBlock) * dim * knn::kBlock + f % knn::kBlock;
    for (int j = 0; j < nj; ++j) {
      best[j] = fminf(best[j], L2Key(norms[f], Dot(shared_q + j * dim, x, dim, knn::kBlock)));
    }
  }
  for (int j = 0; j < kQueriesPerBlock; ++j) partial[j][tid] = best[j];
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (tid < half) {
      for (int j = 0; j < kQueriesPerBlock; ++j) partial[j][tid] = fminf(partial[j][tid], partial[j][tid + half]);
    }
    __syncthreads();
  }
  if (tid < nj) minima[(q0 + tid) * num_images + image] = partial[tid][0];
}

// totals[image] += the kernel of every query feature of the batch, in query order.
__global__ void SumKernel(const float* minima, const float* q_norms, int64_t nq, int64_t num_images, int type,
                          double p0, double p1, double sigma, double* totals) {
  const int64_t image = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (image >= num_images) return;
  double total = totals[image];
  for (int64_t q = 0; q < nq; ++q) {
    total += CannContribution(type, p0, p1, sigma, minima[q * num_images + image], q_norms[q]);
  }
  totals[image] = total;
}

}  // namespace

struct CannExact::Device {
  DeviceMemory mem;
  const void* blocks = nullptr;
  float* norms = nullptr;
  int64_t* offsets = nullptr;
};

CannExact::CannExact(std::shared_ptr<const cann::ExactLayout> layout, int64_t dim, int device)
    : layout_(std::move(layout)), dim_(dim), device_(device), dev_(new Device) {
  PYL_CHECK(dim_ <= kMaxDim, "CANN on the GPU takes descriptors of up to ", kMaxDim, " dimensions, got ", dim_,
            ": search on the CPU (device='cpu')");
  UseDevice(device_);
  const cann::BlockedRows& rows = layout_->rows;
  dev_->blocks = dev_->mem.Upload(rows.blocks.data(), static_cast<int64_t>(rows.blocks.size()));
  dev_->norms = dev_->mem.Upload(rows.norms.data(), static_cast<int64_t>(rows.norms.size()));
  dev_->offsets = dev_->mem.Upload(layout_->offsets.data(), static_cast<int64_t>(layout_->offsets.size()));
}

CannExact::~CannExact() = default;

void CannExact::Search(const float* queries, int64_t nq, int64_t k, const CannKernel& kernel, float* scores,
                       int64_t* image_ids) const {
  PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
  kernel.Validate();
  cann::CheckQueries(queries, nq, dim_);
  const int64_t num_images = static_cast<int64_t>(layout_->images.size());
  std::vector<double> total(static_cast<size_t>(num_images), 0.0);
  if (nq > 0 && num_images > 0) {
    UseDevice(device_);
    const std::vector<float> qnorm = knn::SquaredNorms(queries, nq, dim_);
    const int64_t batch = std::min<int64_t>(RowsPerBatch(num_images * 4 + dim_ * 4 + 4, nq), 65535 * kQueriesPerBlock);
    DeviceMemory scratch;
    float* q = scratch.Alloc<float>(batch * dim_);
    float* qn = scratch.Alloc<float>(batch);
    float* minima = scratch.Alloc<float>(batch * num_images);
    double* totals = scratch.Upload(total.data(), num_images);
    const size_t shared = static_cast<size_t>(kQueriesPerBlock * dim_) * sizeof(float);
    const bool bytes = layout_->rows.element == knn::Element::kUInt8;
    if (bytes) {
      Check(cudaFuncSetAttribute(MinimaKernel<uint8_t>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(shared)),
            "cudaFuncSetAttribute");
    } else {
      Check(cudaFuncSetAttribute(MinimaKernel<float>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(shared)),
            "cudaFuncSetAttribute");
    }
    for (int64_t b0 = 0; b0 < nq; b0 += batch) {
      InterruptPoint();  // Ctrl-C between batches
      const int64_t nb = std::min(batch, nq - b0);
      Check(cudaMemcpy(q, queries + b0 * dim_, static_cast<size_t>(nb * dim_) * 4, cudaMemcpyHostToDevice), "upload");
      Check(cudaMemcpy(qn, qnorm.data() + b0, static_cast<size_t>(nb) * 4, cudaMemcpyHostToDevice), "upload");
      const dim3 grid(static_cast<unsigned>(num_images), static_cast<unsigned>(CeilDiv(nb, kQueriesPerBlock)));
      if (bytes) {
        MinimaKernel<uint8_t><<<grid, kThreads, shared>>>(static_cast<const uint8_t*>(dev_->blocks), dev_->norms,
                                                          dev_->offsets, num_images, q, nb, dim_, minima);
      } else {
        MinimaKernel<float><<<grid, kThreads, shared>>>(static_cast<const float*>(dev_->blocks), dev_->norms,
                                                        dev_->offsets, num_images, q, nb, dim_, minima);
      }
      CheckLaunch("MinimaKernel");
      SumKernel<<<static_cast<unsigned>(CeilDiv(num_images, 256)), 256>>>(
          minima, qn, nb, num_images, static_cast<int>(kernel.type), kernel.p0, kernel.p1, kernel.sigma, totals);
      CheckLaunch("SumKernel");
    }
    Download(total.data(), totals, num_images);
  }
  cann::TopImages(total, layout_->images, nq, k, scores, image_ids);
}

}  // namespace gpu
}  // namespace pylocalize
