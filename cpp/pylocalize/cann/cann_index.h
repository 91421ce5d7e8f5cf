// Constrained (colored) nearest-neighbour image retrieval over local features: CANN, after
// Aiger, Araujo, Lynen, "Yes, we CANN: Constrained Approximate Nearest Neighbors for local
// feature-based visual localization", ICCV 2023.
//
// Every database feature carries a descriptor and a "colour", the id of the image that saw
// it. For a query image with features Q, database image m scores
//   S(m) = (1 / |Q|) sum_q s(d(q, m)),
// d(q, m) the L2 distance from q to the nearest feature of m and s a decreasing kernel, so
// an image ranks high when many query features find a close match inside that one image:
// appearance and the single-camera constraint at once, with no global descriptor.
//
// Features are kept in insertion order (the source of truth, saved to files) and, for
// search, in a layout grouped by image and blocked for the knn kernels, rebuilt lazily
// after a change. The exact method computes every distance with the blocked SIMD dot
// kernels, takes per-(query feature, image) minima and sums the kernel.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "pylocalize/cann/grid.h"
#include "pylocalize/knn/kernels.h"
#include "pylocalize/util/format.h"

namespace pylocalize {

enum class CannKernelType : int { kCann = 0, kGaussian = 1 };
enum class CannMethod : int { kExact = 0, kIvf = 1, kGrid = 2 };

// s(r). kCann: max(0, 1 - (r/p0)^(p1/(1-p1)))^((1-p1)/p1), zero beyond p0 (the paper's,
// p0 = 120, p1 = 0.4592 for SIFT-scale descriptors). kGaussian: exp(-r^2 / (2 sigma^2)).
struct CannKernel {
  CannKernelType type = CannKernelType::kCann;
  double p0 = 120.0;
  double p1 = 0.4592;
  double sigma = 60.0;
  void Validate() const;
  double operator()(double r) const;
  // Distance beyond which s(r) is 0 (or negligible, < 1e-12, for the Gaussian).
  double Cutoff() const;
};

class CannIndex {
 public:
  // Largest dim: what the file format's loader accepts, so every index saves and loads.
  static constexpr int64_t kMaxDim = int64_t{1} << 20;

  explicit CannIndex(int64_t dim);

  int64_t dim() const { return dim_; }
  int64_t ntotal() const;
  int64_t num_images() const;
  // Element type of the stored descriptors, fixed by the first add.
  bool has_element() const;
  knn::Element element() const;

  // descriptors: n x dim of `element`; image_ids: n.
  void Add(const void* descriptors, knn::Element element, const int64_t* image_ids, int64_t n);
  int64_t RemoveImages(const int64_t* image_ids, int64_t n);
  void Reset();
  std::vector<int64_t> ImageIds() const;  // the distinct image ids, ascending

  // Exact S(m) of one query feature set (nq x dim float32), best k images: scores
  // descending, ties to the smaller image id, padded with (-inf, -1).
  void SearchExact(const float* queries, int64_t nq, int64_t k, const CannKernel& kernel,
                   float* scores, int64_t* image_ids, int num_threads) const;

  // Approximate search through an inverted file over features (method "ivf"): k-means
  // lists, each holding its features grouped by image; a query feature probes its `nprobe`
  // nearest lists, distances there are exact, and only pairs within the kernel's cutoff
  // count. Train() clusters the stored features into nlist lists (once; later adds are
  // assigned to the trained lists).
  void Train(int64_t nlist, int iterations, uint64_t seed, int64_t max_points_per_list,
             int num_threads);
  bool is_trained() const;
  int64_t nlist() const;
  void SearchIvf(const float* queries, int64_t nq, int64_t k, const CannKernel& kernel,
                 int64_t nprobe, float* scores, int64_t* image_ids, int num_threads) const;

  // The paper's random-grids colored range search (method "grid"): grids for a geometric
  // schedule of radii up to `r_max` (normally the kernel's cutoff), built lazily on the
  // current features with these parameters.
  void SetGridParams(const cann::GridParams& params, double r_max);
  void SearchGrid(const float* queries, int64_t nq, int64_t k, const CannKernel& kernel,
                  float* scores, int64_t* image_ids, int num_threads) const;
  int64_t GridMemoryBytes() const;

  // Many query images (queries[i]: nq[i] x dim float32) by one method, against one
  // snapshot of the index; scores and image_ids are n x k. Many images run one per
  // thread, a few each on every thread.
  void SearchBatch(CannMethod method, const std::vector<const float*>& queries,
                   const std::vector<int64_t>& nq, int64_t k, const CannKernel& kernel,
                   int64_t nprobe, float* scores, int64_t* image_ids, int num_threads) const;
  // Bytes held now: stored features and ids, and every search layout built so far.
  int64_t MemoryBytes() const;

  void Save(const std::string& path) const;
  static std::unique_ptr<CannIndex> Load(const std::string& path);
  std::vector<uint8_t> Serialize() const;
  static std::unique_ptr<CannIndex> Deserialize(std::vector<uint8_t> bytes);

 private:
  struct Layout;     // the grouped, blocked search layout
  struct IvfLayout;  // features by (list, image), blocked per list
  struct GridLayout;  // random grids over the features, insertion order
  std::shared_ptr<const GridLayout> GetGridLayout(int num_threads) const;
  std::shared_ptr<const Layout> GetLayout() const;
  std::shared_ptr<const IvfLayout> GetIvfLayout(int num_threads) const;
  // The searches on a given snapshot (the public ones take the current one).
  void SearchExactIn(const Layout& L, const float* queries, int64_t nq, int64_t k,
                     const CannKernel& kernel, float* scores, int64_t* image_ids, int num_threads) const;
  void SearchIvfIn(const IvfLayout& L, const float* queries, int64_t nq, int64_t k,
                   const CannKernel& kernel, int64_t nprobe, float* scores, int64_t* image_ids,
                   int num_threads) const;
  void SearchGridIn(const GridLayout& L, const float* queries, int64_t nq, int64_t k,
                    const CannKernel& kernel, float* scores, int64_t* image_ids, int num_threads) const;
  // Rows as float32 (widened from uint8), insertion order.
  std::vector<float> FloatRows() const;
  void TopImages(const std::vector<double>& total, const std::vector<int64_t>& images,
                 int64_t nq, int64_t k, float* scores, int64_t* out_ids) const;
  ContainerWriter Writer() const;
  static std::unique_ptr<CannIndex> FromContainer(const Container& c);
  size_t ElementSize() const;

  int64_t dim_;
  int element_ = -1;               // knn::Element, -1 before the first add
  std::vector<uint8_t> rows_;      // insertion order, n x dim elements
  std::vector<int64_t> image_ids_; // n
  std::vector<float> centroids_;   // nlist x dim once trained
  mutable std::shared_ptr<const Layout> layout_;  // null when stale
  mutable std::shared_ptr<const IvfLayout> ivf_layout_;
  cann::GridParams grid_params_;
  double grid_r_max_ = 0.0;  // 0: no grid configured
  mutable std::shared_ptr<const GridLayout> grid_layout_;
  mutable std::mutex layout_mutex_;
  mutable std::shared_mutex mutex_;
};

}  // namespace pylocalize
