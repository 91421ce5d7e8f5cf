// What every CUDA file of the core shares: error checks that throw the core's exceptions,
// device memory owned by an index or a search, and the size of query batches.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

namespace pylocalize {
namespace gpu {

// Throws for a failed CUDA call: MemoryError (std::bad_alloc) when the device is out of
// memory, RuntimeError otherwise, naming the call.
inline void Check(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  cudaGetLastError();  // clear the sticky error of a failed launch or allocation
  if (status == cudaErrorMemoryAllocation) throw std::bad_alloc();
  throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
}

// Checks the launch just made and waits for it, so a kernel's fault surfaces at its call.
inline void CheckLaunch(const char* kernel) {
  Check(cudaGetLastError(), kernel);
  Check(cudaDeviceSynchronize(), kernel);
}

// Device buffers freed together: an index's database, or one search's scratch.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  ~DeviceMemory() {
    for (void* p : buffers_) cudaFree(p);
  }

  template <class T>
  T* Alloc(int64_t n) {
    void* p = nullptr;
    Check(cudaMalloc(&p, static_cast<size_t>(n > 0 ? n : 1) * sizeof(T)), "cudaMalloc");
    buffers_.push_back(p);
    return static_cast<T*>(p);
  }
  template <class T>
  T* Upload(const T* host, int64_t n) {
    T* d = Alloc<T>(n);
    if (n > 0) Check(cudaMemcpy(d, host, static_cast<size_t>(n) * sizeof(T), cudaMemcpyHostToDevice), "upload");
    return d;
  }

 private:
  std::vector<void*> buffers_;
};

template <class T>
void Download(T* host, const T* device, int64_t n) {
  if (n > 0) Check(cudaMemcpy(host, device, static_cast<size_t>(n) * sizeof(T), cudaMemcpyDeviceToHost), "download");
}

// Makes `device` current for the calling thread (CUDA keeps the current device per thread).
inline void UseDevice(int device) { Check(cudaSetDevice(device), "cudaSetDevice"); }

// How many query rows a batch takes when each costs bytes_per_row of scratch: a quarter of
// the free device memory (at most 1 GiB), so that queries of any number stream through.
// PYLOCALIZE_CUDA_BATCH_BYTES lowers the budget (at least one row a batch): tests use it to
// run many batches.
inline int64_t RowsPerBatch(int64_t bytes_per_row, int64_t max_rows) {
  size_t free_bytes = 0, total_bytes = 0;
  Check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  int64_t budget = std::min<int64_t>(static_cast<int64_t>(free_bytes / 4), int64_t{1} << 30);
  const char* cap = std::getenv("PYLOCALIZE_CUDA_BATCH_BYTES");
  int64_t rows = budget / std::max<int64_t>(bytes_per_row, 1);
  if (cap != nullptr && *cap != '\0') {
    budget = std::min<int64_t>(budget, std::max<long long>(std::atoll(cap), 0));
    rows = std::max<int64_t>(1, budget / std::max<int64_t>(bytes_per_row, 1));
  }
  if (rows < 1) throw std::bad_alloc();
  return std::min(rows, std::max<int64_t>(max_rows, 1));
}

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace gpu
}  // namespace pylocalize
