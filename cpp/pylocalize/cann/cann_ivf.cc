// Method ivf: an inverted file over the features. k-means lists hold their features grouped
// by image; each query feature probes its nprobe nearest lists, where distances are exact,
// and only pairs within the kernel's cutoff can score.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "pylocalize/cann/cann_index.h"
#include "pylocalize/cann/layouts.h"
#include "pylocalize/knn/kmeans.h"
#include "pylocalize/util/check.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace cann {
namespace {

constexpr int64_t kQueryGroup = 32;  // query features per DotTile

// A database feature within the kernel's cutoff of a query feature.
struct Candidate {
  int32_t q, image;
  float d2;
};

// The query features probing each list (each probes its nprobe nearest lists).
std::vector<std::vector<int32_t>> QueriesByList(const IvfLayout& L, int64_t dim, const float* queries, int64_t nq,
                                                int64_t nprobe, int num_threads) {
  const int64_t nlist = static_cast<int64_t>(L.list_block.size()) - 1;
  std::vector<int64_t> probes(static_cast<size_t>(nq * nprobe));
  L.quantizer.Assign(queries, nq, nprobe, probes.data(), nullptr, num_threads);
  std::vector<std::vector<int32_t>> by_list(static_cast<size_t>(nlist));
  for (int64_t q = 0; q < nq; ++q) {
    for (int64_t j = 0; j < nprobe; ++j) {
      by_list[static_cast<size_t>(probes[static_cast<size_t>(q * nprobe + j)])].push_back(static_cast<int32_t>(q));
    }
  }
  return by_list;
}

// A thread's buffers for ScanList, kept across lists: allocating (and zeroing) a tile per
// list cost as much as a tenth of a city-scale search.
struct ScanScratch {
  std::vector<float> qrows, tile;
  std::vector<int32_t> passed;
};

// Scans list l for its query features `qs`, appending the pairs closer than the cutoff.
void ScanList(const IvfLayout& L, int64_t dim, int64_t l, const std::vector<int32_t>& qs, const float* queries,
              const std::vector<float>& qnorm, float cut2, ScanScratch* s, std::vector<Candidate>* out) {
  const int64_t b0 = L.list_block[static_cast<size_t>(l)], b1 = L.list_block[static_cast<size_t>(l + 1)];
  if (qs.empty() || b0 == b1) return;
  InterruptPoint();
  const int64_t ld = (b1 - b0) * knn::kBlock;
  const float* norms = L.rows.norms.data() + b0 * knn::kBlock;
  const int32_t* images = L.slot_image.data() + b0 * knn::kBlock;
  // A list's features fill its slots from the first and padding (image -1) ends it: the
  // trailing padding is not scanned (a padding slot elsewhere, in a damaged file, is still
  // never a candidate)
  int64_t used = ld;
  while (used > 0 && images[used - 1] < 0) --used;
  s->qrows.resize(static_cast<size_t>(kQueryGroup * dim));
  s->tile.resize(std::max(s->tile.size(), static_cast<size_t>(kQueryGroup * ld)));
  s->passed.resize(std::max(s->passed.size(), static_cast<size_t>(used)));
  for (size_t g = 0; g < qs.size(); g += kQueryGroup) {
    const int64_t ng = std::min<int64_t>(kQueryGroup, static_cast<int64_t>(qs.size() - g));
    for (int64_t j = 0; j < ng; ++j) {
      std::memcpy(s->qrows.data() + j * dim, queries + static_cast<int64_t>(qs[g + j]) * dim,
                  static_cast<size_t>(dim) * sizeof(float));
    }
    knn::DotTile(s->qrows.data(), ng, dim, L.rows.block(b0), L.rows.element, b1 - b0, s->tile.data(), ld);
    for (int64_t j = 0; j < ng; ++j) {
      const int32_t q = qs[g + j];
      const float qn = qnorm[static_cast<size_t>(q)];
      const float* row = s->tile.data() + j * ld;
      // About one pair in eight passes, too unpredictable for a branch: the slots that pass
      // are listed branch-free (4-byte stores), then only they become candidates
      int32_t* passed = s->passed.data();
      size_t n = 0;
      for (int64_t c = 0; c < used; ++c) {
        passed[n] = static_cast<int32_t>(c);
        n += static_cast<size_t>(qn + norms[c] - 2.0f * row[c] < cut2);
      }
      for (size_t i = 0; i < n; ++i) {
        const int32_t c = passed[i];
        if (images[c] >= 0) out->push_back({q, images[c], std::max(0.0f, qn + norms[c] - 2.0f * row[c])});
      }
    }
  }
}

// The candidates of every thread, grouped by query feature (a counting sort): those of q
// are byq[start[q] .. start[q+1]). Frees `found` as it goes.
std::vector<Candidate> GroupByQuery(std::vector<std::vector<Candidate>>* found, int64_t nq,
                                    std::vector<int64_t>* start) {
  start->assign(static_cast<size_t>(nq + 1), 0);
  for (const auto& v : *found) {
    for (const Candidate& c : v) ++(*start)[static_cast<size_t>(c.q + 1)];
  }
  for (int64_t q = 0; q < nq; ++q) (*start)[static_cast<size_t>(q + 1)] += (*start)[static_cast<size_t>(q)];
  std::vector<Candidate> byq(static_cast<size_t>(start->back()));
  std::vector<int64_t> pos(start->begin(), start->end() - 1);
  for (auto& v : *found) {
    for (const Candidate& c : v) byq[static_cast<size_t>(pos[static_cast<size_t>(c.q)]++)] = c;
    std::vector<Candidate>().swap(v);
  }
  return byq;
}

// Per query feature, the nearest candidate of each image, then the kernel, summed per image.
std::vector<double> ScoreCandidates(const std::vector<Candidate>& byq, const std::vector<int64_t>& start, int64_t nq,
                                    int64_t num_images, const CannKernel& kernel, int threads) {
  ThreadScores scores(threads, num_images, kernel);
  const int64_t chunks = std::min<int64_t>(nq, 4 * threads);
  ParallelFor(chunks, threads, [&](int64_t t, int tid) {
    ScoreAccumulator& acc = scores[tid];
    for (int64_t q = t * nq / chunks; q < (t + 1) * nq / chunks; ++q) {
      for (int64_t i = start[static_cast<size_t>(q)]; i < start[static_cast<size_t>(q + 1)]; ++i) {
        acc.Offer(byq[static_cast<size_t>(i)].image, byq[static_cast<size_t>(i)].d2);
      }
      acc.CloseFeature();
    }
  });
  return scores.Sum();
}

// The nearest list of each of the n rows. uint8 rows are converted to float a chunk at a
// time: a float copy of every feature would cost 512 bytes per SIFT feature while the map
// is built (gigabytes at city scale) for labels that do not depend on the chunking.
std::vector<int64_t> AssignLists(const uint8_t* rows, knn::Element element, int64_t n, int64_t dim,
                                 const knn::CoarseQuantizer& quantizer, int num_threads) {
  constexpr int64_t kChunk = int64_t{1} << 16;
  std::vector<int64_t> list(static_cast<size_t>(n));
  std::vector<float> chunk;
  for (int64_t r0 = 0; r0 < n; r0 += kChunk) {
    const int64_t m = std::min(kChunk, n - r0);
    const float* x = reinterpret_cast<const float*>(rows) + r0 * dim;
    if (element == knn::Element::kUInt8) {
      chunk.resize(static_cast<size_t>(m * dim));
      const uint8_t* src = rows + r0 * dim;
      for (int64_t i = 0; i < m * dim; ++i) chunk[static_cast<size_t>(i)] = static_cast<float>(src[i]);
      x = chunk.data();
    }
    quantizer.Assign(x, m, 1, list.data() + r0, nullptr, num_threads);
  }
  return list;
}

}  // namespace

IvfLayout BuildIvfLayout(const uint8_t* rows, knn::Element element, int64_t dim, const std::vector<int64_t>& image_ids,
                         const std::vector<float>& centroids, int num_threads) {
  IvfLayout L;
  const int64_t n = static_cast<int64_t>(image_ids.size());
  L.quantizer = knn::CoarseQuantizer(centroids, dim);
  const int64_t nlist = L.quantizer.size();
  const std::vector<int64_t> list = AssignLists(rows, element, n, dim, L.quantizer, num_threads);
  L.images = DistinctImages(image_ids);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (list[a] != list[b]) return list[a] < list[b];
    if (image_ids[a] != image_ids[b]) return image_ids[a] < image_ids[b];
    return a < b;
  });
  // Each list starts on a whole block; its slots follow `order`, then padding.
  std::vector<int64_t> count(static_cast<size_t>(nlist), 0);
  for (int64_t i = 0; i < n; ++i) ++count[static_cast<size_t>(list[i])];
  L.list_block.assign(static_cast<size_t>(nlist + 1), 0);
  for (int64_t l = 0; l < nlist; ++l) {
    L.list_block[static_cast<size_t>(l + 1)] =
        L.list_block[static_cast<size_t>(l)] + (count[static_cast<size_t>(l)] + knn::kBlock - 1) / knn::kBlock;
  }
  const int64_t num_slots = L.list_block.back() * knn::kBlock;
  std::vector<int64_t> source(static_cast<size_t>(num_slots), -1);
  std::vector<int32_t> slot_image(static_cast<size_t>(num_slots), -1);
  // Where each feature went: what a saved layout needs to give back the insertion order.
  std::vector<int64_t> feature_slot(static_cast<size_t>(n));
  std::vector<int64_t> fill(static_cast<size_t>(nlist), 0);
  for (int64_t src : order) {
    const int64_t l = list[static_cast<size_t>(src)];
    const int64_t slot = L.list_block[static_cast<size_t>(l)] * knn::kBlock + fill[static_cast<size_t>(l)]++;
    source[static_cast<size_t>(slot)] = src;
    feature_slot[static_cast<size_t>(src)] = slot;
    slot_image[static_cast<size_t>(slot)] = static_cast<int32_t>(
        std::lower_bound(L.images.begin(), L.images.end(), image_ids[static_cast<size_t>(src)]) - L.images.begin());
  }
  L.rows = BuildBlockedRows(rows, element, dim, source);
  L.slot_image = ConstArray<int32_t>(std::move(slot_image));
  L.feature_slot = ConstArray<int64_t>(std::move(feature_slot));
  return L;
}

void ValidateIvfLayout(const IvfLayout& L, int64_t n, int64_t dim) {
  const int64_t nlist = L.quantizer.size();
  PYL_CHECK_FORMAT(L.quantizer.dim() == dim, "CANNIndex ivf centroids do not match dim (corrupt)");
  const int64_t num_slots = static_cast<int64_t>(L.rows.norms.size());
  PYL_CHECK_FORMAT(nlist >= 1 && static_cast<int64_t>(L.list_block.size()) == nlist + 1 && L.list_block[0] == 0,
                   "CANNIndex ivf lists do not match the centroids (corrupt)");
  for (int64_t l = 0; l < nlist; ++l) {
    PYL_CHECK_FORMAT(L.list_block[static_cast<size_t>(l + 1)] >= L.list_block[static_cast<size_t>(l)],
                     "CANNIndex ivf list ", l, " has a negative size (corrupt)");
  }
  PYL_CHECK_FORMAT(
      num_slots % knn::kBlock == 0 && L.list_block.back() == num_slots / knn::kBlock &&
          static_cast<int64_t>(L.rows.blocks.size()) == num_slots * dim * static_cast<int64_t>(L.rows.element_size()) &&
          static_cast<int64_t>(L.slot_image.size()) == num_slots && static_cast<int64_t>(L.feature_slot.size()) == n &&
          n <= num_slots,
      "CANNIndex ivf sections disagree in size (corrupt)");
  for (size_t i = 0; i < L.images.size(); ++i) {
    PYL_CHECK_FORMAT(L.images[i] >= 0 && (i == 0 || L.images[i] > L.images[i - 1]),
                     "CANNIndex ivf image ids are not distinct, ascending and >= 0 (corrupt)");
  }
  // A search indexes `images` with every slot's entry: checked here, once, not per query.
  const int32_t num_images = static_cast<int32_t>(L.images.size());
  int64_t used = 0;
  for (int64_t s = 0; s < num_slots; ++s) {
    const int32_t image = L.slot_image[static_cast<size_t>(s)];
    PYL_CHECK_FORMAT(image >= -1 && image < num_images, "CANNIndex ivf slot ", s, " names image ", image, " of ",
                     num_images, " (corrupt)");
    used += image >= 0;
  }
  PYL_CHECK_FORMAT(used == n, "CANNIndex ivf layout holds ", used, " features, the file says ", n, " (corrupt)");
}

void IvfInsertionOrder(const IvfLayout& L, std::vector<uint8_t>* rows, std::vector<int64_t>* image_ids) {
  const int64_t n = static_cast<int64_t>(L.feature_slot.size());
  const int64_t num_slots = static_cast<int64_t>(L.slot_image.size());
  const size_t row_bytes = static_cast<size_t>(L.rows.dim) * L.rows.element_size();
  rows->resize(static_cast<size_t>(n) * row_bytes);
  image_ids->resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if ((i & 65535) == 65535) InterruptPoint();
    const int64_t slot = L.feature_slot[static_cast<size_t>(i)];
    // Checked here rather than at load: a search never reads feature_slot, so a mapped
    // load need not touch it; two features naming one slot would only duplicate a row.
    PYL_CHECK_FORMAT(slot >= 0 && slot < num_slots && L.slot_image[static_cast<size_t>(slot)] >= 0,
                     "CANNIndex ivf feature ", i, " is in slot ", slot, ", not a feature's slot (corrupt file)");
    L.rows.GetRow(slot, rows->data() + static_cast<size_t>(i) * row_bytes);
    (*image_ids)[static_cast<size_t>(i)] = L.images[static_cast<size_t>(L.slot_image[static_cast<size_t>(slot)])];
  }
}

void SearchIvf(const IvfLayout& L, int64_t dim, const float* queries, int64_t nq, int64_t k, const CannKernel& kernel,
               int64_t nprobe, float* scores, int64_t* image_ids, int num_threads) {
  const int64_t nlist = static_cast<int64_t>(L.list_block.size()) - 1;
  const int64_t num_images = static_cast<int64_t>(L.images.size());
  std::vector<double> total(static_cast<size_t>(num_images), 0.0);
  if (nq > 0 && num_images > 0) {
    const int threads = std::max(1, num_threads);
    const std::vector<std::vector<int32_t>> by_list =
        QueriesByList(L, dim, queries, nq, std::min(nprobe, nlist), num_threads);
    const std::vector<float> qnorm = knn::SquaredNorms(queries, nq, dim);
    const double cut = kernel.Cutoff();
    const float cut2 = static_cast<float>(cut * cut);
    std::vector<std::vector<Candidate>> found(static_cast<size_t>(threads));
    std::vector<ScanScratch> scratch(static_cast<size_t>(threads));
    ParallelFor(nlist, threads, [&](int64_t l, int tid) {
      ScanList(L, dim, l, by_list[static_cast<size_t>(l)], queries, qnorm, cut2, &scratch[static_cast<size_t>(tid)],
               &found[static_cast<size_t>(tid)]);
    });
    std::vector<int64_t> start;
    const std::vector<Candidate> byq = GroupByQuery(&found, nq, &start);
    total = ScoreCandidates(byq, start, nq, num_images, kernel, threads);
  }
  TopImages(total, L.images, nq, k, scores, image_ids);
}

}  // namespace cann

void CannIndex::Train(int64_t nlist, int iterations, uint64_t seed, int64_t max_points_per_list, int num_threads) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  MaterializeLocked();  // k-means reads the rows, and the old lists' layout is replaced
  const int64_t n = static_cast<int64_t>(image_ids_.size());
  PYL_CHECK(nlist >= 1, "nlist must be >= 1, got ", nlist);
  PYL_CHECK(n >= nlist, "training ", nlist, " lists needs at least that many features; the index has ", n,
            ": add features first or lower nlist");
  // k-means reads only its training subsample: convert those rows, not a float copy of all
  const uint8_t* rows = rows_.data();
  const int64_t dim = dim_;
  const bool bytes = element_ == static_cast<int>(knn::Element::kUInt8);
  const knn::RowReader row = [rows, dim, bytes](int64_t i, float* out) {
    if (bytes) {
      for (int64_t d = 0; d < dim; ++d) out[d] = static_cast<float>(rows[i * dim + d]);
    } else {
      std::memcpy(out, rows + i * dim * static_cast<int64_t>(sizeof(float)), static_cast<size_t>(dim) * sizeof(float));
    }
  };
  knn::KMeansResult km = knn::KMeans(row, n, dim_, nlist, iterations, seed, max_points_per_list, num_threads);
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

}  // namespace pylocalize
