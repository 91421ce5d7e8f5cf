#include "pylocalize/cann/cann_pq.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <random>

#include "pylocalize/knn/kmeans.h"
#include "pylocalize/util/check.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace {

constexpr int64_t kAddChunk = int64_t{1} << 16;  // rows converted to float at a time by Add
constexpr int64_t kQueryGroup = 16;              // query features per search task (their ADC tables: 512 KB)

void CheckFinite(const float* x, int64_t n, int64_t dim, const char* what) {
  for (int64_t i = 0; i < n * dim; ++i) {
    PYL_CHECK(std::isfinite(x[i]), what, " contain NaN or Inf (row ", i / dim, "); clean them first");
  }
}

// A uniform sample of min(n, count) distinct rows of n, ascending (memory order).
std::vector<int64_t> SampleRows(int64_t n, int64_t count, uint64_t seed) {
  std::vector<int64_t> rows(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) rows[static_cast<size_t>(i)] = i;
  count = std::min(n, count);
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < count; ++i) {
    std::swap(rows[static_cast<size_t>(i)],
              rows[static_cast<size_t>(std::uniform_int_distribution<int64_t>(i, n - 1)(rng))]);
  }
  rows.resize(static_cast<size_t>(count));
  std::sort(rows.begin(), rows.end());
  return rows;
}

// Mean of ||x - decode(encode(x))||^2 over n rows.
double MeanSquaredError(const pq::ProductQuantizer& pq, const std::vector<float>& x, int64_t n, int num_threads) {
  const int64_t dim = pq.dim();
  std::vector<uint8_t> codes(static_cast<size_t>(n * pq.m()));
  pq.Encode(x.data(), n, codes.data(), num_threads);
  std::vector<float> decoded(static_cast<size_t>(dim));
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    pq.Decode(codes.data() + i * pq.m(), 1, decoded.data());
    for (int64_t d = 0; d < dim; ++d) {
      const double e = static_cast<double>(x[static_cast<size_t>(i * dim + d)]) - decoded[static_cast<size_t>(d)];
      total += e * e;
    }
  }
  return total / static_cast<double>(std::max<int64_t>(n, 1));
}

}  // namespace

void CannPqTrainParams::Validate() const {
  PYL_CHECK(nlist >= 1, "nlist must be >= 1, got ", nlist);
  PYL_CHECK(iterations >= 0, "iterations must be >= 0, got ", iterations);
  PYL_CHECK(max_points_per_list >= 1, "max_points_per_list must be >= 1, got ", max_points_per_list);
  PYL_CHECK(max_pq_training_rows >= pq::kCentroids, "max_pq_training_rows must be >= ", pq::kCentroids, ", got ",
            max_pq_training_rows);
  pq.Validate();
}

void CannPqSearchOptions::Validate() const {
  PYL_CHECK(nprobe >= 1, "nprobe must be >= 1, got ", nprobe);
  kernel.Validate();
}

CannPqIndex::CannPqIndex(int64_t dim, int64_t m, bool by_residual)
    : dim_(dim), m_(m), by_residual_(by_residual), pq_(dim, m) {
  PYL_CHECK(dim >= 1 && dim <= kMaxDim, "dim must be in 1..", kMaxDim, ", got ", dim);
}

int64_t CannPqIndex::ntotal() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return ntotal_;
}

int64_t CannPqIndex::num_images() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return static_cast<int64_t>(images_.size());
}

int64_t CannPqIndex::nlist() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return quantizer_.size();
}

bool CannPqIndex::is_trained() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return quantizer_.size() > 0;
}

void CannPqIndex::Train(const void* rows, knn::Element element, int64_t n, const CannPqTrainParams& params,
                        int num_threads) {
  params.Validate();
  PYL_CHECK(n >= params.nlist && n >= pq::kCentroids,
            "training needs at least max(nlist, 256) = ", std::max(params.nlist, pq::kCentroids), " sample rows, got ",
            n, "; pass a larger sample or lower nlist");
  if (element == knn::Element::kFloat32) CheckFinite(static_cast<const float*>(rows), n, dim_, "training rows");
  std::unique_lock<std::shared_mutex> lock(mutex_);
  PYL_CHECK(quantizer_.size() == 0, "this index is already trained; make a new one to train again");
  const int64_t dim = dim_;
  const knn::RowReader row = [rows, element, dim](int64_t i, float* out) {
    pq::RowsToFloat(rows, element, dim, i, 1, out);
  };
  knn::KMeansResult km =
      knn::KMeans(row, n, dim_, params.nlist, params.iterations, params.seed, params.max_points_per_list, num_threads);
  // The sub-quantizers learn from a sample of rows (their residuals to their lists).
  const std::vector<int64_t> sample = SampleRows(n, params.max_pq_training_rows, params.seed + 1);
  const int64_t ns = static_cast<int64_t>(sample.size());
  std::vector<float> x(static_cast<size_t>(ns * dim_));
  for (int64_t i = 0; i < ns; ++i) row(sample[static_cast<size_t>(i)], x.data() + i * dim_);
  knn::CoarseQuantizer quantizer(std::move(km.centroids), dim_);
  if (by_residual_) {
    std::vector<int64_t> list(static_cast<size_t>(ns));
    quantizer.Assign(x.data(), ns, 1, list.data(), nullptr, num_threads);
    for (int64_t i = 0; i < ns; ++i) {
      const float* c = quantizer.centroids().data() + list[static_cast<size_t>(i)] * dim_;
      for (int64_t d = 0; d < dim_; ++d) x[static_cast<size_t>(i * dim_ + d)] -= c[d];
    }
  }
  pq_.Train(x.data(), ns, params.pq, num_threads);
  quantization_error_ = MeanSquaredError(pq_, x, ns, num_threads);
  quantizer_ = std::move(quantizer);
  owned_.assign(static_cast<size_t>(params.nlist), OwnedList{});
}

int32_t CannPqIndex::ImageSlot(int64_t image_id) {
  auto it = image_slot_.find(image_id);
  if (it != image_slot_.end()) return it->second;
  PYL_CHECK(images_.size() < static_cast<size_t>(INT32_MAX), "more than 2^31 - 1 images");
  const int32_t slot = static_cast<int32_t>(images_.size());
  images_.push_back(image_id);
  image_slot_.emplace(image_id, slot);
  return slot;
}

void CannPqIndex::Add(const void* rows, knn::Element element, const int64_t* image_ids, int64_t n, int num_threads) {
  if (n <= 0) return;
  for (int64_t i = 0; i < n; ++i) {
    // -1 pads search results: a stored negative id would read as "no result".
    PYL_CHECK(image_ids[i] >= 0, "image_ids must be >= 0 (-1 marks empty result slots), got ", image_ids[i],
              " at position ", i, "; renumber the images to non-negative ids");
  }
  if (element == knn::Element::kFloat32) CheckFinite(static_cast<const float*>(rows), n, dim_, "descriptors");
  std::unique_lock<std::shared_mutex> lock(mutex_);
  PYL_CHECK(quantizer_.size() > 0, "add() needs train() first: train on a sample of the descriptors");
  if (packed_.has_value()) Unpack();
  std::vector<float> chunk;
  for (int64_t r0 = 0; r0 < n; r0 += kAddChunk) {
    const int64_t count = std::min(kAddChunk, n - r0);
    chunk.resize(static_cast<size_t>(count * dim_));
    pq::RowsToFloat(rows, element, dim_, r0, count, chunk.data());
    AddChunk(chunk.data(), image_ids + r0, count, num_threads);
  }
}

// Assigns, encodes and appends one chunk of float rows (overwritten with residuals).
void CannPqIndex::AddChunk(float* x, const int64_t* image_ids, int64_t n, int num_threads) {
  std::vector<int64_t> list(static_cast<size_t>(n));
  quantizer_.Assign(x, n, 1, list.data(), nullptr, num_threads);
  if (by_residual_) {
    for (int64_t i = 0; i < n; ++i) {
      const float* c = quantizer_.centroids().data() + list[static_cast<size_t>(i)] * dim_;
      for (int64_t d = 0; d < dim_; ++d) x[i * dim_ + d] -= c[d];
    }
  }
  std::vector<uint8_t> codes(static_cast<size_t>(n * m_));
  pq_.Encode(x, n, codes.data(), num_threads);
  std::vector<float> decoded(static_cast<size_t>(dim_));
  for (int64_t i = 0; i < n; ++i) {
    OwnedList& l = owned_[static_cast<size_t>(list[static_cast<size_t>(i)])];
    const uint8_t* code = codes.data() + i * m_;
    l.codes.insert(l.codes.end(), code, code + m_);
    l.images.push_back(ImageSlot(image_ids[i]));
    if (by_residual_) {
      // 2 <c, r> + ||r||^2, in double: the part of ||q - c - r||^2 that only the feature knows
      pq_.Decode(code, 1, decoded.data());
      const float* c = quantizer_.centroids().data() + list[static_cast<size_t>(i)] * dim_;
      double term = 0.0;
      for (int64_t d = 0; d < dim_; ++d)
        term += (2.0 * c[d] + decoded[static_cast<size_t>(d)]) * decoded[static_cast<size_t>(d)];
      l.norm_terms.push_back(static_cast<float>(term));
    }
  }
  ntotal_ += n;
}

CannPqIndex::ListView CannPqIndex::View(int64_t list) const {
  if (packed_.has_value()) {
    const int64_t b = packed_->offsets[static_cast<size_t>(list)], e = packed_->offsets[static_cast<size_t>(list + 1)];
    return {packed_->codes + b * m_, packed_->images + b, by_residual_ ? packed_->norm_terms + b : nullptr, e - b};
  }
  const OwnedList& l = owned_[static_cast<size_t>(list)];
  return {l.codes.data(), l.images.data(), by_residual_ ? l.norm_terms.data() : nullptr,
          static_cast<int64_t>(l.images.size())};
}

}  // namespace pylocalize

namespace pylocalize {
namespace {

// ADC tables of a group of query features, turned in place from inner products <q_j, c_jk>
// into the per-code part of their squared distances: -2 <q_j, c_jk> with residual codes
// (||q - c||^2 and the norm term are added per list and per code), ||c_jk||^2 - 2 <q_j, c_jk>
// without (||q||^2 is added per query).
void QueryTables(const pq::ProductQuantizer& pq, bool by_residual, const float* queries, int64_t count,
                 std::vector<float>* tables) {
  const int64_t width = pq.m() * pq::kCentroids;
  tables->resize(static_cast<size_t>(count * width));
  pq.InnerProductTables(queries, count, tables->data());
  const float* norms = pq.centroid_norms().data();
  for (int64_t i = 0; i < count; ++i) {
    float* t = tables->data() + i * width;
    for (int64_t c = 0; c < width; ++c) t[c] = (by_residual ? 0.0f : norms[c]) - 2.0f * t[c];
  }
}

}  // namespace

void CannPqIndex::ScanList(const ListView& v, const float* table, float base, float cut2,
                           cann::ScoreAccumulator* acc) const {
  for (int64_t i = 0; i < v.size; ++i) {
    float d2 = base + pq::AdcLookup(table, v.codes + i * m_, m_);
    if (v.norm_terms != nullptr) d2 += v.norm_terms[i];
    // Pairs beyond the kernel's cutoff score 0 whatever the image: not offered.
    if (d2 < cut2) acc->Offer(v.images[i], std::max(0.0f, d2));
  }
}

void CannPqIndex::Search(const CannPqSearchOptions& options, const float* queries, int64_t nq, int64_t k, float* scores,
                         int64_t* image_ids, int num_threads) const {
  PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
  options.Validate();
  CheckFinite(queries, nq, dim_, "query descriptors");
  const int threads = num_threads > 0 ? num_threads : GetNumThreads();
  std::shared_lock<std::shared_mutex> lock(mutex_);
  const int64_t num_images = static_cast<int64_t>(images_.size());
  std::vector<double> total(static_cast<size_t>(num_images), 0.0);
  if (nq > 0 && ntotal_ > 0) {
    const int64_t nlist = quantizer_.size();
    const int64_t nprobe = std::min(options.nprobe, nlist);
    std::vector<int64_t> probe(static_cast<size_t>(nq * nprobe));
    std::vector<float> probe_d2(static_cast<size_t>(nq * nprobe));
    quantizer_.Assign(queries, nq, nprobe, probe.data(), probe_d2.data(), threads);
    const std::vector<float> qnorm = knn::SquaredNorms(queries, nq, dim_);
    const double cut = options.kernel.Cutoff();
    const float cut2 = static_cast<float>(cut * cut);
    cann::ThreadScores per_thread(threads, num_images, options.kernel);
    const int64_t width = m_ * pq::kCentroids;
    const float bias = static_cast<float>(quantization_error_);
    ParallelFor((nq + kQueryGroup - 1) / kQueryGroup, threads, [&](int64_t g, int tid) {
      const int64_t q0 = g * kQueryGroup, count = std::min(kQueryGroup, nq - q0);
      std::vector<float> tables;
      QueryTables(pq_, by_residual_, queries + q0 * dim_, count, &tables);
      cann::ScoreAccumulator& acc = per_thread[tid];
      for (int64_t q = q0; q < q0 + count; ++q) {
        for (int64_t p = q * nprobe; p < (q + 1) * nprobe; ++p) {
          InterruptPoint();
          const float base = (by_residual_ ? probe_d2[static_cast<size_t>(p)] : qnorm[static_cast<size_t>(q)]) - bias;
          ScanList(View(probe[static_cast<size_t>(p)]), tables.data() + (q - q0) * width, base, cut2, &acc);
        }
        acc.CloseFeature();
      }
    });
    total = per_thread.Sum();
  }
  cann::TopImages(total, images_, nq, k, scores, image_ids);
}

void CannPqIndex::Reconstruct(std::vector<float>* out, std::vector<int64_t>* image_ids) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  out->resize(static_cast<size_t>(ntotal_ * dim_));
  image_ids->resize(static_cast<size_t>(ntotal_));
  float* x = out->data();
  const int64_t nlist = quantizer_.size();
  int64_t row = 0;
  for (int64_t l = 0; l < nlist; ++l) {
    const ListView v = View(l);
    pq_.Decode(v.codes, v.size, x + row * dim_);
    for (int64_t i = 0; i < v.size; ++i, ++row) {
      if (by_residual_) {
        for (int64_t d = 0; d < dim_; ++d)
          x[row * dim_ + d] += quantizer_.centroids()[static_cast<size_t>(l * dim_ + d)];
      }
      (*image_ids)[static_cast<size_t>(row)] = images_[static_cast<size_t>(v.images[i])];
    }
  }
}

std::vector<float> CannPqIndex::Centroids() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return quantizer_.centroids();
}

double CannPqIndex::quantization_error() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return quantization_error_;
}

std::vector<float> CannPqIndex::Codebooks() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return pq_.codebooks();
}

void CannPqIndex::SetSearchOptions(const CannPqSearchOptions& options) {
  options.Validate();
  std::unique_lock<std::shared_mutex> lock(mutex_);
  search_options_ = options;
}

std::optional<CannPqSearchOptions> CannPqIndex::search_options() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return search_options_;
}

int64_t CannPqIndex::MemoryBytes() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  const int64_t per_feature = m_ + static_cast<int64_t>(sizeof(int32_t)) + (by_residual_ ? 4 : 0);
  int64_t bytes = 0;
  if (packed_.has_value()) {
    bytes += ntotal_ * per_feature + static_cast<int64_t>(packed_->offsets.size() * sizeof(int64_t));
  } else {
    for (const OwnedList& l : owned_) {
      // capacity: what the lists hold while they grow, not only what they use
      bytes += static_cast<int64_t>(l.codes.capacity() + l.images.capacity() * sizeof(int32_t) +
                                    l.norm_terms.capacity() * sizeof(float) + sizeof(OwnedList));
    }
  }
  bytes += quantizer_.HeapBytes();
  // the codebooks, their norms and their blocked copy
  bytes += static_cast<int64_t>((2 * pq_.codebooks().size() + pq_.centroid_norms().size()) * sizeof(float));
  // the image table: ids, and the id -> index map (a node of key, value and next pointer, a bucket)
  bytes += static_cast<int64_t>(images_.size() * (sizeof(int64_t) + 32 + sizeof(void*)));
  return bytes;
}

}  // namespace pylocalize
