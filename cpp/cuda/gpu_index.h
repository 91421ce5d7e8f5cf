// Device copies of the core's indexes, searched by the CUDA kernels of this folder. Plain
// C++ (no CUDA header), so the bindings include it; defined only in a build with
// -DPYLOCALIZE_CUDA=ON (PYLOCALIZE_WITH_CUDA).
//
// Each device index is built from a CPU index's contents and never changes: the Python face
// (pylocalize/index) builds one on the first search on the GPU and drops it when the CPU
// index changes. The database lives in device memory; queries are streamed through it in
// batches sized to the free memory, so any number of queries fits. Results are those of the
// CPU index, bit for bit (device_logic.h says how), ties to the smaller id.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "pylocalize/cann/scoring.h"
#include "pylocalize/hamming/code_store.h"

namespace pylocalize {
namespace cann {
struct ExactLayout;
struct IvfLayout;
}  // namespace cann

namespace gpu {

#ifdef PYLOCALIZE_WITH_CUDA

// CUDA devices usable now: 0 without a driver or a device.
int DeviceCount();

// Binary codes for exact Hamming k-NN and range search (BinaryIndex's results).
class BinaryCodes {
 public:
  // codes: n x nbits/8 bytes (padding bits beyond nbits zero), ids: n.
  BinaryCodes(const uint8_t* codes, const int64_t* ids, int64_t n, int64_t nbits, int device);
  ~BinaryCodes();
  int64_t ntotal() const { return n_; }
  void Search(const uint8_t* queries, int64_t nq, int64_t k, int32_t* distances, int64_t* ids) const;
  hamming::RangeResult RangeSearch(const uint8_t* queries, int64_t nq, int32_t radius) const;

 private:
  int64_t n_, nbits_, words_;
  int device_;
  std::vector<int64_t> ids_;
  struct Device;  // its device memory (defined in its .cu file)
  std::unique_ptr<Device> dev_;
};

// Multi-bit codes for SDC k-NN (MultiBitIndex's results without re-ranking).
class SdcCodes {
 public:
  // words: n rows of bits_per_dim * words_per_plane words (MultiBitIndex::ExportRows);
  // inv_norms: n; a, b: the score's constants (MultiBitIndex::SdcConstants).
  SdcCodes(const uint64_t* words, const int64_t* ids, const float* inv_norms, int64_t n, int bits_per_dim,
           int64_t words_per_plane, float a, float b, int device);
  ~SdcCodes();
  // MultiBitIndex::KeyScan: the k best codes by SDC key, ascending, with their ids (or
  // positions when by_position), padded with (+inf, -1); sign_bounds (nq, or nullptr): the
  // progressive search's strict bounds on sign-plane distances. query_words: nq rows of
  // bits_per_dim * words_per_plane words.
  void SearchKeys(const uint64_t* query_words, int64_t nq, int64_t k, const int32_t* sign_bounds, bool by_position,
                  float* keys, int64_t* labels) const;

 private:
  int64_t n_;
  int bits_;
  int64_t wp_;
  float a_, b_;
  int device_;
  struct Device;  // its device memory (defined in its .cu file)
  std::unique_ptr<Device> dev_;
};

// Float or uint8 rows for exact L2 or inner-product k-NN: knn::AssignNearestM's results
// (labels and squared distances) for "l2", the largest inner products for "ip".
class FloatRows {
 public:
  // rows: n x dim of float32 (element_size 4) or uint8 (1).
  FloatRows(const void* rows, int element_size, int64_t n, int64_t dim, int device);
  ~FloatRows();
  // x: nq x dim float32 (uint8 rows: queries given as their float values). l2: distances
  // ascending; ip: inner products descending; ties to the smaller row.
  void Search(const float* x, int64_t nq, int64_t k, bool inner_product, float* distances, int64_t* labels) const;

 private:
  int64_t n_, dim_;
  int element_size_;
  int device_;
  std::vector<float> norms_;
  struct Device;  // its device memory (defined in its .cu file)
  std::unique_ptr<Device> dev_;
};

// CANN method exact on the exact layout of a CannIndex (CannIndex::ExactLayout()).
class CannExact {
 public:
  CannExact(std::shared_ptr<const cann::ExactLayout> layout, int64_t dim, int device);
  ~CannExact();
  // The layout this copy was made from (the Python face rebuilds when the index's changes).
  const cann::ExactLayout* layout() const { return layout_.get(); }
  // CannIndex::Search with method exact: queries nq x dim float32, finite.
  void Search(const float* queries, int64_t nq, int64_t k, const CannKernel& kernel, float* scores,
              int64_t* image_ids) const;

 private:
  std::shared_ptr<const cann::ExactLayout> layout_;
  int64_t dim_;
  int device_;
  struct Device;  // its device memory (defined in its .cu file)
  std::unique_ptr<Device> dev_;
};

// CANN method ivf on the ivf layout of a trained CannIndex (CannIndex::GetIvfLayout()): the
// lists a query feature probes are found on the CPU (the layout's coarse quantizer); the lists
// are scanned, and the kernel summed, on the device. Scores are CannIndex's with one thread
// (with more, the CPU adds its threads' partial sums in the order they finish).
class CannIvf {
 public:
  CannIvf(std::shared_ptr<const cann::IvfLayout> layout, int64_t dim, int device);
  ~CannIvf();
  const cann::IvfLayout* layout() const { return layout_.get(); }
  void Search(const float* queries, int64_t nq, int64_t k, const CannKernel& kernel, int64_t nprobe, float* scores,
              int64_t* image_ids) const;

 private:
  std::shared_ptr<const cann::IvfLayout> layout_;
  int64_t dim_;
  int device_;
  struct Device;
  std::unique_ptr<Device> dev_;
};

#endif  // PYLOCALIZE_WITH_CUDA

}  // namespace gpu
}  // namespace pylocalize
