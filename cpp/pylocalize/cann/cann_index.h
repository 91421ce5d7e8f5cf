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
// Features are kept in insertion order (the source of truth) and, for search, in one
// layout per method (layouts.h), built lazily on a snapshot of the features and dropped
// after a change. A trained index saves its ivf layout instead of the insertion-order rows
// (one copy of the descriptors on disk, layout version 2); loading such a file borrows the
// layout from the file, memory-mapped or read, without rebuilding it, and the insertion
// order is recovered from the layout only when a change, or another method, needs it. Each method is its own file, as
// faiss splits IndexFlat and IndexIVFFlat: cann_exact.cc computes every distance with the blocked SIMD dot kernels,
// cann_ivf.cc probes an inverted file, cann_grid.cc looks up random grids (grid.h). They
// share the blocked layout builder (blocked_rows.h) and the scoring (scoring.h).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "pylocalize/cann/grid.h"
#include "pylocalize/cann/scoring.h"
#include "pylocalize/knn/kernels.h"
#include "pylocalize/util/format.h"

namespace pylocalize {

enum class CannMethod : int { kExact = 0, kIvf = 1, kGrid = 2 };

// "exact", "ivf", "grid": the names Python and files' callers use. Throws
// std::invalid_argument naming the choices for any other name.
CannMethod CannMethodFromName(const std::string& name);
const char* CannMethodName(CannMethod method);

// What one search needs besides the queries: the method and the score kernel.
struct CannSearchParams {
  CannMethod method = CannMethod::kExact;
  CannKernel kernel;
  int64_t nprobe = 16;  // lists probed per query feature, method kIvf
  void Validate() const;
};

// The search options saved with an index, so a loaded index searches as the saved one did
// (pylocalize.CANNIndex's method, nprobe, kernel and grid). Files written before they were
// stored have none.
struct CannSearchOptions {
  CannSearchParams params;
  // As chosen: dims may exceed the index's dim (the grids are built with min(dims, dim)),
  // up to cann::kMaxGridDims.
  cann::GridParams grid;
  void Validate() const;
};

namespace cann {
// Refuses (ValueError) query descriptors with a NaN or Inf: they would score every image 0
// (or NaN) without a sign. queries: nq x dim.
void CheckQueries(const float* queries, int64_t nq, int64_t dim);

struct ExactLayout;
struct IvfLayout;
struct GridLayout;
}  // namespace cann

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
  // The features of each of ImageIds(), in the same order (how shards are balanced).
  std::vector<int64_t> ImageFeatureCounts() const;

  // S(m) of one query image's features (queries: nq x dim float32, finite), best k
  // images: scores descending, ties to the smaller image id, padded with (-inf, -1).
  // Checks every argument (k >= 1, the kernel, nprobe for kIvf, finite queries) and needs
  // Train() before kIvf and SetGridParams() before kGrid. num_threads < 1: GetNumThreads().
  void Search(const CannSearchParams& params, const float* queries, int64_t nq, int64_t k, float* scores,
              int64_t* image_ids, int num_threads) const;

  // Many query images (queries[i]: nq[i] x dim float32) by one method, against one
  // snapshot of the index; scores and image_ids are n x k. Many images run one per
  // thread, a few each on every thread.
  void SearchBatch(const CannSearchParams& params, const std::vector<const float*>& queries,
                   const std::vector<int64_t>& nq, int64_t k, float* scores, int64_t* image_ids, int num_threads) const;

  // Approximate search through an inverted file over features (method "ivf"): k-means
  // lists, each holding its features grouped by image; a query feature probes its `nprobe`
  // nearest lists, distances there are exact, and only pairs within the kernel's cutoff
  // count. Train() clusters the stored features into nlist lists (once; later adds are
  // assigned to the trained lists).
  void Train(int64_t nlist, int iterations, uint64_t seed, int64_t max_points_per_list, int num_threads);
  bool is_trained() const;
  int64_t nlist() const;

  // The paper's random-grids colored range search (method "grid"): grids for a geometric
  // schedule of radii up to `r_max` (normally the kernel's cutoff), built lazily on the
  // current features with these parameters.
  void SetGridParams(const cann::GridParams& params, double r_max);
  int64_t GridMemoryBytes() const;

  // The search options Save() and Serialize() write, and Load() / Deserialize() read
  // (none until set, or from a file written before they were stored).
  void SetSearchOptions(const CannSearchOptions& options);
  std::optional<CannSearchOptions> search_options() const;

  // The exact method's layout of the current features (built on first use, shared by the
  // searches until a change): what a device copy uploads (cpp/cuda). A new pointer means the
  // index changed.
  std::shared_ptr<const cann::ExactLayout> GetExactLayout() const;
  // The same for the ivf method's layout (needs Train()).
  std::shared_ptr<const cann::IvfLayout> GetIvfLayout(int num_threads) const;

  // Heap bytes held now: stored features and ids, and every search layout built so far
  // (a layout read into memory by Load(mmap=false) or Deserialize included). Bytes of a
  // memory-mapped file are not counted here: the kernel pages them in and out as searches
  // touch them; MappedBytes() counts them.
  int64_t MemoryBytes() const;
  int64_t MappedBytes() const;

  void Save(const std::string& path) const;
  // mmap: the layout of a trained index stays in the mapped file (zero copy); every
  // section's CRC is checked either way.
  static std::unique_ptr<CannIndex> Load(const std::string& path, bool mmap = false);
  std::vector<uint8_t> Serialize() const;
  static std::unique_ptr<CannIndex> Deserialize(std::vector<uint8_t> bytes);

 private:
  // The layouts of one snapshot of the index: only the searched method's is set.
  struct Snapshot {
    std::shared_ptr<const cann::ExactLayout> exact;
    std::shared_ptr<const cann::IvfLayout> ivf;
    std::shared_ptr<const cann::GridLayout> grid;
  };
  Snapshot TakeSnapshot(CannMethod method, int num_threads) const;
  std::shared_ptr<const cann::IvfLayout> IvfLayoutLocked(int num_threads) const;  // mutex_ held
  std::shared_ptr<const cann::GridLayout> GetGridLayout(int num_threads) const;
  // One query image on a snapshot, arguments already checked.
  void SearchIn(const Snapshot& snapshot, const CannSearchParams& params, const float* queries, int64_t nq, int64_t k,
                float* scores, int64_t* image_ids, int num_threads) const;
  // The features in insertion order: rows_ and image_ids_, or a copy recovered from
  // loaded_layout_ while the index holds them only there. Needs mutex_ held.
  struct Features {
    const uint8_t* rows = nullptr;
    const std::vector<int64_t>* image_ids = nullptr;
    std::vector<uint8_t> recovered_rows;
    std::vector<int64_t> recovered_ids;
  };
  void ReadFeatures(Features* out) const;
  // Copy-on-write before a change: recovers rows_ and image_ids_ from loaded_layout_ and
  // lets go of it. Needs mutex_ held exclusively.
  void MaterializeLocked();
  // The rows of `f` as float32 (widened from uint8).
  std::vector<float> FloatRows(const Features& f) const;
  void DropLayouts();  // after a change; needs mutex_ held exclusively
  // The writer of this index (mutex_ held); *keep holds the ivf layout it points into.
  ContainerWriter Writer(std::shared_ptr<const cann::IvfLayout>* keep) const;
  static std::unique_ptr<CannIndex> FromContainer(const Container& c);
  void ReadIvfLayout(const Container& c, int64_t n);
  size_t ElementSize() const;
  int64_t ntotal_locked() const;  // mutex_ held

  int64_t dim_;
  int element_ = -1;                // knn::Element, -1 before the first add
  std::vector<uint8_t> rows_;       // insertion order, n x dim elements (empty while loaded_layout_)
  std::vector<int64_t> image_ids_;  // n (empty while loaded_layout_)
  // The ivf layout read from a file, which then holds the features instead of rows_ and
  // image_ids_ (so that a loaded index holds one copy of them, often in a mapped file); null
  // after the first change. Guarded by mutex_; also ivf_layout_ while set.
  std::shared_ptr<const cann::IvfLayout> loaded_layout_;
  bool file_mapped_ = false;      // loaded_layout_ borrows a mapped file, not a heap buffer
  std::vector<float> centroids_;  // nlist x dim once trained
  std::optional<CannSearchOptions> search_options_;
  // The layouts: null until a search needs one, and after a change.
  mutable std::shared_ptr<const cann::ExactLayout> exact_layout_;
  mutable std::shared_ptr<const cann::IvfLayout> ivf_layout_;
  cann::GridParams grid_params_;
  double grid_r_max_ = 0.0;  // 0: no grid configured
  mutable std::shared_ptr<const cann::GridLayout> grid_layout_;
  mutable std::mutex layout_mutex_;
  mutable std::shared_mutex mutex_;
};

}  // namespace pylocalize
