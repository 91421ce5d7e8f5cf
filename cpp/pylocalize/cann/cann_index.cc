#include "pylocalize/cann/cann_index.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <unordered_set>

#include "pylocalize/knn/kmeans.h"
#include "pylocalize/util/check.h"
#include "pylocalize/util/cpu.h"
#include "pylocalize/util/threads.h"
#include "pylocalize/util/topk.h"

namespace pylocalize {
namespace {

constexpr const char* kTag = "CANNIndex";
constexpr int64_t kChunkFeatures = 4096;  // features per task: a tile that stays in L2
constexpr int64_t kQueryGroup = 32;
// Database blocks per DotTile in the exact search: ~8k features, a few ms per poll.
constexpr int64_t kPieceBlocks = 2 * kChunkFeatures / knn::kBlock;

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

// Random grids over the features, with each feature's image index and its float row.
struct CannIndex::GridLayout {
  cann::RandomGrids grids;
  std::vector<float> rows;            // n x dim, insertion order
  std::vector<int32_t> feature_image; // index into `images`
  std::vector<int64_t> images;        // distinct image ids, ascending
};

// Features ordered by (list, image), each list padded to whole knn blocks.
struct CannIndex::IvfLayout {
  knn::Element element;
  std::vector<float> centroids;     // the lists' centroids, nlist x dim
  std::vector<uint8_t> blocks;
  std::vector<int64_t> list_block;  // nlist + 1: first block of each list
  std::vector<int32_t> slot_image;  // per slot: index into `images`, -1 for padding
  std::vector<float> norms;         // per slot
  std::vector<int64_t> images;      // distinct image ids, ascending
};

CannIndex::CannIndex(int64_t dim) : dim_(dim) {
  PYL_CHECK(dim > 0 && dim <= kMaxDim, "dim must be in 1..", kMaxDim, ", got ", dim);
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

int64_t CannIndex::num_images() const { return static_cast<int64_t>(ImageIds().size()); }

std::vector<int64_t> CannIndex::ImageIds() const {
  // From the ids directly: counting images should not build a search layout.
  std::vector<int64_t> ids;
  {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    ids = image_ids_;
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

void CannIndex::Add(const void* descriptors, knn::Element element, const int64_t* image_ids,
                    int64_t n) {
  if (n <= 0) return;
  for (int64_t i = 0; i < n; ++i) {
    // -1 pads search results: a stored negative id would read as "no result".
    PYL_CHECK(image_ids[i] >= 0, "image_ids must be >= 0 (-1 marks empty result slots), got ",
              image_ids[i], " at position ", i, "; renumber the images to non-negative ids");
  }
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
  ivf_layout_.reset();
  grid_layout_.reset();
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
  ivf_layout_.reset();
  grid_layout_.reset();
  return removed;  // features removed
}

void CannIndex::Reset() {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  rows_.clear();
  image_ids_.clear();
  centroids_.clear();
  element_ = -1;
  std::lock_guard<std::mutex> guard(layout_mutex_);
  layout_.reset();
  ivf_layout_.reset();
  grid_layout_.reset();
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
    if ((pos & 65535) == 65535) InterruptPoint();  // millions of features take a while
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
  SearchExactIn(*GetLayout(), queries, nq, k, kernel, scores, out_ids, num_threads);
}

void CannIndex::SearchExactIn(const Layout& layout, const float* queries, int64_t nq, int64_t k,
                              const CannKernel& kernel, float* scores, int64_t* out_ids,
                              int num_threads) const {
  const Layout* const L = &layout;
  const int64_t num_images = static_cast<int64_t>(L->images.size());
  std::vector<double> total(static_cast<size_t>(num_images), 0.0);
  if (nq > 0 && num_images > 0) {
    const std::vector<float> qnorm = knn::SquaredNorms(queries, nq, dim_);
    // Chunks of whole images, so each image's score has a single writer.
    std::vector<int64_t> chunk_start{0};
    for (int64_t i = 0; i < num_images; ++i) {
      if (L->offsets[static_cast<size_t>(i + 1)] - L->offsets[static_cast<size_t>(chunk_start.back())] >= kChunkFeatures) {
        chunk_start.push_back(i + 1);
      }
    }
    if (chunk_start.back() != num_images) chunk_start.push_back(num_images);
    const int64_t nchunks = static_cast<int64_t>(chunk_start.size()) - 1;
    const size_t es = L->element == knn::Element::kUInt8 ? 1 : 4;
    ParallelFor(nchunks, num_threads, [&](int64_t c, int) {
      const int64_t i0 = chunk_start[static_cast<size_t>(c)], i1 = chunk_start[static_cast<size_t>(c + 1)];
      const int64_t f0 = L->offsets[static_cast<size_t>(i0)], f1 = L->offsets[static_cast<size_t>(i1)];
      const int64_t b0 = f0 / knn::kBlock, b1 = (f1 + knn::kBlock - 1) / knn::kBlock;
      // A chunk may end with one huge image: its blocks are scanned in pieces of at most
      // kPieceBlocks (one tile each, a poll for Ctrl-C between them), and each (query
      // feature, image) minimum is kept across pieces, so the time between polls and the
      // tile size stay bounded whatever the image size.
      const int64_t ld = std::min(b1 - b0, kPieceBlocks) * knn::kBlock;
      const int64_t ni = i1 - i0;
      std::vector<float> tile(static_cast<size_t>(kQueryGroup * ld));
      std::vector<float> best(static_cast<size_t>(kQueryGroup * ni));
      for (int64_t g = 0; g < nq; g += kQueryGroup) {
        const int64_t ng = std::min(kQueryGroup, nq - g);
        std::fill(best.begin(), best.end(), std::numeric_limits<float>::infinity());
        int64_t first = i0;  // the first image not wholly before the current piece
        for (int64_t pb = b0; pb < b1; pb += kPieceBlocks) {
          InterruptPoint();
          const int64_t pe = std::min(b1, pb + kPieceBlocks);
          knn::DotTile(queries + g * dim_, ng, dim_,
                       L->blocks.data() + static_cast<size_t>(pb * dim_ * knn::kBlock) * es, L->element,
                       pe - pb, tile.data(), ld);
          const int64_t p0 = std::max(pb * knn::kBlock, f0), p1 = std::min(pe * knn::kBlock, f1);
          for (int64_t j = 0; j < ng; ++j) {
            const float* row = tile.data() + j * ld;
            const int64_t row0 = pb * knn::kBlock;  // feature of row[0]
            float* bj = best.data() + j * ni;
            for (int64_t i = first; i < i1 && L->offsets[static_cast<size_t>(i)] < p1; ++i) {
              const int64_t lo = std::max(L->offsets[static_cast<size_t>(i)], p0);
              const int64_t hi = std::min(L->offsets[static_cast<size_t>(i + 1)], p1);
              float m = bj[i - i0];
              for (int64_t f = lo; f < hi; ++f) m = std::min(m, L->norms[static_cast<size_t>(f)] - 2.0f * row[f - row0]);
              bj[i - i0] = m;
            }
          }
          while (first < i1 && L->offsets[static_cast<size_t>(first + 1)] <= p1) ++first;
        }
        for (int64_t j = 0; j < ng; ++j) {
          const float qn = qnorm[static_cast<size_t>(g + j)];
          const float* bj = best.data() + j * ni;
          for (int64_t i = i0; i < i1; ++i) {
            const double r = std::sqrt(std::max(0.0, static_cast<double>(bj[i - i0]) + qn));
            total[static_cast<size_t>(i)] += kernel(r);
          }
        }
      }
    });
  }
  TopImages(total, L->images, nq, k, scores, out_ids);
}

void CannIndex::TopImages(const std::vector<double>& total, const std::vector<int64_t>& images,
                          int64_t nq, int64_t k, float* scores, int64_t* out_ids) const {
  TopK<float> top(k);  // keeps the smallest: rank by -S
  const double inv = 1.0 / static_cast<double>(std::max<int64_t>(nq, 1));
  for (size_t i = 0; i < images.size(); ++i) top.Push(-static_cast<float>(total[i] * inv), images[i]);
  top.Extract(scores, out_ids, std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < k; ++i) scores[i] = -scores[i];
}

std::vector<float> CannIndex::FloatRows() const {
  std::vector<float> out(image_ids_.size() * static_cast<size_t>(dim_));
  if (element_ == static_cast<int>(knn::Element::kUInt8)) {
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(rows_[i]);
  } else if (!out.empty()) {
    std::memcpy(out.data(), rows_.data(), out.size() * sizeof(float));
  }
  return out;
}

void CannIndex::Train(int64_t nlist, int iterations, uint64_t seed, int64_t max_points_per_list,
                      int num_threads) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  const int64_t n = static_cast<int64_t>(image_ids_.size());
  PYL_CHECK(nlist >= 1, "nlist must be >= 1, got ", nlist);
  PYL_CHECK(n >= nlist, "training ", nlist, " lists needs at least that many features; the index has ", n,
            ": add features first or lower nlist");
  const std::vector<float> x = FloatRows();
  knn::KMeansResult km =
      knn::KMeans(x.data(), n, dim_, nlist, iterations, seed, max_points_per_list, num_threads);
  centroids_ = std::move(km.centroids);
  std::lock_guard<std::mutex> guard(layout_mutex_);
  ivf_layout_.reset();
}

bool CannIndex::is_trained() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return !centroids_.empty();
}

int64_t CannIndex::nlist() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return static_cast<int64_t>(centroids_.size()) / dim_;
}

std::shared_ptr<const CannIndex::IvfLayout> CannIndex::GetIvfLayout(int num_threads) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  PYL_CHECK(!centroids_.empty(), "the ivf method needs train() first");
  std::lock_guard<std::mutex> guard(layout_mutex_);
  if (ivf_layout_ != nullptr) return ivf_layout_;
  auto L = std::make_shared<IvfLayout>();
  const int64_t n = static_cast<int64_t>(image_ids_.size());
  const int64_t nlist = static_cast<int64_t>(centroids_.size()) / dim_;
  L->element = static_cast<knn::Element>(std::max(element_, 0));
  L->centroids = centroids_;
  std::vector<int64_t> list(static_cast<size_t>(n));
  {
    const std::vector<float> x = FloatRows();
    knn::AssignNearest(centroids_.data(), nlist, x.data(), n, dim_, list.data(), nullptr, num_threads);
  }
  L->images = image_ids_;
  std::sort(L->images.begin(), L->images.end());
  L->images.erase(std::unique(L->images.begin(), L->images.end()), L->images.end());
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (list[a] != list[b]) return list[a] < list[b];
    if (image_ids_[a] != image_ids_[b]) return image_ids_[a] < image_ids_[b];
    return a < b;
  });
  // Blocks per list, then slots.
  std::vector<int64_t> count(static_cast<size_t>(nlist), 0);
  for (int64_t i = 0; i < n; ++i) ++count[static_cast<size_t>(list[i])];
  L->list_block.assign(static_cast<size_t>(nlist + 1), 0);
  for (int64_t l = 0; l < nlist; ++l) {
    L->list_block[static_cast<size_t>(l + 1)] = L->list_block[static_cast<size_t>(l)] + (count[static_cast<size_t>(l)] + knn::kBlock - 1) / knn::kBlock;
  }
  const int64_t nblocks = L->list_block.back();
  const size_t es = ElementSize();
  L->blocks.assign(static_cast<size_t>(nblocks * dim_ * knn::kBlock) * es, 0);
  L->slot_image.assign(static_cast<size_t>(nblocks * knn::kBlock), -1);
  L->norms.assign(static_cast<size_t>(nblocks * knn::kBlock), 0.0f);
  std::vector<int64_t> fill(static_cast<size_t>(nlist), 0);
  for (int64_t pos = 0; pos < n; ++pos) {
    const int64_t src = order[static_cast<size_t>(pos)];
    const int64_t l = list[static_cast<size_t>(src)];
    const int64_t slot = L->list_block[static_cast<size_t>(l)] * knn::kBlock + fill[static_cast<size_t>(l)]++;
    const int64_t b = slot / knn::kBlock, lane = slot % knn::kBlock;
    const uint8_t* row = rows_.data() + static_cast<size_t>(src * dim_) * es;
    double norm = 0.0;
    for (int64_t d = 0; d < dim_; ++d) {
      std::memcpy(L->blocks.data() + static_cast<size_t>((b * dim_ + d) * knn::kBlock + lane) * es, row + d * es, es);
      const double v = es == 1 ? static_cast<double>(row[d]) : static_cast<double>(reinterpret_cast<const float*>(row)[d]);
      norm += v * v;
    }
    L->norms[static_cast<size_t>(slot)] = static_cast<float>(norm);
    L->slot_image[static_cast<size_t>(slot)] = static_cast<int32_t>(
        std::lower_bound(L->images.begin(), L->images.end(), image_ids_[static_cast<size_t>(src)]) - L->images.begin());
  }
  ivf_layout_ = L;
  return ivf_layout_;
}

void CannIndex::SearchIvf(const float* queries, int64_t nq, int64_t k, const CannKernel& kernel,
                          int64_t nprobe, float* scores, int64_t* out_ids, int num_threads) const {
  PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
  PYL_CHECK(nprobe >= 1, "nprobe must be >= 1, got ", nprobe);
  kernel.Validate();
  SearchIvfIn(*GetIvfLayout(num_threads), queries, nq, k, kernel, nprobe, scores, out_ids, num_threads);
}

void CannIndex::SearchIvfIn(const IvfLayout& layout, const float* queries, int64_t nq, int64_t k,
                            const CannKernel& kernel, int64_t nprobe, float* scores, int64_t* out_ids,
                            int num_threads) const {
  const IvfLayout* const L = &layout;
  const int64_t nlist = static_cast<int64_t>(L->list_block.size()) - 1;
  const int64_t num_images = static_cast<int64_t>(L->images.size());
  std::vector<double> total(static_cast<size_t>(num_images), 0.0);
  if (nq > 0 && num_images > 0) {
    nprobe = std::min(nprobe, nlist);
    std::vector<int64_t> probes(static_cast<size_t>(nq * nprobe));
    knn::AssignNearestM(L->centroids.data(), nlist, queries, nq, dim_, nprobe, probes.data(), nullptr, num_threads);
    // Invert: the query features probing each list.
    std::vector<std::vector<int32_t>> by_list(static_cast<size_t>(nlist));
    for (int64_t q = 0; q < nq; ++q) {
      for (int64_t j = 0; j < nprobe; ++j) by_list[static_cast<size_t>(probes[static_cast<size_t>(q * nprobe + j)])].push_back(static_cast<int32_t>(q));
    }
    const std::vector<float> qnorm = knn::SquaredNorms(queries, nq, dim_);
    const double cut = kernel.Cutoff();
    const float cut2 = static_cast<float>(cut * cut);
    struct Candidate {
      int32_t q, image;
      float d2;
    };
    const int threads = std::max(1, num_threads);
    std::vector<std::vector<Candidate>> found(static_cast<size_t>(threads));
    const size_t es = ElementSize();
    constexpr int64_t kGroup = 32;
    ParallelFor(nlist, threads, [&](int64_t l, int tid) {
      const std::vector<int32_t>& qs = by_list[static_cast<size_t>(l)];
      const int64_t b0 = L->list_block[static_cast<size_t>(l)], b1 = L->list_block[static_cast<size_t>(l + 1)];
      if (qs.empty() || b0 == b1) return;
      InterruptPoint();
      const int64_t ld = (b1 - b0) * knn::kBlock;
      std::vector<float> qrows(static_cast<size_t>(kGroup * dim_));
      std::vector<float> tile(static_cast<size_t>(kGroup * ld));
      std::vector<Candidate>& out = found[static_cast<size_t>(tid)];
      for (size_t g = 0; g < qs.size(); g += kGroup) {
        const int64_t ng = std::min<int64_t>(kGroup, static_cast<int64_t>(qs.size() - g));
        for (int64_t j = 0; j < ng; ++j) {
          std::memcpy(qrows.data() + j * dim_, queries + static_cast<int64_t>(qs[g + j]) * dim_, static_cast<size_t>(dim_) * sizeof(float));
        }
        knn::DotTile(qrows.data(), ng, dim_,
                     L->blocks.data() + static_cast<size_t>(b0 * dim_ * knn::kBlock) * es, L->element,
                     b1 - b0, tile.data(), ld);
        for (int64_t j = 0; j < ng; ++j) {
          const int32_t q = qs[g + j];
          const float qn = qnorm[static_cast<size_t>(q)];
          const float* row = tile.data() + j * ld;
          for (int64_t c = 0; c < ld; ++c) {
            const int64_t slot = b0 * knn::kBlock + c;
            const float d2 = qn + L->norms[static_cast<size_t>(slot)] - 2.0f * row[c];
            const int32_t img = L->slot_image[static_cast<size_t>(slot)];
            if (d2 < cut2 && img >= 0) out.push_back({q, img, std::max(0.0f, d2)});
          }
        }
      }
    });
    // Per query feature: the nearest probed feature of each image, then the kernel.
    std::vector<int64_t> start(static_cast<size_t>(nq + 1), 0);
    for (const auto& v : found) {
      for (const Candidate& c : v) ++start[static_cast<size_t>(c.q + 1)];
    }
    for (int64_t q = 0; q < nq; ++q) start[static_cast<size_t>(q + 1)] += start[static_cast<size_t>(q)];
    std::vector<Candidate> byq(static_cast<size_t>(start.back()));
    {
      std::vector<int64_t> pos(start.begin(), start.end() - 1);
      for (auto& v : found) {
        for (const Candidate& c : v) byq[static_cast<size_t>(pos[static_cast<size_t>(c.q)]++)] = c;
        std::vector<Candidate>().swap(v);
      }
    }
    std::vector<std::vector<double>> partial(static_cast<size_t>(threads));
    const int64_t chunks = std::min<int64_t>(nq, 4 * threads);
    ParallelFor(chunks, threads, [&](int64_t t, int tid) {
      std::vector<double>& acc = partial[static_cast<size_t>(tid)];
      if (acc.empty()) acc.assign(static_cast<size_t>(num_images), 0.0);
      std::vector<float> best(static_cast<size_t>(num_images), std::numeric_limits<float>::infinity());
      std::vector<int32_t> touched;
      for (int64_t q = t * nq / chunks; q < (t + 1) * nq / chunks; ++q) {
        for (int64_t i = start[static_cast<size_t>(q)]; i < start[static_cast<size_t>(q + 1)]; ++i) {
          const Candidate& c = byq[static_cast<size_t>(i)];
          float& b = best[static_cast<size_t>(c.image)];
          if (b == std::numeric_limits<float>::infinity()) touched.push_back(c.image);
          b = std::min(b, c.d2);
        }
        for (int32_t img : touched) {
          acc[static_cast<size_t>(img)] += kernel(std::sqrt(static_cast<double>(best[static_cast<size_t>(img)])));
          best[static_cast<size_t>(img)] = std::numeric_limits<float>::infinity();
        }
        touched.clear();
      }
    });
    for (const auto& acc : partial) {
      for (size_t i = 0; i < acc.size(); ++i) total[i] += acc[i];
    }
  }
  TopImages(total, L->images, nq, k, scores, out_ids);
}

void CannIndex::SetGridParams(const cann::GridParams& params, double r_max) {
  cann::ValidateGridParams(params, dim_);
  std::unique_lock<std::shared_mutex> lock(mutex_);
  // Refused here too (not only when the grids are built at the first search), so the
  // error comes from the call that chose the parameters.
  cann::CheckGridMemory(params, static_cast<int64_t>(image_ids_.size()), dim_);
  grid_params_ = params;
  grid_r_max_ = r_max;
  std::lock_guard<std::mutex> guard(layout_mutex_);
  grid_layout_.reset();
}

std::shared_ptr<const CannIndex::GridLayout> CannIndex::GetGridLayout(int num_threads) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  PYL_CHECK(grid_r_max_ > 0, "the grid method needs its parameters first (set_grid_params)");
  std::lock_guard<std::mutex> guard(layout_mutex_);
  if (grid_layout_ != nullptr) return grid_layout_;
  auto L = std::make_shared<GridLayout>();
  L->rows = FloatRows();
  const int64_t n = static_cast<int64_t>(image_ids_.size());
  L->images = image_ids_;
  std::sort(L->images.begin(), L->images.end());
  L->images.erase(std::unique(L->images.begin(), L->images.end()), L->images.end());
  L->feature_image.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    L->feature_image[static_cast<size_t>(i)] = static_cast<int32_t>(
        std::lower_bound(L->images.begin(), L->images.end(), image_ids_[static_cast<size_t>(i)]) - L->images.begin());
  }
  if (n > 0) L->grids.Build(L->rows.data(), n, dim_, grid_r_max_, grid_params_, num_threads);
  grid_layout_ = L;
  return grid_layout_;
}

int64_t CannIndex::MemoryBytes() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  std::lock_guard<std::mutex> guard(layout_mutex_);
  int64_t bytes = static_cast<int64_t>(rows_.size() + image_ids_.size() * sizeof(int64_t) +
                                       centroids_.size() * sizeof(float));
  if (layout_ != nullptr) {
    bytes += static_cast<int64_t>(layout_->blocks.size() + layout_->norms.size() * sizeof(float) +
                                  (layout_->images.size() + layout_->offsets.size()) * sizeof(int64_t));
  }
  if (ivf_layout_ != nullptr) {
    bytes += static_cast<int64_t>(ivf_layout_->blocks.size() + ivf_layout_->norms.size() * sizeof(float) +
                                  ivf_layout_->slot_image.size() * sizeof(int32_t) +
                                  (ivf_layout_->images.size() + ivf_layout_->list_block.size()) * sizeof(int64_t));
  }
  if (grid_layout_ != nullptr) {
    bytes += grid_layout_->grids.MemoryBytes() +
             static_cast<int64_t>(grid_layout_->rows.size() * sizeof(float) +
                                  grid_layout_->feature_image.size() * sizeof(int32_t));
  }
  return bytes;
}

int64_t CannIndex::GridMemoryBytes() const {
  std::lock_guard<std::mutex> guard(layout_mutex_);
  return grid_layout_ != nullptr ? grid_layout_->grids.MemoryBytes() : 0;
}

void CannIndex::SearchGrid(const float* queries, int64_t nq, int64_t k, const CannKernel& kernel,
                           float* scores, int64_t* out_ids, int num_threads) const {
  PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
  kernel.Validate();
  SearchGridIn(*GetGridLayout(num_threads), queries, nq, k, kernel, scores, out_ids, num_threads);
}

void CannIndex::SearchGridIn(const GridLayout& layout, const float* queries, int64_t nq, int64_t k,
                             const CannKernel& kernel, float* scores, int64_t* out_ids,
                             int num_threads) const {
  const GridLayout* const L = &layout;
  const int64_t num_images = static_cast<int64_t>(L->images.size());
  std::vector<double> total(static_cast<size_t>(num_images), 0.0);
  if (nq > 0 && num_images > 0 && L->grids.built()) {
    const int threads = std::max(1, num_threads);
    std::vector<std::vector<double>> partial(static_cast<size_t>(threads));
    const int64_t chunks = std::min<int64_t>(nq, 8 * threads);
    const cann::GridParams& gp = L->grids.params();
    ParallelFor(chunks, threads, [&](int64_t t, int tid) {
      InterruptPoint();
      std::vector<double>& acc = partial[static_cast<size_t>(tid)];
      if (acc.empty()) acc.assign(static_cast<size_t>(num_images), 0.0);
      const float inf = std::numeric_limits<float>::infinity();
      std::vector<float> best(static_cast<size_t>(num_images), inf);
      std::vector<uint8_t> done(static_cast<size_t>(num_images), 0);
      // A feature met in several grids or radii is measured once per query feature.
      std::vector<int64_t> seen(L->feature_image.size(), -1);
      std::vector<float> seen_d2(L->feature_image.size());
      std::vector<int32_t> touched, cell;
      for (int64_t q = t * nq / chunks; q < (t + 1) * nq / chunks; ++q) {
        const float* qv = queries + q * dim_;
        for (int j = 0; j < gp.num_radii; ++j) {
          const float r2 = static_cast<float>(L->grids.radius(j) * L->grids.radius(j));
          for (int g = 0; g < gp.num_grids; ++g) {
            cell.clear();
            L->grids.Lookup(qv, j, g, &cell);
            for (int32_t f : cell) {
              const int32_t img = L->feature_image[static_cast<size_t>(f)];
              if (done[static_cast<size_t>(img)]) continue;  // found at a smaller radius
              float d2;
              if (seen[static_cast<size_t>(f)] == q) {
                d2 = seen_d2[static_cast<size_t>(f)];
              } else {
                const float* xv = L->rows.data() + static_cast<int64_t>(f) * dim_;
                d2 = 0.0f;
                for (int64_t d = 0; d < dim_; ++d) {
                  const float e = qv[d] - xv[d];
                  d2 += e * e;
                }
                seen[static_cast<size_t>(f)] = q;
                seen_d2[static_cast<size_t>(f)] = d2;
              }
              if (d2 > r2) continue;
              if (best[static_cast<size_t>(img)] == inf) touched.push_back(img);
              best[static_cast<size_t>(img)] = std::min(best[static_cast<size_t>(img)], d2);
            }
          }
          // Images found at this radius keep their distance: close them for larger radii.
          for (int32_t img : touched) done[static_cast<size_t>(img)] = 1;
        }
        for (int32_t img : touched) {
          acc[static_cast<size_t>(img)] += kernel(std::sqrt(static_cast<double>(best[static_cast<size_t>(img)])));
          best[static_cast<size_t>(img)] = inf;
          done[static_cast<size_t>(img)] = 0;
        }
        touched.clear();
      }
    });
    for (const auto& acc : partial) {
      for (size_t i = 0; i < acc.size(); ++i) total[i] += acc[i];
    }
  }
  TopImages(total, L->images, nq, k, scores, out_ids);
}

void CannIndex::SearchBatch(CannMethod method, const std::vector<const float*>& queries,
                            const std::vector<int64_t>& nq, int64_t k, const CannKernel& kernel,
                            int64_t nprobe, float* scores, int64_t* out_ids, int num_threads) const {
  PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
  PYL_CHECK(nprobe >= 1 || method != CannMethod::kIvf, "nprobe must be >= 1, got ", nprobe);
  PYL_CHECK(queries.size() == nq.size(), "one feature count per query image");
  kernel.Validate();
  const int64_t n = static_cast<int64_t>(queries.size());
  if (n == 0) return;
  // One snapshot of the index for the whole batch: a change made meanwhile by another
  // thread is seen by every query image or by none.
  std::shared_ptr<const Layout> exact;
  std::shared_ptr<const IvfLayout> ivf;
  std::shared_ptr<const GridLayout> grid;
  if (method == CannMethod::kExact) exact = GetLayout();
  if (method == CannMethod::kIvf) ivf = GetIvfLayout(num_threads);
  if (method == CannMethod::kGrid) grid = GetGridLayout(num_threads);
  auto one = [&](int64_t i, int threads) {
    const float* q = queries[static_cast<size_t>(i)];
    const int64_t m = nq[static_cast<size_t>(i)];
    if (exact != nullptr) SearchExactIn(*exact, q, m, k, kernel, scores + i * k, out_ids + i * k, threads);
    if (ivf != nullptr) SearchIvfIn(*ivf, q, m, k, kernel, nprobe, scores + i * k, out_ids + i * k, threads);
    if (grid != nullptr) SearchGridIn(*grid, q, m, k, kernel, scores + i * k, out_ids + i * k, threads);
  };
  const int threads = num_threads > 0 ? num_threads : GetNumThreads();
  if (n >= threads) {
    // Many query images: one per thread, each searched single-threaded.
    ParallelFor(n, threads, [&](int64_t i, int) { one(i, 1); });
  } else {
    for (int64_t i = 0; i < n; ++i) one(i, threads);
  }
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
  if (!centroids_.empty()) {
    w.AddSection("centroids", DType::kFloat32, {static_cast<int64_t>(centroids_.size()) / dim_, dim_},
                 centroids_.data());
  }
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
  PYL_CHECK_FORMAT(dim > 0 && dim <= kMaxDim && element >= -1 && element <= 1 && n >= 0,
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
  for (int64_t i = 0; i < n; ++i) {
    // -1 pads results: a stored negative id would read as "no image" (never written by Add).
    PYL_CHECK_FORMAT(ip[i] >= 0, "CANNIndex file has image id ", ip[i], " (negative: corrupt)");
  }
  index->image_ids_.assign(ip, ip + n);
  if (c.HasSection("centroids")) {
    const ArrayView& cv = c.Section("centroids", DType::kFloat32);
    PYL_CHECK_FORMAT(cv.shape.size() == 2 && cv.shape[1] == dim && cv.shape[0] >= 1,
                     "CANNIndex centroids do not match dim (corrupt)");
    const auto* cp = reinterpret_cast<const float*>(cv.data);
    index->centroids_.assign(cp, cp + cv.size());
  }
  return index;
}

std::unique_ptr<CannIndex> CannIndex::Load(const std::string& path) {
  return FromContainer(Container::FromFile(path, /*mmap=*/false));
}

std::unique_ptr<CannIndex> CannIndex::Deserialize(std::vector<uint8_t> bytes) {
  return FromContainer(Container::FromBytes(std::move(bytes)));
}

}  // namespace pylocalize
