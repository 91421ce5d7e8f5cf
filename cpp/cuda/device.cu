// The device runtime as the core sees it: how many CUDA devices are usable.
#include "cuda/device.cuh"
#include "cuda/gpu_index.h"

namespace pylocalize {
namespace gpu {

int DeviceCount() {
  int n = 0;
  // No driver, no device, or a driver older than this build's runtime: no usable device.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace gpu
}  // namespace pylocalize
