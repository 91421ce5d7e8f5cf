// CannPqIndex's files (cann_pq.h): the lists packed into one section per field, read back
// in place from a memory-mapped file. Every size and index is checked against the others
// before the search may trust it: a bad image index would read outside the image table.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>

#include "pylocalize/cann/cann_pq.h"
#include "pylocalize/util/check.h"

namespace pylocalize {
namespace {

constexpr const char* kTag = "CANNPQIndex";

// Packed arrays made by Pack(): what PackedLists::owner keeps alive for an index built in memory.
struct PackedStorage {
  std::vector<uint8_t> codes;
  std::vector<int32_t> images;
  std::vector<float> norm_terms;
};

void CheckFiniteSection(const float* x, int64_t n, const char* what) {
  for (int64_t i = 0; i < n; ++i)
    PYL_CHECK_FORMAT(std::isfinite(x[i]), "CANNPQIndex file has non-finite ", what, " (corrupt)");
}

std::optional<CannPqSearchOptions> ReadSearchOptions(const Container& c) {
  if (c.meta().count("search_nprobe") == 0) return std::nullopt;
  CannPqSearchOptions o;
  o.nprobe = c.Meta("search_nprobe");
  const int64_t kernel = c.Meta("kernel");
  PYL_CHECK_FORMAT(kernel == 0 || kernel == 1, "CANNPQIndex file has kernel = ", kernel, " (corrupt)");
  o.kernel.type = static_cast<CannKernelType>(kernel);
  o.kernel.p0 = BitsDouble(c.Meta("kernel_p0"));
  o.kernel.p1 = BitsDouble(c.Meta("kernel_p1"));
  o.kernel.sigma = BitsDouble(c.Meta("kernel_sigma"));
  try {
    o.Validate();
  } catch (const std::invalid_argument& e) {
    PYL_CHECK_FORMAT(false, "CANNPQIndex file has invalid search options (corrupt): ", e.what());
  }
  return o;
}

}  // namespace

void CannPqIndex::Pack() {
  if (packed_.has_value()) return;
  auto storage = std::make_shared<PackedStorage>();
  storage->codes.reserve(static_cast<size_t>(ntotal_ * m_));
  storage->images.reserve(static_cast<size_t>(ntotal_));
  if (by_residual_) storage->norm_terms.reserve(static_cast<size_t>(ntotal_));
  PackedLists p;
  p.offsets.assign(1, 0);
  for (OwnedList& l : owned_) {
    storage->codes.insert(storage->codes.end(), l.codes.begin(), l.codes.end());
    storage->images.insert(storage->images.end(), l.images.begin(), l.images.end());
    storage->norm_terms.insert(storage->norm_terms.end(), l.norm_terms.begin(), l.norm_terms.end());
    p.offsets.push_back(p.offsets.back() + static_cast<int64_t>(l.images.size()));
    l = OwnedList{};  // frees the list: the peak is one copy of the codes plus a list
  }
  owned_.clear();
  p.codes = storage->codes.data();
  p.images = storage->images.data();
  p.norm_terms = by_residual_ ? storage->norm_terms.data() : nullptr;
  p.owner = std::move(storage);
  packed_ = std::move(p);
}

void CannPqIndex::Unpack() {
  const int64_t nlist = quantizer_.size();
  owned_.assign(static_cast<size_t>(nlist), OwnedList{});
  for (int64_t l = 0; l < nlist; ++l) {
    const ListView v = View(l);
    OwnedList& o = owned_[static_cast<size_t>(l)];
    o.codes.assign(v.codes, v.codes + v.size * m_);
    o.images.assign(v.images, v.images + v.size);
    if (by_residual_) o.norm_terms.assign(v.norm_terms, v.norm_terms + v.size);
  }
  packed_.reset();
}

ContainerWriter CannPqIndex::Writer() const {
  ContainerWriter w(kTag);
  const int64_t nlist = quantizer_.size();
  w.SetMeta("dim", dim_);
  w.SetMeta("m", m_);
  w.SetMeta("by_residual", by_residual_ ? 1 : 0);
  w.SetMeta("nlist", nlist);
  w.SetMeta("ntotal", ntotal_);
  w.SetMeta("num_images", static_cast<int64_t>(images_.size()));
  if (search_options_.has_value()) {
    const CannKernel& k = search_options_->kernel;
    w.SetMeta("search_nprobe", search_options_->nprobe);
    w.SetMeta("kernel", static_cast<int64_t>(k.type));
    w.SetMeta("kernel_p0", DoubleBits(k.p0));
    w.SetMeta("kernel_p1", DoubleBits(k.p1));
    w.SetMeta("kernel_sigma", DoubleBits(k.sigma));
  }
  w.AddSection("images", DType::kInt64, {static_cast<int64_t>(images_.size())}, images_.data());
  if (nlist == 0) return w;
  w.SetMeta("quantization_error", DoubleBits(quantization_error_));
  w.AddSection("centroids", DType::kFloat32, {nlist, dim_}, quantizer_.centroids().data());
  w.AddSection("codebooks", DType::kFloat32, {m_, pq::kCentroids, pq_.dsub()}, pq_.codebooks().data());
  w.AddSection("list_offsets", DType::kInt64, {nlist + 1}, packed_->offsets.data());
  w.AddSection("codes", DType::kUInt8, {ntotal_, m_}, packed_->codes);
  w.AddSection("feature_images", DType::kInt32, {ntotal_}, packed_->images);
  if (by_residual_) w.AddSection("norm_terms", DType::kFloat32, {ntotal_}, packed_->norm_terms);
  return w;
}

void CannPqIndex::Save(const std::string& path) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (quantizer_.size() > 0) Pack();
  Writer().WriteFile(path);
}

std::vector<uint8_t> CannPqIndex::Serialize() {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (quantizer_.size() > 0) Pack();
  return Writer().ToBytes();
}

std::unique_ptr<CannPqIndex> CannPqIndex::FromContainer(const Container& c) {
  c.ExpectTag(kTag);
  const int64_t dim = c.Meta("dim"), m = c.Meta("m"), residual = c.Meta("by_residual"), nlist = c.Meta("nlist");
  const int64_t n = c.Meta("ntotal"), num_images = c.Meta("num_images");
  PYL_CHECK_FORMAT(dim >= 1 && dim <= kMaxDim && m >= 1 && m <= dim && dim % m == 0 && (residual == 0 || residual == 1),
                   "CANNPQIndex file has invalid dim, m or by_residual (corrupt)");
  PYL_CHECK_FORMAT(nlist >= 0 && n >= 0 && num_images >= 0 && num_images <= INT32_MAX && (nlist > 0 || n == 0),
                   "CANNPQIndex file has invalid nlist, ntotal or num_images (corrupt)");
  auto index = std::make_unique<CannPqIndex>(dim, m, residual == 1);
  index->search_options_ = ReadSearchOptions(c);
  const ArrayView& images = c.Section("images", DType::kInt64);
  PYL_CHECK_FORMAT(images.size() == num_images, "CANNPQIndex images do not match num_images (corrupt)");
  const auto* ip = reinterpret_cast<const int64_t*>(images.data);
  for (int64_t i = 0; i < num_images; ++i) {
    PYL_CHECK_FORMAT(ip[i] >= 0, "CANNPQIndex file has image id ", ip[i], " (negative: corrupt)");
    PYL_CHECK_FORMAT(index->image_slot_.emplace(ip[i], static_cast<int32_t>(i)).second,
                     "CANNPQIndex file has image id ", ip[i], " twice (corrupt)");
  }
  index->images_.assign(ip, ip + num_images);
  if (nlist == 0) return index;
  const ArrayView& cv = c.Section("centroids", DType::kFloat32);
  const ArrayView& bv = c.Section("codebooks", DType::kFloat32);
  PYL_CHECK_FORMAT(
      cv.shape == std::vector<int64_t>({nlist, dim}) && bv.shape == std::vector<int64_t>({m, pq::kCentroids, dim / m}),
      "CANNPQIndex centroids or codebooks do not match nlist, dim and m (corrupt)");
  CheckFiniteSection(reinterpret_cast<const float*>(cv.data), cv.size(), "centroids");
  CheckFiniteSection(reinterpret_cast<const float*>(bv.data), bv.size(), "codebooks");
  const auto* cp = reinterpret_cast<const float*>(cv.data);
  index->quantizer_ = knn::CoarseQuantizer(std::vector<float>(cp, cp + cv.size()), index->dim_);
  index->quantization_error_ = BitsDouble(c.Meta("quantization_error"));
  PYL_CHECK_FORMAT(std::isfinite(index->quantization_error_) && index->quantization_error_ >= 0,
                   "CANNPQIndex file has quantization_error ", index->quantization_error_, " (corrupt)");
  index->pq_.SetCodebooks(reinterpret_cast<const float*>(bv.data));
  index->ReadLists(c, n);
  return index;
}

// The packed lists of a file: views into the container's bytes, which `owner` keeps alive.
void CannPqIndex::ReadLists(const Container& c, int64_t n) {
  const int64_t nlist = quantizer_.size();
  const ArrayView& ov = c.Section("list_offsets", DType::kInt64);
  const ArrayView& codes = c.Section("codes", DType::kUInt8);
  const ArrayView& fi = c.Section("feature_images", DType::kInt32);
  PYL_CHECK_FORMAT(ov.size() == nlist + 1 && codes.shape == std::vector<int64_t>({n, m_}) && fi.size() == n,
                   "CANNPQIndex list sections do not match nlist, ntotal and m (corrupt)");
  PackedLists p;
  const auto* op = reinterpret_cast<const int64_t*>(ov.data);
  p.offsets.assign(op, op + nlist + 1);
  PYL_CHECK_FORMAT(p.offsets.front() == 0 && p.offsets.back() == n,
                   "CANNPQIndex list offsets do not span ntotal (corrupt)");
  for (int64_t l = 0; l < nlist; ++l) {
    PYL_CHECK_FORMAT(p.offsets[static_cast<size_t>(l)] <= p.offsets[static_cast<size_t>(l + 1)],
                     "CANNPQIndex list offsets decrease (corrupt)");
  }
  p.images = reinterpret_cast<const int32_t*>(fi.data);
  const int64_t num_images = static_cast<int64_t>(images_.size());
  for (int64_t i = 0; i < n; ++i) {
    PYL_CHECK_FORMAT(p.images[i] >= 0 && p.images[i] < num_images, "CANNPQIndex file has image index ", p.images[i],
                     " outside 0..", num_images - 1, " (corrupt)");
  }
  if (by_residual_) {
    const ArrayView& tv = c.Section("norm_terms", DType::kFloat32);
    PYL_CHECK_FORMAT(tv.size() == n, "CANNPQIndex norm terms do not match ntotal (corrupt)");
    p.norm_terms = reinterpret_cast<const float*>(tv.data);
    CheckFiniteSection(p.norm_terms, n, "norm terms");
  }
  p.codes = codes.data;
  p.owner = c.owner();
  packed_ = std::move(p);
  ntotal_ = n;
}

std::unique_ptr<CannPqIndex> CannPqIndex::Load(const std::string& path, bool mmap) {
  return FromContainer(Container::FromFile(path, mmap));
}

std::unique_ptr<CannPqIndex> CannPqIndex::Deserialize(std::vector<uint8_t> bytes) {
  return FromContainer(Container::FromBytes(std::move(bytes)));
}

}  // namespace pylocalize
