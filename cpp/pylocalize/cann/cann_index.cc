#include "pylocalize/cann/cann_index.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_set>

#include "pylocalize/cann/layouts.h"
#include "pylocalize/util/check.h"
#include "pylocalize/util/cpu.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace {

// Centroids a file gives: a NaN or Inf would make every list distance meaningless.
void CheckFiniteCentroids(const float* c, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    PYL_CHECK_FORMAT(std::isfinite(c[i]), "CANNIndex centroid value ", i, " is ", c[i], " (corrupt)");
  }
}

constexpr const char* kTag = "CANNIndex";
// Layout version in the meta "layout": 1 (no key): insertion-order rows, and the ivf
// centroids once trained. 2: a trained index stores its ivf layout (blocks, norms, lists,
// slot images and each feature's slot) instead of the rows; an untrained one as layout 1.
constexpr int64_t kLayout = 2;

// The search options in the metadata (key, value): doubles as their IEEE-754 bits, the
// grid seed (uint64) as its two's-complement int64. A file without "search_method" was
// written before the options were stored.
void WriteSearchOptions(const CannSearchOptions& o, ContainerWriter* w) {
  w->SetMeta("search_method", static_cast<int64_t>(o.params.method));
  w->SetMeta("search_nprobe", o.params.nprobe);
  w->SetMeta("kernel", static_cast<int64_t>(o.params.kernel.type));
  w->SetMeta("kernel_p0", DoubleBits(o.params.kernel.p0));
  w->SetMeta("kernel_p1", DoubleBits(o.params.kernel.p1));
  w->SetMeta("kernel_sigma", DoubleBits(o.params.kernel.sigma));
  w->SetMeta("grid_num_grids", o.grid.num_grids);
  w->SetMeta("grid_num_radii", o.grid.num_radii);
  w->SetMeta("grid_dims", o.grid.dims);
  w->SetMeta("grid_cell_factor", DoubleBits(o.grid.cell_factor));
  w->SetMeta("grid_max_bin", o.grid.max_bin);
  w->SetMeta("grid_seed", static_cast<int64_t>(o.grid.seed));
}

// An int-typed option read from int64 metadata: range-checked before the narrowing cast,
// so that 2^32 + 1 cannot wrap around to a valid 1.
int SmallMeta(const Container& c, const char* key, int64_t lo, int64_t hi) {
  const int64_t v = c.Meta(key);
  PYL_CHECK_FORMAT(v >= lo && v <= hi, "CANNIndex file has ", key, " = ", v, ", outside ", lo, "..", hi, " (corrupt)");
  return static_cast<int>(v);
}

std::optional<CannSearchOptions> ReadSearchOptions(const Container& c) {
  if (c.meta().count("search_method") == 0) return std::nullopt;
  CannSearchOptions o;
  o.params.method = static_cast<CannMethod>(SmallMeta(c, "search_method", 0, 2));
  o.params.nprobe = c.Meta("search_nprobe");
  o.params.kernel.type = static_cast<CannKernelType>(SmallMeta(c, "kernel", 0, 1));
  o.params.kernel.p0 = BitsDouble(c.Meta("kernel_p0"));
  o.params.kernel.p1 = BitsDouble(c.Meta("kernel_p1"));
  o.params.kernel.sigma = BitsDouble(c.Meta("kernel_sigma"));
  o.grid.num_grids = SmallMeta(c, "grid_num_grids", 1, cann::kMaxGridsPerRadius);
  o.grid.num_radii = SmallMeta(c, "grid_num_radii", 1, cann::kMaxRadii);
  o.grid.dims = SmallMeta(c, "grid_dims", 1, cann::kMaxGridDims);
  o.grid.cell_factor = BitsDouble(c.Meta("grid_cell_factor"));
  o.grid.max_bin = c.Meta("grid_max_bin");
  o.grid.seed = static_cast<uint64_t>(c.Meta("grid_seed"));
  try {
    o.Validate();
  } catch (const std::invalid_argument& e) {
    PYL_CHECK_FORMAT(false, "CANNIndex file has invalid search options (corrupt): ", e.what());
  }
  return o;
}

}  // namespace

void cann::CheckQueries(const float* queries, int64_t nq, int64_t dim) {
  for (int64_t i = 0; i < nq * dim; ++i) {
    PYL_CHECK(std::isfinite(queries[i]), "query descriptors contain NaN or Inf");
  }
}

CannMethod CannMethodFromName(const std::string& name) {
  if (name == "exact") return CannMethod::kExact;
  if (name == "ivf") return CannMethod::kIvf;
  PYL_CHECK(name == "grid", "method must be 'exact', 'ivf' or 'grid', got '", name, "'");
  return CannMethod::kGrid;
}

const char* CannMethodName(CannMethod method) {
  switch (method) {
    case CannMethod::kExact: return "exact";
    case CannMethod::kIvf: return "ivf";
    case CannMethod::kGrid: return "grid";
  }
  return "?";
}

void CannSearchParams::Validate() const {
  PYL_CHECK(method == CannMethod::kExact || method == CannMethod::kIvf || method == CannMethod::kGrid,
            "unknown CANN method ", static_cast<int>(method));
  PYL_CHECK(nprobe >= 1 || method != CannMethod::kIvf, "nprobe must be >= 1, got ", nprobe);
  kernel.Validate();
}

void CannSearchOptions::Validate() const {
  params.Validate();
  // Stored nprobe applies whenever the method changes to ivf later: check it whatever the method.
  PYL_CHECK(params.nprobe >= 1, "nprobe must be >= 1, got ", params.nprobe);
  cann::ValidateGridParams(grid, cann::kMaxGridDims);
}

CannIndex::CannIndex(int64_t dim) : dim_(dim) {
  PYL_CHECK(dim > 0 && dim <= kMaxDim, "dim must be in 1..", kMaxDim, ", got ", dim);
}

size_t CannIndex::ElementSize() const { return element_ == static_cast<int>(knn::Element::kUInt8) ? 1 : 4; }

int64_t CannIndex::ntotal() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return ntotal_locked();
}

int64_t CannIndex::ntotal_locked() const {
  if (loaded_layout_ != nullptr) return static_cast<int64_t>(loaded_layout_->feature_slot.size());
  return static_cast<int64_t>(image_ids_.size());
}

bool CannIndex::has_element() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return element_ >= 0;
}

knn::Element CannIndex::element() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return static_cast<knn::Element>(std::max(element_, 0));
}

int64_t CannIndex::num_images() const { return static_cast<int64_t>(ImageIds().size()); }

std::vector<int64_t> CannIndex::ImageIds() const {
  // From the ids directly: counting images should not build a search layout.
  std::vector<int64_t> ids;
  {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    if (loaded_layout_ != nullptr) return loaded_layout_->images;  // distinct and ascending already
    ids = image_ids_;
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

std::vector<int64_t> CannIndex::ImageFeatureCounts() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  if (loaded_layout_ != nullptr) {  // a mapped index counts its slots: it has no insertion-order ids
    const cann::IvfLayout& L = *loaded_layout_;
    std::vector<int64_t> counts(L.images.size(), 0);
    for (size_t s = 0; s < L.slot_image.size(); ++s) {
      if (L.slot_image[s] >= 0) ++counts[static_cast<size_t>(L.slot_image[s])];
    }
    return counts;
  }
  std::vector<int64_t> ids = image_ids_;
  lock.unlock();
  std::sort(ids.begin(), ids.end());
  std::vector<int64_t> counts;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i == 0 || ids[i] != ids[i - 1]) counts.push_back(0);
    ++counts.back();
  }
  return counts;
}

void CannIndex::Add(const void* descriptors, knn::Element element, const int64_t* image_ids, int64_t n) {
  if (n <= 0) return;
  for (int64_t i = 0; i < n; ++i) {
    // -1 pads search results: a stored negative id would read as "no result".
    PYL_CHECK(image_ids[i] >= 0, "image_ids must be >= 0 (-1 marks empty result slots), got ", image_ids[i],
              " at position ", i, "; renumber the images to non-negative ids");
  }
  std::unique_lock<std::shared_mutex> lock(mutex_);
  MaterializeLocked();
  if (element_ < 0) element_ = static_cast<int>(element);
  PYL_CHECK(element_ == static_cast<int>(element), "this index holds ", element_ == 0 ? "float32" : "uint8",
            " descriptors: convert with .astype(np.", element_ == 0 ? "float32" : "uint8", ")");
  if (element == knn::Element::kFloat32) {
    const float* f = static_cast<const float*>(descriptors);
    for (int64_t i = 0; i < n * dim_; ++i) {
      PYL_CHECK(std::isfinite(f[i]), "descriptors contain NaN or Inf (row ", i / dim_, "); clean them before adding");
    }
  }
  const size_t bytes = static_cast<size_t>(n * dim_) * ElementSize();
  const auto* p = static_cast<const uint8_t*>(descriptors);
  rows_.insert(rows_.end(), p, p + bytes);
  image_ids_.insert(image_ids_.end(), image_ids, image_ids + n);
  DropLayouts();
}

int64_t CannIndex::RemoveImages(const int64_t* ids, int64_t n) {
  std::unordered_set<int64_t> drop(ids, ids + n);
  std::unique_lock<std::shared_mutex> lock(mutex_);
  MaterializeLocked();
  const size_t row = static_cast<size_t>(dim_) * ElementSize();
  size_t out = 0;
  int64_t removed = 0;
  for (size_t i = 0; i < image_ids_.size(); ++i) {
    if (drop.count(image_ids_[i])) {
      ++removed;
      continue;
    }
    if (out != i) {
      image_ids_[out] = image_ids_[i];
      std::memmove(rows_.data() + out * row, rows_.data() + i * row, row);
    }
    ++out;
  }
  image_ids_.resize(out);
  rows_.resize(out * row);
  DropLayouts();
  return removed;  // features removed
}

void CannIndex::Reset() {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  loaded_layout_.reset();  // nothing to keep: no copy needed
  rows_.clear();
  image_ids_.clear();
  centroids_.clear();
  element_ = -1;
  DropLayouts();
}

void CannIndex::ReadFeatures(Features* out) const {
  if (loaded_layout_ == nullptr) {
    out->rows = rows_.data();
    out->image_ids = &image_ids_;
    return;
  }
  // A const search (exact, grid) on a loaded index: recovered into a temporary, so that the
  // index itself keeps one copy of the features (in the file) until something changes it.
  cann::IvfInsertionOrder(*loaded_layout_, &out->recovered_rows, &out->recovered_ids);
  out->rows = out->recovered_rows.data();
  out->image_ids = &out->recovered_ids;
}

void CannIndex::MaterializeLocked() {
  if (loaded_layout_ == nullptr) return;
  // Copy-on-write: a change needs the insertion-order rows it edits, and must not write
  // into the file's pages (mapped read-only) that searches in flight may still be reading.
  std::vector<uint8_t> rows;
  std::vector<int64_t> ids;
  cann::IvfInsertionOrder(*loaded_layout_, &rows, &ids);
  rows_ = std::move(rows);
  image_ids_ = std::move(ids);
  loaded_layout_.reset();
}

std::vector<float> CannIndex::FloatRows(const Features& f) const {
  std::vector<float> out(f.image_ids->size() * static_cast<size_t>(dim_));
  if (element_ == static_cast<int>(knn::Element::kUInt8)) {
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(f.rows[i]);
  } else if (!out.empty()) {
    std::memcpy(out.data(), f.rows, out.size() * sizeof(float));
  }
  return out;
}

void CannIndex::DropLayouts() {
  std::lock_guard<std::mutex> guard(layout_mutex_);
  exact_layout_.reset();
  ivf_layout_.reset();
  grid_layout_.reset();
}

std::shared_ptr<const cann::ExactLayout> CannIndex::GetExactLayout() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  std::lock_guard<std::mutex> guard(layout_mutex_);
  if (exact_layout_ == nullptr) {
    Features f;
    ReadFeatures(&f);
    exact_layout_ = std::make_shared<const cann::ExactLayout>(
        cann::BuildExactLayout(f.rows, static_cast<knn::Element>(std::max(element_, 0)), dim_, *f.image_ids));
  }
  return exact_layout_;
}

std::shared_ptr<const cann::IvfLayout> CannIndex::GetIvfLayout(int num_threads) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  PYL_CHECK(!centroids_.empty(), "the ivf method needs train() first");
  return IvfLayoutLocked(num_threads);
}

std::shared_ptr<const cann::IvfLayout> CannIndex::IvfLayoutLocked(int num_threads) const {
  std::lock_guard<std::mutex> guard(layout_mutex_);
  if (ivf_layout_ == nullptr && loaded_layout_ != nullptr) ivf_layout_ = loaded_layout_;
  if (ivf_layout_ == nullptr) {
    ivf_layout_ = std::make_shared<const cann::IvfLayout>(cann::BuildIvfLayout(
        rows_.data(), static_cast<knn::Element>(std::max(element_, 0)), dim_, image_ids_, centroids_, num_threads));
  }
  return ivf_layout_;
}

void CannIndex::SetGridParams(const cann::GridParams& params, double r_max) {
  cann::ValidateGridParams(params, dim_);
  PYL_CHECK(r_max > 0, "grid r_max must be > 0, got ", r_max);
  std::unique_lock<std::shared_mutex> lock(mutex_);
  // Refused here too (not only when the grids are built at the first search), so the
  // error comes from the call that chose the parameters.
  cann::CheckGridMemory(params, ntotal_locked(), dim_);
  grid_params_ = params;
  grid_r_max_ = r_max;
  std::lock_guard<std::mutex> guard(layout_mutex_);
  grid_layout_.reset();
}

std::shared_ptr<const cann::GridLayout> CannIndex::GetGridLayout(int num_threads) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  PYL_CHECK(grid_r_max_ > 0, "the grid method needs its parameters first (set_grid_params)");
  std::lock_guard<std::mutex> guard(layout_mutex_);
  if (grid_layout_ == nullptr) {
    Features f;
    ReadFeatures(&f);
    grid_layout_ = std::make_shared<const cann::GridLayout>(
        cann::BuildGridLayout(FloatRows(f), dim_, *f.image_ids, grid_r_max_, grid_params_, num_threads));
  }
  return grid_layout_;
}

int64_t CannIndex::MemoryBytes() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  std::lock_guard<std::mutex> guard(layout_mutex_);
  int64_t bytes =
      static_cast<int64_t>(rows_.size() + image_ids_.size() * sizeof(int64_t) + centroids_.size() * sizeof(float));
  if (exact_layout_ != nullptr) bytes += exact_layout_->HeapBytes();
  if (ivf_layout_ != nullptr) {
    // A layout read without mmap borrows the heap buffer the file was read into.
    bytes +=
        ivf_layout_->HeapBytes() + (ivf_layout_ == loaded_layout_ && !file_mapped_ ? ivf_layout_->MappedBytes() : 0);
  }
  if (grid_layout_ != nullptr) bytes += grid_layout_->HeapBytes();
  return bytes;
}

int64_t CannIndex::MappedBytes() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return loaded_layout_ != nullptr && file_mapped_ ? loaded_layout_->MappedBytes() : 0;
}

int64_t CannIndex::GridMemoryBytes() const {
  std::lock_guard<std::mutex> guard(layout_mutex_);
  return grid_layout_ != nullptr ? grid_layout_->grids.MemoryBytes() : 0;
}

CannIndex::Snapshot CannIndex::TakeSnapshot(CannMethod method, int num_threads) const {
  Snapshot snapshot;
  if (method == CannMethod::kExact) snapshot.exact = GetExactLayout();
  if (method == CannMethod::kIvf) snapshot.ivf = GetIvfLayout(num_threads);
  if (method == CannMethod::kGrid) snapshot.grid = GetGridLayout(num_threads);
  return snapshot;
}

void CannIndex::SearchIn(const Snapshot& snapshot, const CannSearchParams& params, const float* queries, int64_t nq,
                         int64_t k, float* scores, int64_t* image_ids, int num_threads) const {
  switch (params.method) {
    case CannMethod::kExact:
      cann::SearchExact(*snapshot.exact, dim_, queries, nq, k, params.kernel, scores, image_ids, num_threads);
      break;
    case CannMethod::kIvf:
      cann::SearchIvf(*snapshot.ivf, dim_, queries, nq, k, params.kernel, params.nprobe, scores, image_ids,
                      num_threads);
      break;
    case CannMethod::kGrid:
      cann::SearchGrid(*snapshot.grid, dim_, queries, nq, k, params.kernel, scores, image_ids, num_threads);
      break;
  }
}

void CannIndex::Search(const CannSearchParams& params, const float* queries, int64_t nq, int64_t k, float* scores,
                       int64_t* image_ids, int num_threads) const {
  PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
  params.Validate();
  cann::CheckQueries(queries, nq, dim_);
  const int threads = num_threads > 0 ? num_threads : GetNumThreads();
  SearchIn(TakeSnapshot(params.method, threads), params, queries, nq, k, scores, image_ids, threads);
}

void CannIndex::SearchBatch(const CannSearchParams& params, const std::vector<const float*>& queries,
                            const std::vector<int64_t>& nq, int64_t k, float* scores, int64_t* image_ids,
                            int num_threads) const {
  PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
  params.Validate();
  PYL_CHECK(queries.size() == nq.size(), "one feature count per query image");
  const int64_t n = static_cast<int64_t>(queries.size());
  for (int64_t i = 0; i < n; ++i) {
    try {
      cann::CheckQueries(queries[static_cast<size_t>(i)], nq[static_cast<size_t>(i)], dim_);
    } catch (const std::invalid_argument& e) {
      PYL_CHECK(false, "query set ", i, ": ", e.what());
    }
  }
  if (n == 0) return;
  const int threads = num_threads > 0 ? num_threads : GetNumThreads();
  // One snapshot of the index for the whole batch: a change made meanwhile by another
  // thread is seen by every query image or by none.
  const Snapshot snapshot = TakeSnapshot(params.method, threads);
  auto one = [&](int64_t i, int search_threads) {
    SearchIn(snapshot, params, queries[static_cast<size_t>(i)], nq[static_cast<size_t>(i)], k, scores + i * k,
             image_ids + i * k, search_threads);
  };
  if (n >= threads) {
    // Many query images: one per thread, each searched single-threaded.
    ParallelFor(n, threads, [&](int64_t i, int) { one(i, 1); });
  } else {
    for (int64_t i = 0; i < n; ++i) one(i, threads);
  }
}

void CannIndex::SetSearchOptions(const CannSearchOptions& options) {
  options.Validate();
  std::unique_lock<std::shared_mutex> lock(mutex_);
  search_options_ = options;
}

std::optional<CannSearchOptions> CannIndex::search_options() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return search_options_;
}

ContainerWriter CannIndex::Writer(std::shared_ptr<const cann::IvfLayout>* keep) const {
  ContainerWriter w(kTag);
  w.SetMeta("layout", kLayout);
  w.SetMeta("dim", dim_);
  w.SetMeta("element", element_);
  const int64_t n = ntotal_locked();
  w.SetMeta("ntotal", n);
  const DType dtype = element_ == static_cast<int>(knn::Element::kUInt8) ? DType::kUInt8 : DType::kFloat32;
  if (search_options_.has_value()) WriteSearchOptions(*search_options_, &w);
  if (centroids_.empty()) {
    w.AddSection("descriptors", dtype, {n, dim_}, rows_.data());
    w.AddSection("image_ids", DType::kInt64, {n}, image_ids_.data());
    return w;
  }
  // Trained: the ivf layout instead of the insertion-order rows, so that a load searches
  // without rebuilding it and the file holds one copy of the descriptors.
  *keep = IvfLayoutLocked(GetNumThreads());
  const cann::IvfLayout& L = **keep;
  const int64_t num_slots = static_cast<int64_t>(L.rows.norms.size());
  w.SetMeta("ivf_block", knn::kBlock);
  w.AddSection("centroids", DType::kFloat32, {static_cast<int64_t>(centroids_.size()) / dim_, dim_}, centroids_.data());
  w.AddSection("ivf_blocks", dtype, {num_slots, dim_}, L.rows.blocks.data());
  w.AddSection("ivf_norms", DType::kFloat32, {num_slots}, L.rows.norms.data());
  w.AddSection("ivf_list_block", DType::kInt64, {static_cast<int64_t>(L.list_block.size())}, L.list_block.data());
  w.AddSection("ivf_slot_image", DType::kInt32, {num_slots}, L.slot_image.data());
  w.AddSection("ivf_images", DType::kInt64, {static_cast<int64_t>(L.images.size())}, L.images.data());
  w.AddSection("ivf_feature_slot", DType::kInt64, {n}, L.feature_slot.data());
  return w;
}

void CannIndex::Save(const std::string& path) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  std::shared_ptr<const cann::IvfLayout> keep;
  Writer(&keep).WriteFile(path);
}

std::vector<uint8_t> CannIndex::Serialize() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  std::shared_ptr<const cann::IvfLayout> keep;
  return Writer(&keep).ToBytes();
}

// A layout-2 file of a trained index: its ivf layout, borrowed from the container's bytes
// (a mapping or the buffer the file was read into), so nothing is copied or rebuilt.
void CannIndex::ReadIvfLayout(const Container& c, int64_t n) {
  PYL_CHECK_FORMAT(c.Meta("ivf_block") == knn::kBlock, "CANNIndex file has ivf blocks of ", c.Meta("ivf_block"),
                   " features, this pylocalize uses ", knn::kBlock, ": rebuild the index");
  const ArrayView& cv = c.Section("centroids", DType::kFloat32);
  PYL_CHECK_FORMAT(cv.shape.size() == 2 && cv.shape[1] == dim_ && cv.shape[0] >= 1,
                   "CANNIndex centroids do not match dim (corrupt)");
  const auto* cp = reinterpret_cast<const float*>(cv.data);
  CheckFiniteCentroids(cp, cv.size());
  centroids_.assign(cp, cp + cv.size());
  const knn::Element element = static_cast<knn::Element>(element_);
  const std::shared_ptr<const void> owner = c.owner();
  auto L = std::make_shared<cann::IvfLayout>();
  L->quantizer = knn::CoarseQuantizer(centroids_, dim_);
  L->rows.element = element;
  L->rows.dim = dim_;
  const ArrayView& blocks = c.Section("ivf_blocks", element == knn::Element::kUInt8 ? DType::kUInt8 : DType::kFloat32);
  L->rows.blocks = ConstArray<uint8_t>(blocks.data, blocks.nbytes, owner);
  const ArrayView& norms = c.Section("ivf_norms", DType::kFloat32);
  L->rows.norms = ConstArray<float>(reinterpret_cast<const float*>(norms.data), norms.size(), owner);
  const ArrayView& lb = c.Section("ivf_list_block", DType::kInt64);
  L->list_block.assign(reinterpret_cast<const int64_t*>(lb.data),
                       reinterpret_cast<const int64_t*>(lb.data) + lb.size());
  const ArrayView& si = c.Section("ivf_slot_image", DType::kInt32);
  L->slot_image = ConstArray<int32_t>(reinterpret_cast<const int32_t*>(si.data), si.size(), owner);
  const ArrayView& im = c.Section("ivf_images", DType::kInt64);
  L->images.assign(reinterpret_cast<const int64_t*>(im.data), reinterpret_cast<const int64_t*>(im.data) + im.size());
  const ArrayView& fs = c.Section("ivf_feature_slot", DType::kInt64);
  L->feature_slot = ConstArray<int64_t>(reinterpret_cast<const int64_t*>(fs.data), fs.size(), owner);
  cann::ValidateIvfLayout(*L, n, dim_);
  loaded_layout_ = L;
  ivf_layout_ = L;
  file_mapped_ = c.mapped();
}

std::unique_ptr<CannIndex> CannIndex::FromContainer(const Container& c) {
  c.ExpectTag(kTag);
  // Files written before the layout key are layout 1 (insertion-order rows only).
  const int64_t layout = c.meta().count("layout") ? c.Meta("layout") : 1;
  PYL_CHECK_FORMAT(layout == 1 || layout == kLayout, "CANNIndex file of layout version ", layout,
                   "; this pylocalize reads layouts 1 and ", kLayout,
                   " (a newer pylocalize wrote it, or it is corrupt)");
  const int64_t dim = c.Meta("dim"), element = c.Meta("element"), n = c.Meta("ntotal");
  PYL_CHECK_FORMAT(dim > 0 && dim <= kMaxDim && element >= -1 && element <= 1 && n >= 0,
                   "CANNIndex file has invalid dim, element or ntotal (corrupt)");
  auto index = std::make_unique<CannIndex>(dim);
  index->element_ = static_cast<int>(element);
  index->search_options_ = ReadSearchOptions(c);
  if (element < 0) {
    PYL_CHECK_FORMAT(n == 0, "CANNIndex file has features but no element type (corrupt)");
    return index;
  }
  if (layout == kLayout && c.HasSection("ivf_feature_slot")) {
    index->ReadIvfLayout(c, n);
    return index;
  }
  const ArrayView& d = c.Section("descriptors", element == 1 ? DType::kUInt8 : DType::kFloat32);
  const ArrayView& ids = c.Section("image_ids", DType::kInt64);
  PYL_CHECK_FORMAT(d.size() == n * dim && ids.size() == n, "CANNIndex file sections do not match ntotal (corrupt)");
  index->rows_.assign(d.data, d.data + d.nbytes);
  const auto* ip = reinterpret_cast<const int64_t*>(ids.data);
  for (int64_t i = 0; i < n; ++i) {
    // -1 pads results: a stored negative id would read as "no image" (never written by Add).
    PYL_CHECK_FORMAT(ip[i] >= 0, "CANNIndex file has image id ", ip[i], " (negative: corrupt)");
  }
  index->image_ids_.assign(ip, ip + n);
  if (c.HasSection("centroids")) {  // layout 1: trained lists without their layout
    const ArrayView& cv = c.Section("centroids", DType::kFloat32);
    PYL_CHECK_FORMAT(cv.shape.size() == 2 && cv.shape[1] == dim && cv.shape[0] >= 1,
                     "CANNIndex centroids do not match dim (corrupt)");
    const auto* cp = reinterpret_cast<const float*>(cv.data);
    CheckFiniteCentroids(cp, cv.size());
    index->centroids_.assign(cp, cp + cv.size());
  }
  return index;
}

std::unique_ptr<CannIndex> CannIndex::Load(const std::string& path, bool mmap) {
  return FromContainer(Container::FromFile(path, mmap));
}

std::unique_ptr<CannIndex> CannIndex::Deserialize(std::vector<uint8_t> bytes) {
  return FromContainer(Container::FromBytes(std::move(bytes)));
}

}  // namespace pylocalize
