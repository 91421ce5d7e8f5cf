#include "pylocalize/cann/cann_index.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <unordered_set>

#include "pylocalize/util/check.h"
#include "pylocalize/util/cpu.h"
#include "pylocalize/util/threads.h"
#include "pylocalize/util/topk.h"

namespace pylocalize {
namespace {

constexpr const char* kTag = "CANNIndex";
constexpr int64_t kChunkFeatures = 4096;  // features per task: a tile that stays in L2
constexpr int64_t kQueryGroup = 32;

}  // namespace

void CannKernel::Validate() const {
  if (type == CannKernelType::kCann) {
    PYL_CHECK(p0 > 0, "kernel p0 must be > 0, got ", p0);
    PYL_CHECK(p1 > 0 && p1 < 1, "kernel p1 must be in (0, 1), got ", p1);
  } else {
    PYL_CHECK(sigma > 0, "kernel sigma must be > 0, got ", sigma);
  }
}

double CannKernel::operator()(double r) const {
  if (type == CannKernelType::kGaussian) return std::exp(-r * r / (2.0 * sigma * sigma));
  if (r >= p0) return 0.0;
  const double a = p1 / (1.0 - p1);
  return std::pow(1.0 - std::pow(r / p0, a), 1.0 / a);
}

double CannKernel::Cutoff() const {
  if (type == CannKernelType::kCann) return p0;
  return sigma * std::sqrt(2.0 * std::log(1e12));
}

// Features grouped by image (stable), in knn blocks, with squared norms.
struct CannIndex::Layout {
  knn::Element element;
  int64_t n = 0;
  std::vector<uint8_t> blocks;      // ceil(n/16) blocks of dim * 16 elements
  std::vector<float> norms;         // ||x||^2, grouped order
  std::vector<int64_t> images;      // distinct image ids, ascending
  std::vector<int64_t> offsets;     // features of images[i]: [offsets[i], offsets[i+1])
};

CannIndex::CannIndex(int64_t dim) : dim_(dim) {
  PYL_CHECK(dim > 0, "dim must be >= 1, got ", dim);
}

size_t CannIndex::ElementSize() const {
  return element_ == static_cast<int>(knn::Element::kUInt8) ? 1 : 4;
}

int64_t CannIndex::ntotal() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
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

int64_t CannIndex::num_images() const { return static_cast<int64_t>(GetLayout()->images.size()); }

std::vector<int64_t> CannIndex::ImageIds() const { return GetLayout()->images; }

void CannIndex::Add(const void* descriptors, knn::Element element, const int64_t* image_ids,
                    int64_t n) {
  if (n <= 0) return;
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (element_ < 0) element_ = static_cast<int>(element);
  PYL_CHECK(element_ == static_cast<int>(element), "this index holds ",
            element_ == 0 ? "float32" : "uint8", " descriptors: convert with .astype(np.",
            element_ == 0 ? "float32" : "uint8", ")");
  if (element == knn::Element::kFloat32) {
    const float* f = static_cast<const float*>(descriptors);
    for (int64_t i = 0; i < n * dim_; ++i) {
      PYL_CHECK(std::isfinite(f[i]), "descriptors contain NaN or Inf (row ", i / dim_,
                "); clean them before adding");
    }
  }
  const size_t bytes = static_cast<size_t>(n * dim_) * ElementSize();
  const auto* p = static_cast<const uint8_t*>(descriptors);
  rows_.insert(rows_.end(), p, p + bytes);
  image_ids_.insert(image_ids_.end(), image_ids, image_ids + n);
  std::lock_guard<std::mutex> guard(layout_mutex_);
  layout_.reset();
}

int64_t CannIndex::RemoveImages(const int64_t* ids, int64_t n) {
  std::unordered_set<int64_t> drop(ids, ids + n);
  std::unique_lock<std::shared_mutex> lock(mutex_);
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
  std::lock_guard<std::mutex> guard(layout_mutex_);
  layout_.reset();
  return removed;  // features removed
}

void CannIndex::Reset() {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  rows_.clear();
  image_ids_.clear();
  element_ = -1;
  std::lock_guard<std::mutex> guard(layout_mutex_);
  layout_.reset();
}

std::shared_ptr<const CannIndex::Layout> CannIndex::GetLayout() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  std::lock_guard<std::mutex> guard(layout_mutex_);
  if (layout_ != nullptr) return layout_;
  auto L = std::make_shared<Layout>();
  const int64_t n = static_cast<int64_t>(image_ids_.size());
  L->element = static_cast<knn::Element>(std::max(element_, 0));
  L->n = n;
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return image_ids_[a] < image_ids_[b]; });
  const size_t es = ElementSize();
  const int64_t nblocks = (n + knn::kBlock - 1) / knn::kBlock;
  L->blocks.assign(static_cast<size_t>(nblocks * dim_ * knn::kBlock) * es, 0);
  L->norms.assign(static_cast<size_t>(nblocks * knn::kBlock), 0.0f);
  for (int64_t pos = 0; pos < n; ++pos) {
    const int64_t src = order[static_cast<size_t>(pos)];
    const uint8_t* row = rows_.data() + static_cast<size_t>(src * dim_) * es;
    const int64_t b = pos / knn::kBlock, lane = pos % knn::kBlock;
    double norm = 0.0;
    for (int64_t k = 0; k < dim_; ++k) {
      const size_t dst = static_cast<size_t>((b * dim_ + k) * knn::kBlock + lane) * es;
      std::memcpy(L->blocks.data() + dst, row + k * es, es);
      const double v = es == 1 ? static_cast<double>(row[k])
                               : static_cast<double>(reinterpret_cast<const float*>(row)[k]);
      norm += v * v;
    }
    L->norms[static_cast<size_t>(pos)] = static_cast<float>(norm);
    const int64_t id = image_ids_[static_cast<size_t>(src)];
    if (L->images.empty() || L->images.back() != id) {
      L->images.push_back(id);
      L->offsets.push_back(pos);
    }
  }
  L->offsets.push_back(n);
  layout_ = L;
  return layout_;
}

void CannIndex::SearchExact(const float* queries, int64_t nq, int64_t k, const CannKernel& kernel,
                            float* scores, int64_t* out_ids, int num_threads) const {
  PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
  kernel.Validate();
  const std::shared_ptr<const Layout> L = GetLayout();
  const int64_t num_images = static_cast<int64_t>(L->images.size());
  std::vector<double> total(static_cast<size_t>(num_images), 0.0);
  if (nq > 0 && num_images > 0) {
    std::vector<float> qnorm(static_cast<size_t>(nq));
    for (int64_t q = 0; q < nq; ++q) {
      double s = 0.0;
      for (int64_t d = 0; d < dim_; ++d) s += static_cast<double>(queries[q * dim_ + d]) * queries[q * dim_ + d];
      qnorm[static_cast<size_t>(q)] = static_cast<float>(s);
    }
    // Chunks of whole images, so each image's score has a single writer.
    std::vector<int64_t> chunk_start{0};
    for (int64_t i = 0; i < num_images; ++i) {
      if (L->offsets[static_cast<size_t>(i + 1)] - L->offsets[static_cast<size_t>(chunk_start.back())] >= kChunkFeatures) {
        chunk_start.push_back(i + 1);
      }
    }
    if (chunk_start.back() != num_images) chunk_start.push_back(num_images);
    const int64_t nchunks = static_cast<int64_t>(chunk_start.size()) - 1;
    const knn::DotKernel dot = knn::GetDotKernel(ActiveSimdLevel());
    const size_t es = L->element == knn::Element::kUInt8 ? 1 : 4;
    ParallelFor(nchunks, num_threads, [&](int64_t c, int) {
      const int64_t i0 = chunk_start[static_cast<size_t>(c)], i1 = chunk_start[static_cast<size_t>(c + 1)];
      const int64_t f0 = L->offsets[static_cast<size_t>(i0)], f1 = L->offsets[static_cast<size_t>(i1)];
      const int64_t b0 = f0 / knn::kBlock, b1 = (f1 + knn::kBlock - 1) / knn::kBlock;
      const int64_t ld = (b1 - b0) * knn::kBlock;
      std::vector<float> tile(static_cast<size_t>(kQueryGroup * ld));
      for (int64_t g = 0; g < nq; g += kQueryGroup) {
        InterruptPoint();
        const int64_t ng = std::min(kQueryGroup, nq - g);
        knn::DotArgs a;
        a.queries = queries + g * dim_;
        a.nq = ng;
        a.dim = dim_;
        a.blocks = L->blocks.data() + static_cast<size_t>(b0 * dim_ * knn::kBlock) * es;
        a.element = L->element;
        a.nblocks = b1 - b0;
        a.out = tile.data();
        a.ld = ld;
        dot(a);
        for (int64_t j = 0; j < ng; ++j) {
          const float* row = tile.data() + j * ld;
          const float qn = qnorm[static_cast<size_t>(g + j)];
          for (int64_t i = i0; i < i1; ++i) {
            float best = std::numeric_limits<float>::infinity();
            for (int64_t f = L->offsets[static_cast<size_t>(i)]; f < L->offsets[static_cast<size_t>(i + 1)]; ++f) {
              best = std::min(best, L->norms[static_cast<size_t>(f)] - 2.0f * row[f - b0 * knn::kBlock]);
            }
            const double r = std::sqrt(std::max(0.0, static_cast<double>(best) + qn));
            total[static_cast<size_t>(i)] += kernel(r);
          }
        }
      }
    });
  }
  TopK<float> top(k);  // smallest first: rank by -S
  for (int64_t i = 0; i < num_images; ++i) {
    top.Push(-static_cast<float>(total[static_cast<size_t>(i)] / static_cast<double>(std::max<int64_t>(nq, 1))),
             L->images[static_cast<size_t>(i)]);
  }
  top.Extract(scores, out_ids, std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < k; ++i) scores[i] = -scores[i];
}

ContainerWriter CannIndex::Writer() const {
  ContainerWriter w(kTag);
  w.SetMeta("dim", dim_);
  w.SetMeta("element", element_);
  w.SetMeta("ntotal", static_cast<int64_t>(image_ids_.size()));
  const int64_t n = static_cast<int64_t>(image_ids_.size());
  w.AddSection("descriptors", element_ == static_cast<int>(knn::Element::kUInt8) ? DType::kUInt8 : DType::kFloat32,
               {n, dim_}, rows_.data());
  w.AddSection("image_ids", DType::kInt64, {n}, image_ids_.data());
  return w;
}

void CannIndex::Save(const std::string& path) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  Writer().WriteFile(path);
}

std::vector<uint8_t> CannIndex::Serialize() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return Writer().ToBytes();
}

std::unique_ptr<CannIndex> CannIndex::FromContainer(const Container& c) {
  c.ExpectTag(kTag);
  const int64_t dim = c.Meta("dim"), element = c.Meta("element"), n = c.Meta("ntotal");
  PYL_CHECK_FORMAT(dim > 0 && dim < (1 << 20) && element >= -1 && element <= 1 && n >= 0,
                   "CANNIndex file has invalid dim, element or ntotal (corrupt)");
  auto index = std::make_unique<CannIndex>(dim);
  index->element_ = static_cast<int>(element);
  if (element < 0) {
    PYL_CHECK_FORMAT(n == 0, "CANNIndex file has features but no element type (corrupt)");
    return index;
  }
  const ArrayView& d = c.Section("descriptors", element == 1 ? DType::kUInt8 : DType::kFloat32);
  const ArrayView& ids = c.Section("image_ids", DType::kInt64);
  PYL_CHECK_FORMAT(d.size() == n * dim && ids.size() == n,
                   "CANNIndex file sections do not match ntotal (corrupt)");
  index->rows_.assign(d.data, d.data + d.nbytes);
  const auto* ip = reinterpret_cast<const int64_t*>(ids.data);
  index->image_ids_.assign(ip, ip + n);
  return index;
}

std::unique_ptr<CannIndex> CannIndex::Load(const std::string& path) {
  return FromContainer(Container::FromFile(path, /*mmap=*/false));
}

std::unique_ptr<CannIndex> CannIndex::Deserialize(std::vector<uint8_t> bytes) {
  return FromContainer(Container::FromBytes(std::move(bytes)));
}

}  // namespace pylocalize
