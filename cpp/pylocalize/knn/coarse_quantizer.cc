#include "pylocalize/knn/coarse_quantizer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "pylocalize/knn/kernels.h"
#include "pylocalize/knn/kmeans.h"
#include "pylocalize/util/check.h"
#include "pylocalize/util/threads.h"
#include "pylocalize/util/topk.h"

namespace pylocalize {
namespace knn {
namespace {

constexpr int64_t kTileRows = 64;                        // rows per DotTile
constexpr int64_t kTileBytes = 1 << 17;                  // centroid bytes per DotTile: 128 KB, in L2
constexpr int64_t kMinWorkPerThread = int64_t{1} << 24;  // multiply-adds: ~5 ms of one core
constexpr int64_t kChunkRows = 1 << 16;                  // rows whose candidates are held at once
constexpr int kGroupIterations = 10;

double SquaredNorm(const float* x, int64_t dim) {
  double s = 0.0;
  for (int64_t d = 0; d < dim; ++d) s += static_cast<double>(x[d]) * x[d];
  return s;
}

// Offers the n centroids of one tile row, ||c||^2 - 2 <x, c> for slot c, to `top` under
// the id id(c) (< 0: padding, skipped). Every slot is offered until `top` is full; after
// that almost none can enter, so each chunk is first tested against the threshold in a
// loop the compiler vectorizes and only its survivors reach Push. Push still decides (ties
// to the smaller id), so the result is that of offering every slot in turn.
template <class IdOf>
void OfferRow(const float* norms, const float* dots, int64_t n, IdOf id_of, TopK<float>* top) {
  constexpr int64_t kChunk = 16;
  int64_t c = 0;
  for (; c < n && !top->full(); ++c) {
    const int64_t id = id_of(c);
    if (id >= 0) top->Push(norms[c] - 2.0f * dots[c], id);
  }
  float threshold = top->Threshold();
  for (; c < n; c += kChunk) {
    const int64_t m = std::min(kChunk, n - c);
    float v[kChunk];
    bool any = false;
    for (int64_t j = 0; j < m; ++j) {
      v[j] = norms[c + j] - 2.0f * dots[c + j];
      any |= v[j] <= threshold;
    }
    if (!any) continue;
    for (int64_t j = 0; j < m; ++j) {
      const int64_t id = id_of(c + j);
      if (v[j] <= threshold && id >= 0) {
        top->Push(v[j], id);
        threshold = top->Threshold();
      }
    }
  }
}

}  // namespace

namespace {

template <class T>
BlockedCentroids BlockAs(const T* c, int64_t k, int64_t dim, Element element) {
  BlockedCentroids b;
  b.element = element;
  b.k = k;
  b.nblocks = (k + kBlock - 1) / kBlock;
  b.blocks.assign(static_cast<size_t>(b.nblocks * dim * kBlock) * sizeof(T), 0);
  b.norms.assign(static_cast<size_t>(b.nblocks * kBlock), std::numeric_limits<float>::infinity());
  T* out = reinterpret_cast<T*>(b.blocks.data());
  for (int64_t i = 0; i < k; ++i) {
    double norm = 0.0;
    for (int64_t d = 0; d < dim; ++d) {
      const T v = c[i * dim + d];
      out[static_cast<size_t>(((i / kBlock) * dim + d) * kBlock + i % kBlock)] = v;
      norm += static_cast<double>(v) * static_cast<double>(v);
    }
    b.norms[static_cast<size_t>(i)] = static_cast<float>(norm);
  }
  return b;
}

}  // namespace

BlockedCentroids Block(const float* c, int64_t k, int64_t dim) { return BlockAs(c, k, dim, Element::kFloat32); }

BlockedCentroids Block(const uint8_t* c, int64_t k, int64_t dim) { return BlockAs(c, k, dim, Element::kUInt8); }

void AssignBlocked(const BlockedCentroids& b, const float* x, int64_t n, int64_t dim, int64_t m, int64_t* labels,
                   float* distances, int num_threads) {
  // Tiles of kTileRows rows x kTileBytes of centroids: a tile of every centroid of a large
  // set (matching a query's features against ~10^4 map features) would not stay in cache
  // between the dot products and the selection
  const int64_t block_bytes = dim * kBlock * static_cast<int64_t>(b.element_size());
  const int64_t tile_blocks = std::min(b.nblocks, std::max<int64_t>(1, kTileBytes / block_bytes));
  const int64_t ld = tile_blocks * kBlock;
  // A small problem (an object crop's few hundred patches against a template's) runs on one
  // thread: waking a pool costs more than it saves, ~10x more on a loaded machine
  // (benchmarks/README.md, objects); each thread gets at least kMinWorkPerThread products.
  const int64_t work = n * b.nblocks * kBlock * dim;
  num_threads = static_cast<int>(std::min<int64_t>(num_threads <= 0 ? GetNumThreads() : num_threads,
                                                   std::max<int64_t>(1, work / kMinWorkPerThread)));
  ParallelFor((n + kTileRows - 1) / kTileRows, num_threads, [&](int64_t t, int) {
    InterruptPoint();
    const int64_t r0 = t * kTileRows, r1 = std::min(n, r0 + kTileRows);
    std::vector<float> tile(static_cast<size_t>((r1 - r0) * ld));
    std::vector<TopK<float>> top(static_cast<size_t>(r1 - r0), TopK<float>(m));
    for (int64_t c0 = 0; c0 < b.nblocks; c0 += tile_blocks) {
      const int64_t nb = std::min(tile_blocks, b.nblocks - c0);
      const int64_t first = c0 * kBlock, count = std::min(nb * kBlock, b.k - first);
      DotTile(x + r0 * dim, r1 - r0, dim, b.block(c0, dim), b.element, nb, tile.data(), ld);
      for (int64_t r = r0; r < r1; ++r) {
        // every centroid is offered, so m <= k labels always come back, whatever the values
        OfferRow(
            b.norms.data() + first, tile.data() + (r - r0) * ld, count, [first](int64_t c) { return first + c; },
            &top[static_cast<size_t>(r - r0)]);
      }
    }
    std::vector<float> dd(static_cast<size_t>(m));
    for (int64_t r = r0; r < r1; ++r) {
      top[static_cast<size_t>(r - r0)].Extract(dd.data(), labels + r * m, std::numeric_limits<float>::infinity());
      if (distances != nullptr) {
        const float xn = static_cast<float>(SquaredNorm(x + r * dim, dim));
        for (int64_t j = 0; j < m; ++j) distances[r * m + j] = std::max(0.0f, dd[static_cast<size_t>(j)] + xn);
      }
    }
  });
}

CoarseQuantizer::CoarseQuantizer(std::vector<float> centroids, int64_t dim, uint64_t seed, int64_t group_probe)
    : centroids_(std::move(centroids)), dim_(dim), group_probe_(group_probe) {
  PYL_CHECK(group_probe >= 1, "group_probe must be >= 1, got ", group_probe);
  PYL_CHECK(dim >= 1 && !centroids_.empty() && static_cast<int64_t>(centroids_.size()) % dim == 0,
            "a coarse quantizer needs at least one centroid of dimension >= 1");
  const int64_t k = size();
  flat_ = Block(centroids_.data(), k, dim);
  if (k < kTwoLevelMinCentroids) return;
  // Groups: k-means of the centroids themselves (flat, as there are fewer groups than the
  // threshold), seeded at random: k-means++ would cost more than the load of a city map
  const int64_t ngroups = std::min<int64_t>(kTwoLevelMinCentroids - 1, std::llround(std::sqrt(k)));
  const KMeansResult km = KMeans(centroids_.data(), k, dim, ngroups, kGroupIterations, seed, 0, GetNumThreads(), false);
  centres_ = Block(km.centroids.data(), ngroups, dim);
  std::vector<int64_t> group(static_cast<size_t>(k));
  AssignBlocked(centres_, centroids_.data(), k, dim, 1, group.data(), nullptr, GetNumThreads());
  std::vector<int64_t> count(static_cast<size_t>(ngroups), 0);
  for (int64_t g : group) ++count[static_cast<size_t>(g)];
  group_start_.assign(static_cast<size_t>(ngroups + 1), 0);
  for (int64_t g = 0; g < ngroups; ++g) {
    // an empty group's centre loses every probe to a non-empty group's
    if (count[static_cast<size_t>(g)] == 0)
      centres_.norms[static_cast<size_t>(g)] = std::numeric_limits<float>::infinity();
    group_start_[static_cast<size_t>(g + 1)] =
        group_start_[static_cast<size_t>(g)] + (count[static_cast<size_t>(g)] + kBlock - 1) / kBlock;
  }
  // Each group's members on whole blocks of their own, ascending ids, then padding
  const int64_t slots = group_start_.back() * kBlock;
  member_id_.assign(static_cast<size_t>(slots), -1);
  std::vector<float> rows(static_cast<size_t>(slots * dim), 0.0f);
  std::vector<int64_t> fill(static_cast<size_t>(ngroups), 0);
  for (int64_t c = 0; c < k; ++c) {
    const int64_t g = group[static_cast<size_t>(c)];
    const int64_t slot = group_start_[static_cast<size_t>(g)] * kBlock + fill[static_cast<size_t>(g)]++;
    member_id_[static_cast<size_t>(slot)] = c;
    std::copy(centroids_.begin() + c * dim, centroids_.begin() + (c + 1) * dim, rows.begin() + slot * dim);
  }
  members_ = Block(rows.data(), slots, dim);
}

void CoarseQuantizer::Assign(const float* x, int64_t n, int64_t m, int64_t* labels, float* distances,
                             int num_threads) const {
  PYL_CHECK(m >= 1 && m <= size(), "need 1 <= m <= ", size(), " centroids, got m = ", m);
  if (n <= 0) return;
  if (!two_level()) {
    AssignBlocked(flat_, x, n, dim_, m, labels, distances, num_threads);
  } else {
    AssignTwoLevel(x, n, m, labels, distances, num_threads);
  }
}

void CoarseQuantizer::AssignTwoLevel(const float* x, int64_t n, int64_t m, int64_t* labels, float* distances,
                                     int num_threads) const {
  const int64_t gp = std::min<int64_t>(group_probe_, static_cast<int64_t>(group_start_.size()) - 1);
  std::vector<int64_t> groups, cand_label;
  std::vector<float> cand_d2;
  for (int64_t r0 = 0; r0 < n; r0 += kChunkRows) {
    const int64_t nr = std::min(kChunkRows, n - r0);
    const float* xc = x + r0 * dim_;
    groups.resize(static_cast<size_t>(nr * gp));
    AssignBlocked(centres_, xc, nr, dim_, gp, groups.data(), nullptr, num_threads);
    SearchGroups(xc, nr, gp, groups, m, &cand_label, &cand_d2, num_threads);
    // Per row, the best m of its groups' candidates; a row whose groups hold fewer than m
    // centroids (a tiny group at the edge of the data) is searched flat
    ParallelFor((nr + kTileRows - 1) / kTileRows, num_threads, [&](int64_t t, int) {
      TopK<float> top(m);
      std::vector<float> dd(static_cast<size_t>(m));
      for (int64_t r = t * kTileRows; r < std::min(nr, (t + 1) * kTileRows); ++r) {
        for (int64_t i = r * gp * m; i < (r + 1) * gp * m; ++i) {
          if (cand_label[static_cast<size_t>(i)] >= 0)
            top.Push(cand_d2[static_cast<size_t>(i)], cand_label[static_cast<size_t>(i)]);
        }
        int64_t* out = labels + (r0 + r) * m;
        float* dist = distances != nullptr ? distances + (r0 + r) * m : nullptr;
        if (static_cast<int64_t>(top.size()) < m) {
          top.Clear();
          AssignBlocked(flat_, xc + r * dim_, 1, dim_, m, out, dist, 1);
          continue;
        }
        top.Extract(dd.data(), out, 0.0f);
        if (dist != nullptr) {
          const float xn = static_cast<float>(SquaredNorm(xc + r * dim_, dim_));
          for (int64_t j = 0; j < m; ++j) dist[j] = std::max(0.0f, dd[static_cast<size_t>(j)] + xn);
        }
      }
    });
  }
}

// The m nearest members of each of a row's gp groups, at cand[(r * gp + j) * m ...]: rows
// are gathered per group, so each group's members are read once per chunk, in tiles.
void CoarseQuantizer::SearchGroups(const float* x, int64_t n, int64_t gp, const std::vector<int64_t>& groups, int64_t m,
                                   std::vector<int64_t>* cand_label, std::vector<float>* cand_d2,
                                   int num_threads) const {
  const int64_t ngroups = static_cast<int64_t>(group_start_.size()) - 1;
  std::vector<int64_t> start(static_cast<size_t>(ngroups + 1), 0);
  for (int64_t g : groups) ++start[static_cast<size_t>(g + 1)];
  for (int64_t g = 0; g < ngroups; ++g) start[static_cast<size_t>(g + 1)] += start[static_cast<size_t>(g)];
  std::vector<int64_t> pairs(groups.size());  // (row, probe) pairs r * gp + j, by group
  std::vector<int64_t> pos(start.begin(), start.end() - 1);
  for (size_t p = 0; p < groups.size(); ++p) {
    pairs[static_cast<size_t>(pos[static_cast<size_t>(groups[p])]++)] = static_cast<int64_t>(p);
  }
  cand_label->assign(static_cast<size_t>(n * gp * m), -1);
  cand_d2->assign(static_cast<size_t>(n * gp * m), std::numeric_limits<float>::infinity());
  ParallelFor(ngroups, num_threads, [&](int64_t g, int) {
    const int64_t b0 = group_start_[static_cast<size_t>(g)], b1 = group_start_[static_cast<size_t>(g + 1)];
    const int64_t ld = (b1 - b0) * kBlock;
    if (ld == 0) return;
    std::vector<float> xs(static_cast<size_t>(kTileRows * dim_)), tile(static_cast<size_t>(kTileRows * ld));
    TopK<float> top(m);
    for (int64_t i = start[static_cast<size_t>(g)]; i < start[static_cast<size_t>(g + 1)]; i += kTileRows) {
      InterruptPoint();
      const int64_t nt = std::min(kTileRows, start[static_cast<size_t>(g + 1)] - i);
      for (int64_t t = 0; t < nt; ++t) {
        const float* row = x + (pairs[static_cast<size_t>(i + t)] / gp) * dim_;
        std::copy(row, row + dim_, xs.begin() + t * dim_);
      }
      DotTile(xs.data(), nt, dim_, members_.block(b0, dim_), members_.element, b1 - b0, tile.data(), ld);
      const float* norms = members_.norms.data() + b0 * kBlock;
      const int64_t* ids = member_id_.data() + b0 * kBlock;
      for (int64_t t = 0; t < nt; ++t) {
        OfferRow(norms, tile.data() + t * ld, ld, [ids](int64_t c) { return ids[c]; }, &top);
        const size_t at = static_cast<size_t>(pairs[static_cast<size_t>(i + t)] * m);
        top.Extract(cand_d2->data() + at, cand_label->data() + at, std::numeric_limits<float>::infinity());
      }
    }
  });
}

int64_t CoarseQuantizer::HeapBytes() const {
  const auto blocked = [](const BlockedCentroids& b) {
    return static_cast<int64_t>(b.blocks.size() + b.norms.size() * sizeof(float));
  };
  return static_cast<int64_t>(centroids_.size() * sizeof(float) +
                              (group_start_.size() + member_id_.size()) * sizeof(int64_t)) +
         blocked(flat_) + blocked(centres_) + blocked(members_);
}

}  // namespace knn
}  // namespace pylocalize
