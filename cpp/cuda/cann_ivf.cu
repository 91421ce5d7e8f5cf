// CANN method ivf on the device (gpu::CannIvf): CannIndex's ivf search on its ivf layout,
// uploaded as it is. The lists each query feature probes come from the layout's coarse
// quantizer on the CPU; a block per (list, up to kQueriesPerBlock of its query features)
// scans the list's slots, keeps the pairs within the kernel's cutoff as the CPU does, and
// lowers each (query feature, image) minimum with an atomic min; one thread per image then sums
// the kernel over the query features in order, and the host ranks with cann::TopImages.
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

// One block's work: list `list`, query features q_index[first .. first + count).
struct WorkItem {
  int64_t list;
  int64_t first;
  int32_t count;
};

__global__ void FillKernel(float* x, int64_t n, float value) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = value;
}

// minima[q * num_images + image] = min over the probed slots of that image of the pair's
// squared distance (non-negative floats order as their bits: an integer atomic min).
template <class T>
__global__ void ScanKernel(const WorkItem* work, const int32_t* q_index, const T* blocks, const float* norms,
                           const int32_t* slot_image, const int64_t* list_block, const float* queries,
                           const float* q_norms, int64_t dim, float cut2, int64_t num_images, float* minima) {
  extern __shared__ float shared_q[];  // count x dim query features
  const WorkItem w = work[blockIdx.x];
  const int tid = threadIdx.x;
  for (int64_t i = tid; i < w.count * dim; i += kThreads) {
    shared_q[i] = queries[static_cast<int64_t>(q_index[w.first + i / dim]) * dim + i % dim];
  }
  __syncthreads();
  const int64_t s0 = list_block[w.list] * knn::kBlock, s1 = list_block[w.list + 1] * knn::kBlock;
  for (int64_t s = s0 + tid; s < s1; s += kThreads) {
    const int32_t image = slot_image[s];
    if (image < 0) continue;
    const T* x = blocks + (s / knn::kBlock) * dim * knn::kBlock + s % knn::kBlock;
    for (int j = 0; j < w.count; ++j) {
      const int32_t q = q_index[w.first + j];
      const float d2 = IvfCandidate(q_norms[q], norms[s], Dot(shared_q + j * dim, x, dim, knn::kBlock), cut2);
      if (d2 >= 0.0f) atomicMin(reinterpret_cast<int*>(minima + q * num_images + image), __float_as_int(d2));
    }
  }
}

// totals[image] += the kernel of each query feature that offered the image, in query order.
__global__ void SumKernel(const float* minima, int64_t nq, int64_t num_images, int type, double p0, double p1,
                          double sigma, double* totals) {
  const int64_t image = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (image >= num_images) return;
  double total = totals[image];
  for (int64_t q = 0; q < nq; ++q) {
    const float d2 = minima[q * num_images + image];
    if (d2 < PadKey<float>()) total += CannPairContribution(type, p0, p1, sigma, static_cast<double>(d2));
  }
  totals[image] = total;
}

}  // namespace

struct CannIvf::Device {
  DeviceMemory mem;
  const void* blocks = nullptr;
  float* norms = nullptr;
  int32_t* slot_image = nullptr;
  int64_t* list_block = nullptr;
};

CannIvf::CannIvf(std::shared_ptr<const cann::IvfLayout> layout, int64_t dim, int device)
    : layout_(std::move(layout)), dim_(dim), device_(device), dev_(new Device) {
  PYL_CHECK(dim_ <= kMaxDim, "CANN on the GPU takes descriptors of up to ", kMaxDim, " dimensions, got ", dim_,
            ": search on the CPU (device='cpu')");
  UseDevice(device_);
  const cann::IvfLayout& L = *layout_;
  dev_->blocks = dev_->mem.Upload(L.rows.blocks.data(), static_cast<int64_t>(L.rows.blocks.size()));
  dev_->norms = dev_->mem.Upload(L.rows.norms.data(), static_cast<int64_t>(L.rows.norms.size()));
  dev_->slot_image = dev_->mem.Upload(L.slot_image.data(), static_cast<int64_t>(L.slot_image.size()));
  dev_->list_block = dev_->mem.Upload(L.list_block.data(), static_cast<int64_t>(L.list_block.size()));
}

CannIvf::~CannIvf() = default;

void CannIvf::Search(const float* queries, int64_t nq, int64_t k, const CannKernel& kernel, int64_t nprobe,
                     float* scores, int64_t* image_ids) const {
  PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
  PYL_CHECK(nprobe >= 1, "nprobe must be >= 1, got ", nprobe);
  kernel.Validate();
  cann::CheckQueries(queries, nq, dim_);
  const cann::IvfLayout& L = *layout_;
  const int64_t num_images = static_cast<int64_t>(L.images.size());
  const int64_t nlist = static_cast<int64_t>(L.list_block.size()) - 1;
  const int64_t np = std::min(nprobe, nlist);
  std::vector<double> total(static_cast<size_t>(num_images), 0.0);
  if (nq > 0 && num_images > 0) {
    UseDevice(device_);
    const std::vector<float> qnorm = knn::SquaredNorms(queries, nq, dim_);
    const float cut2 = static_cast<float>(kernel.Cutoff() * kernel.Cutoff());
    const int64_t batch = RowsPerBatch(num_images * 4 + dim_ * 4 + np * 28, nq);
    DeviceMemory scratch;
    float* q = scratch.Alloc<float>(batch * dim_);
    float* qn = scratch.Alloc<float>(batch);
    float* minima = scratch.Alloc<float>(batch * num_images);
    int32_t* q_index = scratch.Alloc<int32_t>(batch * np);
    WorkItem* work = scratch.Alloc<WorkItem>(batch * np);
    double* totals = scratch.Upload(total.data(), num_images);
    const size_t shared = static_cast<size_t>(kQueriesPerBlock * dim_) * sizeof(float);
    const bool bytes = L.rows.element == knn::Element::kUInt8;
    if (bytes) {
      Check(cudaFuncSetAttribute(ScanKernel<uint8_t>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(shared)),
            "cudaFuncSetAttribute");
    } else {
      Check(cudaFuncSetAttribute(ScanKernel<float>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(shared)),
            "cudaFuncSetAttribute");
    }
    std::vector<int64_t> probes;
    for (int64_t b0 = 0; b0 < nq; b0 += batch) {
      InterruptPoint();  // Ctrl-C between batches
      const int64_t nb = std::min(batch, nq - b0);
      probes.resize(static_cast<size_t>(nb * np));
      L.quantizer.Assign(queries + b0 * dim_, nb, np, probes.data(), nullptr, GetNumThreads());
      // The batch's query features grouped by list (ascending within a list), cut into work items.
      std::vector<int64_t> start(static_cast<size_t>(nlist + 1), 0);
      for (int64_t p : probes) ++start[static_cast<size_t>(p + 1)];
      for (int64_t l = 0; l < nlist; ++l) start[static_cast<size_t>(l + 1)] += start[static_cast<size_t>(l)];
      std::vector<int32_t> by_list(probes.size());
      std::vector<int64_t> fill(start.begin(), start.end() - 1);
      for (int64_t i = 0; i < nb * np; ++i) {
        by_list[static_cast<size_t>(fill[static_cast<size_t>(probes[static_cast<size_t>(i)])]++)] =
            static_cast<int32_t>(i / np);
      }
      std::vector<WorkItem> items;
      for (int64_t l = 0; l < nlist; ++l) {
        for (int64_t f = start[static_cast<size_t>(l)]; f < start[static_cast<size_t>(l + 1)]; f += kQueriesPerBlock) {
          const int64_t count = std::min<int64_t>(kQueriesPerBlock, start[static_cast<size_t>(l + 1)] - f);
          items.push_back({l, f, static_cast<int32_t>(count)});
        }
      }
      Check(cudaMemcpy(q, queries + b0 * dim_, static_cast<size_t>(nb * dim_) * 4, cudaMemcpyHostToDevice), "upload");
      Check(cudaMemcpy(qn, qnorm.data() + b0, static_cast<size_t>(nb) * 4, cudaMemcpyHostToDevice), "upload");
      Check(cudaMemcpy(q_index, by_list.data(), by_list.size() * 4, cudaMemcpyHostToDevice), "upload");
      Check(cudaMemcpy(work, items.data(), items.size() * sizeof(WorkItem), cudaMemcpyHostToDevice), "upload");
      FillKernel<<<static_cast<unsigned>(CeilDiv(nb * num_images, 256)), 256>>>(minima, nb * num_images,
                                                                                PadKey<float>());
      CheckLaunch("FillKernel");
      if (!items.empty()) {
        const unsigned grid = static_cast<unsigned>(items.size());
        if (bytes) {
          ScanKernel<uint8_t><<<grid, kThreads, shared>>>(work, q_index, static_cast<const uint8_t*>(dev_->blocks),
                                                          dev_->norms, dev_->slot_image, dev_->list_block, q, qn, dim_,
                                                          cut2, num_images, minima);
        } else {
          ScanKernel<float><<<grid, kThreads, shared>>>(work, q_index, static_cast<const float*>(dev_->blocks),
                                                        dev_->norms, dev_->slot_image, dev_->list_block, q, qn, dim_,
                                                        cut2, num_images, minima);
        }
        CheckLaunch("ScanKernel");
      }
      SumKernel<<<static_cast<unsigned>(CeilDiv(num_images, 256)), 256>>>(
          minima, nb, num_images, static_cast<int>(kernel.type), kernel.p0, kernel.p1, kernel.sigma, totals);
      CheckLaunch("SumKernel");
    }
    Download(total.data(), totals, num_images);
  }
  cann::TopImages(total, L.images, nq, k, scores, image_ids);
}

}  // namespace gpu
}  // namespace pylocalize
