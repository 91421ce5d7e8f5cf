#include "pylocalize/hamming/code_store.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_set>
#include <utility>

#include "pylocalize/util/check.h"
#include "pylocalize/util/threads.h"
#include "pylocalize/util/topk.h"

namespace pylocalize {
namespace hamming {

void CodeStore::MakeOwned() {
  if (owner_ == nullptr) return;
  owned_.assign(data_, data_ + num_words());
  data_ = owned_.data();
  owner_.reset();
}

void CodeStore::Append(const uint64_t* rows, int64_t n) {
  if (n <= 0) return;
  MakeOwned();
  const int64_t total = n_ + n;
  owned_.resize(static_cast<size_t>((total + kBlock - 1) / kBlock * words_ * kBlock), 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t pos = n_ + i;
    uint64_t* blk = owned_.data() + (pos / kBlock) * words_ * kBlock + pos % kBlock;
    for (int64_t w = 0; w < words_; ++w) blk[w * kBlock] = rows[i * words_ + w];
  }
  n_ = total;
  data_ = owned_.data();
}

void CodeStore::GetRow(int64_t i, uint64_t* out) const {
  const uint64_t* blk = data_ + (i / kBlock) * words_ * kBlock + i % kBlock;
  for (int64_t w = 0; w < words_; ++w) out[w] = blk[w * kBlock];
}

void CodeStore::Compact(const std::vector<uint8_t>& keep) {
  MakeOwned();
  std::vector<uint64_t> row(static_cast<size_t>(words_));
  int64_t out = 0;
  for (int64_t i = 0; i < n_; ++i) {
    if (!keep[static_cast<size_t>(i)]) continue;
    if (out != i) {
      GetRow(i, row.data());
      uint64_t* blk = owned_.data() + (out / kBlock) * words_ * kBlock + out % kBlock;
      for (int64_t w = 0; w < words_; ++w) blk[w * kBlock] = row[static_cast<size_t>(w)];
    }
    ++out;
  }
  n_ = out;
  owned_.resize(static_cast<size_t>(num_words()));
  // Padding lanes of the last block must be zero, as Append leaves them.
  for (int64_t pos = n_; pos < num_blocks() * kBlock; ++pos) {
    uint64_t* blk = owned_.data() + (pos / kBlock) * words_ * kBlock + pos % kBlock;
    for (int64_t w = 0; w < words_; ++w) blk[w * kBlock] = 0;
  }
  data_ = owned_.data();
}

void CodeStore::Clear() {
  owned_.clear();
  owned_.shrink_to_fit();
  owner_.reset();
  data_ = nullptr;
  n_ = 0;
}

void CodeStore::AssignBlocks(const uint64_t* blocks, int64_t n) {
  owner_.reset();
  n_ = n;
  owned_.assign(blocks, blocks + num_words());
  data_ = owned_.data();
}

int64_t CodeStore::FirstCodeOutside(const std::vector<uint64_t>& allowed) const {
  for (int64_t w = 0; w < words_; ++w) {
    const uint64_t outside = ~allowed[static_cast<size_t>(w)];
    if (outside == 0) continue;
    for (int64_t i = 0; i < n_; ++i) {
      if (data_[(i / kBlock) * words_ * kBlock + w * kBlock + i % kBlock] & outside) return i;
    }
  }
  return -1;
}

void IdList::MakeOwned() {
  if (owner_ == nullptr) return;
  owned_.assign(data_, data_ + n_);
  data_ = owned_.data();
  owner_.reset();
}

void IdList::Append(const int64_t* ids, int64_t n) {
  // Checked before anything changes, so a refused add leaves the index as it was.
  for (int64_t i = 0; ids != nullptr && i < n; ++i) {
    // -1 pads search results: a stored -1 (or any negative id) would read as "no result".
    PYL_CHECK(ids[i] >= 0 && ids[i] < INT64_MAX,
              "ids must be in 0..2**63-2 (-1 marks empty "
              "result slots), got ",
              ids[i], " at position ", i, "; renumber them to non-negative ids");
  }
  PYL_CHECK(ids != nullptr || next_id_ <= INT64_MAX - n, "default ids would overflow int64: pass ids=");
  MakeOwned();
  int64_t prev = n_ > 0 ? owned_.back() : INT64_MIN;
  const int64_t first = next_id_;
  owned_.reserve(owned_.size() + static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = ids != nullptr ? ids[i] : first + i;
    if (id <= prev) ascending_ = false;
    prev = id;
    next_id_ = std::max(next_id_, id + 1);
    owned_.push_back(id);
  }
  data_ = owned_.data();
  n_ += n;
}

std::vector<uint8_t> IdList::KeepMask(const int64_t* drop, int64_t n, int64_t* removed) const {
  const std::unordered_set<int64_t> dropped(drop, drop + n);
  std::vector<uint8_t> keep(static_cast<size_t>(n_), 1);
  *removed = 0;
  for (int64_t i = 0; i < n_; ++i) {
    if (dropped.count(data_[i])) {
      keep[static_cast<size_t>(i)] = 0;
      ++*removed;
    }
  }
  return keep;
}

void IdList::Compact(const std::vector<uint8_t>& keep) {
  MakeOwned();
  int64_t out = 0;
  for (int64_t i = 0; i < n_; ++i) {
    if (keep[static_cast<size_t>(i)]) owned_[static_cast<size_t>(out++)] = owned_[static_cast<size_t>(i)];
  }
  owned_.resize(static_cast<size_t>(out));
  data_ = owned_.data();
  n_ = out;  // removal keeps order: ascending ids stay ascending
}

void IdList::Clear() {
  owned_.clear();
  owner_.reset();
  data_ = owned_.data();
  n_ = 0;
  ascending_ = true;
  next_id_ = 0;
}

void IdList::Assign(const int64_t* ids, int64_t n, int64_t next_id, std::shared_ptr<const void> owner) {
  if (owner != nullptr) {
    owned_.clear();
    data_ = ids;
    owner_ = std::move(owner);
  } else {
    owned_.assign(ids, ids + n);
    data_ = owned_.data();
    owner_.reset();
  }
  n_ = n;
  next_id_ = next_id;
  ascending_ = true;
  for (int64_t i = 0; i < n; ++i) {
    // Add never stores a negative id (-1 pads results) and keeps next_id above every id
    // (so default ids stay unique), so a file breaking either is damaged.
    PYL_CHECK_FORMAT(ids[i] >= 0 && ids[i] < next_id, "index file has id ", ids[i], " at row ", i, " with next_id ",
                     next_id, " (corrupt)");
  }
  PYL_CHECK_FORMAT(next_id >= 0, "index file has a negative next_id (corrupt)");
  for (int64_t i = 1; i < n; ++i) {
    if (ids[i] <= ids[i - 1]) {
      ascending_ = false;
      break;
    }
  }
}

void CodeStore::Borrow(const uint64_t* blocks, int64_t n, std::shared_ptr<const void> owner) {
  owned_.clear();
  owner_ = std::move(owner);
  data_ = blocks;
  n_ = n;
}

namespace {

// Tiles: a chunk of blocks small enough to stay in L1/L2 while a group of queries
// passes over it, and query groups whose distance rows fit beside it.
constexpr int64_t kQueryGroup = 8;

// With many queries a chunk is sized for L1 reuse across query groups; with one or two
// there is nothing to reuse and larger chunks cut per-tile overhead.
int64_t ChunkBlocks(int64_t words, int64_t nq) {
  const int64_t bytes_per_block = words * kBlock * 8;
  const int64_t budget = nq <= 2 ? 262144 : 16384;
  int64_t cb = std::max<int64_t>(8, budget / bytes_per_block);
  cb = std::min<int64_t>(cb, nq <= 2 ? 2048 : 128);
  return cb / 8 * 8;  // a mask word covers 8 blocks
}

template <typename D>
struct TileBuffers {
  std::vector<D> dist;
  std::vector<uint8_t> mask;
};

// Points the kernel's threshold and distance slots of type D at the buffers.
inline void SetSlots(ScanArgs* a, const int32_t* thr, int32_t* dist) {
  a->thresholds = thr;
  a->dist = dist;
}
inline void SetSlots(ScanArgs* a, const float* thr, float* dist) {
  a->fthresholds = thr;
  a->fdist = dist;
}

// For SDC keys -(a - b S) * s with s in [s_min, s_max] (s > 0), the integer bound on S
// that every code with key < t meets, with a margin for float rounding.
int32_t SdcPreBound(const ScanSource& src, float t) {
  if (!(t < std::numeric_limits<float>::max())) return INT32_MAX;
  const double s = t < 0.0f ? src.scale_max : src.scale_min;
  if (s <= 0.0) return INT32_MAX;
  const double bound = (static_cast<double>(src.sdc_a) + t / s) / src.sdc_b;
  if (bound >= static_cast<double>(INT32_MAX) - 4.0) return INT32_MAX;
  if (bound < -2.0) return INT32_MIN;
  return static_cast<int32_t>(std::floor(bound)) + 2;
}

// Scans queries [q0, q1) against blocks [b0, b1), calling visit(q, pos, dist) for each
// code whose distance is below threshold(q) at the time its tile was scanned; threshold
// values are refreshed by `refresh(q)` after each tile.
template <typename D, class Threshold, class Visit>
void ScanTiles(const ScanSource& src, const uint64_t* queries, int64_t query_stride, int64_t q0, int64_t q1, int64_t b0,
               int64_t b1, TileBuffers<D>* buf, Threshold threshold, Visit visit) {
  const CodeStore& store = *src.store;
  const int64_t words = store.words_per_code();
  const int64_t cb = ChunkBlocks(words, q1 - q0);
  const int64_t ld = cb * kBlock;
  const int64_t mld = cb;  // one mask byte per block; cb is a multiple of 8
  buf->dist.resize(static_cast<size_t>(kQueryGroup * ld));
  buf->mask.resize(static_cast<size_t>(kQueryGroup * mld));
  D thr[kQueryGroup];
  int32_t pre[kQueryGroup];  // SDC: integer pre-test bounds
  const int64_t n = store.size();
  for (int64_t c = b0; c < b1; c += cb) {
    InterruptPoint();
    const int64_t nb = std::min(cb, b1 - c);
    for (int64_t g = q0; g < q1; g += kQueryGroup) {
      const int64_t ng = std::min(kQueryGroup, q1 - g);
      for (int64_t j = 0; j < ng; ++j) thr[j] = threshold(g + j);
      ScanArgs a;
      a.queries = queries + g * query_stride;
      a.nq = ng;
      a.query_stride = query_stride;
      a.blocks = store.blocks() + c * words * kBlock;
      a.nblocks = nb;
      a.words_per_code = words;
      SetSlots(&a, thr, buf->dist.data());
      if (src.scales != nullptr) {
        for (int64_t j = 0; j < ng; ++j) pre[j] = SdcPreBound(src, static_cast<float>(thr[j]));
        a.thresholds = pre;
      }
      a.ld = ld;
      a.mask = buf->mask.data();
      a.mld = mld;
      a.scales = src.scales != nullptr ? src.scales + c * kBlock : nullptr;
      a.sdc_a = src.sdc_a;
      a.sdc_b = src.sdc_b;
      a.sign_thresholds = src.sign_thresholds != nullptr ? src.sign_thresholds + g : nullptr;
      src.kernel(a, src.context);
      const int64_t nmask = (nb + 7) / 8;
      for (int64_t j = 0; j < ng; ++j) {
        uint8_t* m = a.mask + j * mld;
        const D* d = buf->dist.data() + j * ld;
        for (int64_t b = nb; b < nmask * 8; ++b) m[b] = 0;  // tail of a partial chunk
        for (int64_t mw = 0; mw < nmask; ++mw) {
          uint64_t bits;
          std::memcpy(&bits, m + mw * 8, 8);  // byte b -> bits 8b..8b+7 (little-endian)
          while (bits != 0) {
            const int64_t local = mw * 64 + __builtin_ctzll(bits);
            bits &= bits - 1;
            const int64_t pos = c * kBlock + local;
            if (pos < n) visit(g + j, pos, d[local]);
          }
        }
      }
    }
  }
}

inline int64_t IdAt(const ScanSource& src, int64_t pos) { return src.ids != nullptr ? src.ids[pos] : pos; }

// Threshold that lets through exactly the candidates that can still enter the heap.
// (Kernels test distance < threshold; with unordered ids a tie may still win on its id.)
inline int32_t NextUp(int32_t d) { return d == INT32_MAX ? d : d + 1; }
inline float NextUp(float d) { return std::nextafter(d, std::numeric_limits<float>::infinity()); }

template <typename D>
D HeapThreshold(const TopK<D>& h, bool ids_ascending) {
  if (!h.full()) return std::numeric_limits<D>::max();
  const D worst = h.Threshold();
  return ids_ascending ? worst : NextUp(worst);
}

// Below this many query x code words, threads cost more than they save.
constexpr int64_t kMinWorkPerThread = 1 << 15;

int EffectiveThreads(int num_threads, int64_t nq, const CodeStore& store) {
  const int64_t work = nq * store.num_blocks() * kBlock * store.words_per_code();
  const int64_t cap = std::max<int64_t>(1, work / kMinWorkPerThread);
  return static_cast<int>(std::min<int64_t>(num_threads, cap));
}

}  // namespace

template <typename D>
void KnnScan(const ScanSource& src, const uint64_t* queries, int64_t nq, int64_t query_stride, int64_t k, D* distances,
             int64_t* ids, D pad, int num_threads) {
  if (nq <= 0) return;
  const CodeStore& store = *src.store;
  const int64_t nblocks = store.num_blocks();
  const int threads = EffectiveThreads(num_threads, nq, store);
  const bool asc = src.ids_ascending;
  if (threads <= 1 || nq >= 4 * threads) {
    // Many queries: each task owns a chunk of queries and scans the whole database.
    const int64_t qch = std::max<int64_t>(kQueryGroup, std::min<int64_t>(256, (nq + 2 * threads - 1) / (2 * threads)));
    const int64_t ntasks = (nq + qch - 1) / qch;
    std::vector<TileBuffers<D>> bufs(static_cast<size_t>(std::max(threads, 1)));
    ParallelFor(ntasks, threads, [&](int64_t t, int tid) {
      const int64_t q0 = t * qch, q1 = std::min(nq, q0 + qch);
      std::vector<TopK<D>> heaps(static_cast<size_t>(q1 - q0), TopK<D>(k));
      ScanTiles(
          src, queries, query_stride, q0, q1, 0, nblocks, &bufs[static_cast<size_t>(tid)],
          [&](int64_t q) { return HeapThreshold(heaps[static_cast<size_t>(q - q0)], asc); },
          [&](int64_t q, int64_t pos, D d) { heaps[static_cast<size_t>(q - q0)].Push(d, IdAt(src, pos)); });
      for (int64_t q = q0; q < q1; ++q) {
        heaps[static_cast<size_t>(q - q0)].Extract(distances + q * k, ids + q * k, pad);
      }
    });
    return;
  }
  // Few queries: split the database across threads (FAISS parallelizes over queries only,
  // so a single query runs on one core there), then merge the per-thread heaps.
  const int64_t ranges = std::min<int64_t>((nblocks + 7) / 8, 4 * threads);
  const int64_t per = ((nblocks + ranges - 1) / ranges + 7) / 8 * 8;
  std::vector<std::vector<TopK<D>>> heaps(static_cast<size_t>(threads),
                                          std::vector<TopK<D>>(static_cast<size_t>(nq), TopK<D>(k)));
  std::vector<TileBuffers<D>> bufs(static_cast<size_t>(threads));
  ParallelFor(ranges, threads, [&](int64_t r, int tid) {
    const int64_t b0 = r * per, b1 = std::min(nblocks, b0 + per);
    if (b0 >= b1) return;
    auto& mine = heaps[static_cast<size_t>(tid)];
    ScanTiles(
        src, queries, query_stride, 0, nq, b0, b1, &bufs[static_cast<size_t>(tid)],
        // A thread may take ranges out of order, so positions (and ids) are not
        // ascending within its heap: let ties through and compare ids in Push.
        [&](int64_t q) { return HeapThreshold(mine[static_cast<size_t>(q)], false); },
        [&](int64_t q, int64_t pos, D d) { mine[static_cast<size_t>(q)].Push(d, IdAt(src, pos)); });
  });
  for (int64_t q = 0; q < nq; ++q) {
    auto& h = heaps[0][static_cast<size_t>(q)];
    for (int t = 1; t < threads; ++t) h.Merge(heaps[static_cast<size_t>(t)][static_cast<size_t>(q)]);
    h.Extract(distances + q * k, ids + q * k, pad);
  }
}

template void KnnScan<int32_t>(const ScanSource&, const uint64_t*, int64_t, int64_t, int64_t, int32_t*, int64_t*,
                               int32_t, int);
template void KnnScan<float>(const ScanSource&, const uint64_t*, int64_t, int64_t, int64_t, float*, int64_t*, float,
                             int);

RangeResult RangeScan(const ScanSource& src, const uint64_t* queries, int64_t nq, int64_t query_stride, int32_t radius,
                      int num_threads) {
  RangeResult out;
  out.lims.assign(static_cast<size_t>(nq + 1), 0);
  if (nq <= 0) return out;
  const CodeStore& store = *src.store;
  const int64_t nblocks = store.num_blocks();
  const int threads = EffectiveThreads(num_threads, nq, store);
  const int32_t thr = radius == INT32_MAX ? INT32_MAX : radius + 1;
  using Hits = std::vector<std::pair<int32_t, int64_t>>;
  std::vector<Hits> hits(static_cast<size_t>(nq));
  const bool by_queries = threads <= 1 || nq >= 4 * threads;
  const int64_t ranges = by_queries ? 1 : std::min<int64_t>((nblocks + 7) / 8, 4 * threads);
  const int64_t per = by_queries ? nblocks : ((nblocks + ranges - 1) / ranges + 7) / 8 * 8;
  const int64_t qch = by_queries ? std::max<int64_t>(kQueryGroup, (nq + 2 * threads - 1) / (2 * threads)) : nq;
  const int64_t qtasks = (nq + qch - 1) / qch;
  // One hit list per (range, query), concatenated in range order below.
  std::vector<Hits> parts(static_cast<size_t>(ranges * nq));
  std::vector<TileBuffers<int32_t>> bufs(static_cast<size_t>(std::max(threads, 1)));
  ParallelFor(qtasks * ranges, threads, [&](int64_t t, int tid) {
    const int64_t r = t % ranges, qt = t / ranges;
    const int64_t q0 = qt * qch, q1 = std::min(nq, q0 + qch);
    const int64_t b0 = r * per, b1 = std::min(nblocks, b0 + per);
    if (b0 >= b1) return;
    ScanTiles(
        src, queries, query_stride, q0, q1, b0, b1, &bufs[static_cast<size_t>(tid)], [&](int64_t) { return thr; },
        [&](int64_t q, int64_t pos, int32_t d) {
          parts[static_cast<size_t>(r * nq + q)].emplace_back(d, IdAt(src, pos));
        });
  });
  for (int64_t q = 0; q < nq; ++q) {
    Hits& h = hits[static_cast<size_t>(q)];
    for (int64_t r = 0; r < ranges; ++r) {
      Hits& p = parts[static_cast<size_t>(r * nq + q)];
      h.insert(h.end(), p.begin(), p.end());
      Hits().swap(p);
    }
    std::sort(h.begin(), h.end());
    out.lims[static_cast<size_t>(q + 1)] = out.lims[static_cast<size_t>(q)] + static_cast<int64_t>(h.size());
  }
  out.distances.reserve(static_cast<size_t>(out.lims.back()));
  out.ids.reserve(static_cast<size_t>(out.lims.back()));
  for (const Hits& h : hits) {
    for (const auto& e : h) {
      out.distances.push_back(e.first);
      out.ids.push_back(e.second);
    }
  }
  return out;
}

}  // namespace hamming
}  // namespace pylocalize
