#include "pylocalize/hamming/multibit.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <tuple>

#include "pylocalize/util/check.h"
#include "pylocalize/util/cpu.h"
#include "pylocalize/util/threads.h"
#include "pylocalize/util/topk.h"

namespace pylocalize {
namespace {

constexpr const char* kTag = "MultiBitIndex";

struct SdcContext {
  hamming::SdcKernel kernel;
  int bits_per_dim;
};

void SdcTile(const hamming::ScanArgs& args, const void* context) {
  const auto* c = static_cast<const SdcContext*>(context);
  c->kernel(args, c->bits_per_dim);
}

}  // namespace

void Binarize(const float* x, int64_t n, int64_t dim, int u, uint8_t* codes) {
  PYL_CHECK(u >= 1 && u <= 4, "bits_per_dim must be 1..4, got ", u);
  const int64_t plane_bytes = (dim + 7) / 8;
  const int64_t cs = u * plane_bytes;
  std::memset(codes, 0, static_cast<size_t>(n * cs));
  ParallelFor((n + 255) / 256, GetNumThreads(), [&](int64_t chunk, int) {
    std::vector<float> residual(static_cast<size_t>(dim));
    for (int64_t i = chunk * 256; i < std::min(n, (chunk + 1) * 256); ++i) {
      const float* v = x + i * dim;
      double alpha = 0.0;
      for (int64_t d = 0; d < dim; ++d) alpha += std::fabs(v[d]);
      alpha /= static_cast<double>(dim);
      std::copy(v, v + dim, residual.begin());
      uint8_t* out = codes + i * cs;
      for (int p = 0; p < u; ++p) {
        const float step = static_cast<float>(alpha * std::ldexp(1.0, -p));
        uint8_t* plane = out + p * plane_bytes;
        for (int64_t d = 0; d < dim; ++d) {
          const bool bit = residual[static_cast<size_t>(d)] >= 0.0f;
          plane[d >> 3] |= static_cast<uint8_t>(bit) << (d & 7);
          residual[static_cast<size_t>(d)] -= bit ? step : -step;
        }
      }
    }
  });
}

MultiBitIndex::MultiBitIndex(int64_t dim, int bits_per_dim)
    : dim_(dim), bits_(bits_per_dim), words_per_plane_((dim + 63) / 64), store_(bits_per_dim * ((dim + 63) / 64)) {
  PYL_CHECK(dim > 0 && dim <= kMaxDim, "dim must be in 1..", kMaxDim, ", got ", dim);
  PYL_CHECK(bits_per_dim >= 1 && bits_per_dim <= 4, "bits_per_dim must be 1..4, got ", bits_per_dim);
}

int64_t MultiBitIndex::ntotal() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return store_.size();
}

bool MultiBitIndex::has_vectors() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return has_vectors_;
}

std::vector<uint64_t> MultiBitIndex::UsedBits() const {
  std::vector<uint64_t> used(static_cast<size_t>(bits_ * words_per_plane_));
  for (int p = 0; p < bits_; ++p) {
    for (int64_t w = 0; w < words_per_plane_; ++w) {
      const int64_t dims = std::min<int64_t>(64, dim_ - 64 * w);
      used[static_cast<size_t>(p * words_per_plane_ + w)] = dims >= 64 ? ~uint64_t{0} : (uint64_t{1} << dims) - 1;
    }
  }
  return used;
}

void MultiBitIndex::ToWords(const uint8_t* codes, int64_t n, std::vector<uint64_t>* words, const char* what) const {
  const int64_t pb = (dim_ + 7) / 8, w = bits_ * words_per_plane_, cs = code_size();
  // Set padding bits would count into sign distances beyond dim (the progressive search
  // histograms them) and into every SDC score: refuse them rather than guess a meaning.
  const int tail = static_cast<int>(dim_ % 8);
  const uint8_t padding = tail == 0 ? 0 : static_cast<uint8_t>(0xFF << tail);
  words->assign(static_cast<size_t>(n * w), 0);
  for (int64_t i = 0; i < n; ++i) {
    for (int p = 0; p < bits_; ++p) {
      const uint8_t* plane = codes + i * cs + p * pb;
      PYL_CHECK((plane[pb - 1] & padding) == 0, what, " row ", i, " sets padding bits: with dim=", dim_,
                " only the low ", tail,
                " bits of the last byte of each bit plane are used. "
                "Encode with pylocalize.binarize or pack_bits, or clear them with ",
                what, "[:, ", pb - 1, "::", pb, "] &= ", (1 << tail) - 1);
      std::memcpy(words->data() + i * w + p * words_per_plane_, plane, static_cast<size_t>(pb));
    }
  }
}

double MultiBitIndex::ReconstructionNorm(const uint64_t* row) const {
  // |x_hat|^2 = sum_{p,q} 2^-(p+q) <s_p, s_q> with <s_p, s_q> = dim - 2 |x_p ^ x_q|.
  double sq = 0.0;
  for (int p = 0; p < bits_; ++p) {
    for (int q = 0; q < bits_; ++q) {
      int64_t diff = 0;
      for (int64_t w = 0; w < words_per_plane_; ++w) {
        diff += __builtin_popcountll(row[p * words_per_plane_ + w] ^ row[q * words_per_plane_ + w]);
      }
      sq += std::ldexp(static_cast<double>(dim_ - 2 * diff), -(p + q));
    }
  }
  return std::sqrt(std::max(sq, 0.0));
}

void MultiBitIndex::ExtendInvNorms(int64_t first) {
  const int64_t n = store_.size();
  inv_norms_.resize(static_cast<size_t>(first));
  inv_norms_.resize(static_cast<size_t>(store_.num_blocks() * hamming::kBlock), 0.0f);
  std::vector<uint64_t> row(static_cast<size_t>(store_.words_per_code()));
  for (int64_t i = first; i < n; ++i) {
    store_.GetRow(i, row.data());
    const double norm = ReconstructionNorm(row.data());
    inv_norms_[static_cast<size_t>(i)] = norm > 0.0 ? static_cast<float>(1.0 / norm) : 0.0f;
  }
  if (n > 0) {
    const auto range = std::minmax_element(inv_norms_.begin(), inv_norms_.begin() + n);
    inv_norm_min_ = *range.first;
    inv_norm_max_ = *range.second;
  }
}

void MultiBitIndex::Add(const uint8_t* codes, int64_t n, const int64_t* ids, const float* vectors) {
  if (n <= 0) return;
  std::vector<uint64_t> words;
  ToWords(codes, n, &words, "codes");
  std::unique_lock<std::shared_mutex> lock(mutex_);
  const int64_t n0 = store_.size();
  if (n0 == 0) has_vectors_ = vectors != nullptr;
  PYL_CHECK(has_vectors_ == (vectors != nullptr),
            has_vectors_ ? "this index keeps float vectors for re-ranking: pass vectors= to add"
                         : "this index was built without float vectors: add codes only, or "
                           "start a new index and pass vectors= to every add");
  ids_.Append(ids, n);      // first: it may refuse the ids, and nothing has changed yet
  if (owner_ != nullptr) {  // borrowed from a mapped file: copy before changing
    if (has_vectors_) vectors_owned_.assign(vectors_, vectors_ + n0 * dim_);
    owner_.reset();
  }
  if (has_vectors_) {
    vectors_owned_.insert(vectors_owned_.end(), vectors, vectors + n * dim_);
    vectors_ = vectors_owned_.data();
  }
  store_.Append(words.data(), n);
  ExtendInvNorms(n0);
}

std::vector<int32_t> MultiBitIndex::SignThresholds(const uint64_t* qwords, int64_t nq, int64_t candidates) const {
  // Evenly spaced sample of the codes, the same for every query and thread count, so
  // the result depends on neither. ~8 sample codes per expected candidate keep the
  // quantile estimate steady; the sample is capped at 1/32 of the codes (bounding its
  // cost against the scan) and at 16384 codes, and never smaller than 1024.
  const int64_t n = store_.size(), wp = words_per_plane_, stride = bits_ * wp;
  const int64_t want = (8 * n + candidates - 1) / candidates;
  const int64_t s = std::min(n, std::max<int64_t>(1024, std::min<int64_t>({want, n / 32, 16384})));
  const int64_t rank = std::max<int64_t>(1, (candidates * s + n - 1) / n);
  hamming::CodeStore sample(wp);
  {
    std::vector<uint64_t> rows(static_cast<size_t>(s * wp)), row(static_cast<size_t>(stride));
    for (int64_t i = 0; i < s; ++i) {
      store_.GetRow(i * n / s, row.data());
      std::copy(row.begin(), row.begin() + wp, rows.begin() + i * wp);
    }
    sample.Append(rows.data(), s);
  }
  // Sign-plane distances of every query to the whole sample with the Hamming kernel
  // (plane 0 is the first wp words of a query row), then a per-query histogram.
  const hamming::HammingKernel kernel = hamming::GetHammingKernel(ActiveSimdLevel());
  constexpr int64_t kGroup = 16;
  const int64_t nb = sample.num_blocks(), ld = nb * hamming::kBlock;
  std::vector<int32_t> out(static_cast<size_t>(nq), INT32_MAX);
  const int threads = GetNumThreads();
  struct Buffers {
    std::vector<int32_t> dist;
    std::vector<uint8_t> mask;
    std::vector<int64_t> hist;
  };
  std::vector<Buffers> bufs(static_cast<size_t>(std::max(threads, 1)));
  const std::vector<int32_t> thr(static_cast<size_t>(kGroup), INT32_MAX);
  ParallelFor((nq + kGroup - 1) / kGroup, threads, [&](int64_t g, int tid) {
    const int64_t q0 = g * kGroup, ng = std::min(kGroup, nq - q0);
    Buffers& buf = bufs[static_cast<size_t>(tid)];
    buf.dist.resize(static_cast<size_t>(kGroup * ld));
    buf.mask.resize(static_cast<size_t>(kGroup * nb));
    // Sized by the padded plane, not dim: a distance can never index past the end, even
    // if codes with padding bits got in.
    buf.hist.resize(static_cast<size_t>(wp * 64 + 1));
    std::vector<int32_t>& dist = buf.dist;
    std::vector<int64_t>& hist = buf.hist;
    hamming::ScanArgs a;
    a.queries = qwords + q0 * stride;
    a.nq = ng;
    a.query_stride = stride;
    a.blocks = sample.blocks();
    a.nblocks = nb;
    a.words_per_code = wp;
    a.thresholds = thr.data();
    a.dist = dist.data();
    a.ld = ld;
    a.mask = buf.mask.data();
    a.mld = nb;
    kernel(a);
    for (int64_t j = 0; j < ng; ++j) {
      std::fill(hist.begin(), hist.end(), 0);
      for (int64_t i = 0; i < s; ++i) ++hist[static_cast<size_t>(dist[static_cast<size_t>(j * ld + i)])];
      int64_t seen = 0;
      for (int64_t d = 0; d <= wp * 64; ++d) {
        seen += hist[static_cast<size_t>(d)];
        if (seen >= rank) {
          out[static_cast<size_t>(q0 + j)] = static_cast<int32_t>(d + 1);  // kernels test d < bound
          break;
        }
      }
    }
  });
  return out;
}

std::pair<float, float> MultiBitIndex::SdcConstants() const {
  // <q_hat, x_hat> = sum 2^-(i+j) (dim - 2 |q_i ^ x_j|) = A - B * S,
  // where S is the kernel's integer sum with weights 2^(2(u-1)-i-j).
  double a = 0.0;
  for (int i = 0; i < bits_; ++i) {
    for (int j = 0; j < bits_; ++j) {
      a += std::ldexp(static_cast<double>(dim_), -(i + j));
    }
  }
  return {static_cast<float>(a), static_cast<float>(std::ldexp(1.0, 1 - 2 * (bits_ - 1)))};
}

MultiBitIndex::Rows MultiBitIndex::ExportRows() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  Rows r;
  const int64_t n = store_.size(), w = store_.words_per_code();
  r.words_per_plane = words_per_plane_;
  r.words.resize(static_cast<size_t>(n * w));
  for (int64_t i = 0; i < n; ++i) store_.GetRow(i, r.words.data() + i * w);
  r.ids.assign(ids_.data(), ids_.data() + n);
  r.inv_norms.assign(inv_norms_.begin(), inv_norms_.begin() + n);
  return r;
}

void MultiBitIndex::Search(const uint8_t* query_codes, int64_t nq, int64_t k, const float* query_vectors,
                           int64_t rerank, int64_t candidates, float* scores, int64_t* ids, const KeyScan* scan) const {
  PYL_CHECK(k > 0, "k must be >= 1, got ", k);
  PYL_CHECK(rerank >= 0, "rerank must be >= 0");
  PYL_CHECK(candidates >= 0, "candidates must be >= 0 (0: score every code)");
  PYL_CHECK(candidates == 0 || candidates >= std::max(k, rerank), "candidates (", candidates,
            ") must be >= k and >= rerank: it bounds how many "
            "codes get a full SDC score");
  std::vector<uint64_t> qwords;
  ToWords(query_codes, nq, &qwords, "query_codes");
  std::shared_lock<std::shared_mutex> lock(mutex_);
  PYL_CHECK(rerank == 0 || has_vectors_, "rerank needs float vectors: build the index with add(codes, vectors=...)");
  PYL_CHECK(rerank == 0 || query_vectors != nullptr, "rerank needs the float query vectors: pass query_vectors=");
  const SdcContext ctx{hamming::GetSdcKernel(ActiveSimdLevel()), bits_};
  const bool reranking = rerank > 0;
  hamming::ScanSource src{&store_, reranking ? nullptr : ids_.data(), reranking ? true : ids_.ascending(), &SdcTile,
                          &ctx};
  src.scales = inv_norms_.data();
  src.scale_min = inv_norm_min_;
  src.scale_max = inv_norm_max_;
  std::tie(src.sdc_a, src.sdc_b) = SdcConstants();
  const int64_t kc = reranking ? std::max(rerank, k) : k;
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> keys(static_cast<size_t>(nq * kc));
  std::vector<int64_t> cand(static_cast<size_t>(nq * kc));
  const int64_t stride = bits_ * words_per_plane_;
  const bool progressive = candidates > 0 && bits_ > 1 && candidates < store_.size();
  std::vector<int32_t> sign_bounds;
  // The kc best keys of nq query rows: by `scan` (a device) or the CPU kernels.
  const auto scan_keys = [&](const uint64_t* qw, int64_t n, const int32_t* bounds, float* out_keys,
                             int64_t* out_labels) {
    if (scan != nullptr) {
      (*scan)(qw, n, kc, bounds, reranking, out_keys, out_labels);
      return;
    }
    src.sign_thresholds = bounds;
    hamming::KnnScan<float>(src, qw, n, stride, kc, out_keys, out_labels, inf, GetNumThreads());
  };
  if (progressive) sign_bounds = SignThresholds(qwords.data(), nq, candidates);
  scan_keys(qwords.data(), nq, progressive ? sign_bounds.data() : nullptr, keys.data(), cand.data());
  if (progressive) {
    // The sampled bound lets through at least `rank` codes but may still leave fewer
    // than kc for a query far from most codes: score those few queries exhaustively.
    const int64_t want = std::min(kc, store_.size());
    std::vector<int64_t> redo;
    for (int64_t q = 0; q < nq; ++q) {
      if (cand[static_cast<size_t>(q * kc + want - 1)] < 0) redo.push_back(q);
    }
    if (!redo.empty()) {
      std::vector<uint64_t> rq(static_cast<size_t>(redo.size() * stride));
      for (size_t r = 0; r < redo.size(); ++r) {
        std::copy(qwords.begin() + redo[r] * stride, qwords.begin() + (redo[r] + 1) * stride,
                  rq.begin() + static_cast<int64_t>(r) * stride);
      }
      std::vector<float> rkeys(redo.size() * static_cast<size_t>(kc));
      std::vector<int64_t> rcand(redo.size() * static_cast<size_t>(kc));
      scan_keys(rq.data(), static_cast<int64_t>(redo.size()), nullptr, rkeys.data(), rcand.data());
      for (size_t r = 0; r < redo.size(); ++r) {
        std::copy(rkeys.begin() + r * kc, rkeys.begin() + (r + 1) * kc, keys.begin() + redo[r] * kc);
        std::copy(rcand.begin() + r * kc, rcand.begin() + (r + 1) * kc, cand.begin() + redo[r] * kc);
      }
    }
  }
  if (!reranking) {
    for (int64_t q = 0; q < nq; ++q) {
      const double qn = ReconstructionNorm(qwords.data() + q * stride);
      const float inv_q = qn > 0.0 ? static_cast<float>(1.0 / qn) : 0.0f;
      for (int64_t i = q * k; i < (q + 1) * k; ++i) {
        ids[i] = cand[static_cast<size_t>(i)];
        scores[i] = ids[i] < 0 ? -inf : -keys[static_cast<size_t>(i)] * inv_q;
      }
    }
    return;
  }
  ParallelFor(nq, GetNumThreads(), [&](int64_t q, int) {
    TopK<float> top(k);
    const float* qv = query_vectors + q * dim_;
    for (int64_t c = 0; c < kc; ++c) {
      const int64_t pos = cand[static_cast<size_t>(q * kc + c)];
      if (pos < 0) break;
      const float* xv = vectors_ + pos * dim_;
      float ip = 0.0f;
      for (int64_t d = 0; d < dim_; ++d) ip += qv[d] * xv[d];
      top.Push(-ip, ids_.data()[pos]);  // TopK keeps the smallest: negate to keep the largest
    }
    top.Extract(scores + q * k, ids + q * k, std::numeric_limits<float>::infinity());
    for (int64_t i = q * k; i < (q + 1) * k; ++i) scores[i] = -scores[i];
  });
}

int64_t MultiBitIndex::RemoveIds(const int64_t* ids, int64_t n) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  int64_t removed = 0;
  const std::vector<uint8_t> keep = ids_.KeepMask(ids, n, &removed);
  if (removed == 0) return 0;
  if (has_vectors_) {  // also copies vectors borrowed from a mapped file
    std::vector<float> kept;
    kept.reserve(static_cast<size_t>((store_.size() - removed) * dim_));
    for (int64_t i = 0; i < store_.size(); ++i) {
      if (keep[static_cast<size_t>(i)]) kept.insert(kept.end(), vectors_ + i * dim_, vectors_ + (i + 1) * dim_);
    }
    vectors_owned_ = std::move(kept);
    vectors_ = vectors_owned_.data();
  }
  owner_.reset();
  store_.Compact(keep);
  ids_.Compact(keep);
  // The norms and their range are derived from the codes: recompute them as a build would.
  inv_norm_min_ = inv_norm_max_ = 0.0f;
  ExtendInvNorms(0);
  return removed;
}

void MultiBitIndex::Reset() {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  store_.Clear();
  inv_norms_.clear();
  inv_norm_min_ = inv_norm_max_ = 0.0f;
  ids_.Clear();
  vectors_owned_.clear();
  owner_.reset();
  vectors_ = nullptr;
  has_vectors_ = false;
}

std::vector<int64_t> MultiBitIndex::Ids() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return std::vector<int64_t>(ids_.data(), ids_.data() + ids_.size());
}

ContainerWriter MultiBitIndex::Writer() const {
  ContainerWriter w(kTag);
  w.SetMeta("dim", dim_);
  w.SetMeta("bits_per_dim", bits_);
  w.SetMeta("ntotal", store_.size());
  w.SetMeta("next_id", ids_.next_id());
  w.SetMeta("has_vectors", has_vectors_ ? 1 : 0);
  w.AddSection("blocks", DType::kUInt64, {store_.num_words()}, store_.blocks());
  w.AddSection("ids", DType::kInt64, {store_.size()}, ids_.data());
  if (has_vectors_) w.AddSection("vectors", DType::kFloat32, {store_.size(), dim_}, vectors_);
  return w;
}

void MultiBitIndex::Save(const std::string& path) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  Writer().WriteFile(path);
}

std::vector<uint8_t> MultiBitIndex::Serialize() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return Writer().ToBytes();
}

std::unique_ptr<MultiBitIndex> MultiBitIndex::FromContainer(const Container& c, bool borrow_codes) {
  c.ExpectTag(kTag);
  const int64_t dim = c.Meta("dim"), u = c.Meta("bits_per_dim"), n = c.Meta("ntotal");
  PYL_CHECK_FORMAT(dim > 0 && dim <= kMaxDim && u >= 1 && u <= 4 && n >= 0,
                   "MultiBitIndex file has invalid dim, bits_per_dim or ntotal (corrupt)");
  auto index = std::make_unique<MultiBitIndex>(dim, static_cast<int>(u));
  const int64_t words = u * ((dim + 63) / 64);
  const ArrayView& blocks = c.Section("blocks", DType::kUInt64);
  const ArrayView& ids = c.Section("ids", DType::kInt64);
  PYL_CHECK_FORMAT(ids.size() == n && blocks.size() == (n + 7) / 8 * 8 * words,
                   "MultiBitIndex file sections do not match ntotal (corrupt)");
  const auto* bptr = reinterpret_cast<const uint64_t*>(blocks.data);
  if (borrow_codes) {
    index->store_.Borrow(bptr, n, c.owner());
  } else {
    index->store_.AssignBlocks(bptr, n);
  }
  const int64_t bad = index->store_.FirstCodeOutside(index->UsedBits());
  PYL_CHECK_FORMAT(bad < 0, "MultiBitIndex file: code ", bad, " sets padding bits beyond dim=", dim,
                   " (corrupt, or written by another encoder); re-encode the vectors with "
                   "pylocalize.binarize and build the index again");
  index->ExtendInvNorms(0);
  // ids and vectors are read from the mapping in place; they are copied on the first add.
  index->owner_ = c.owner();
  index->ids_.Assign(reinterpret_cast<const int64_t*>(ids.data), n, c.Meta("next_id"), c.owner());
  index->has_vectors_ = c.Meta("has_vectors") != 0;
  if (index->has_vectors_) {
    const ArrayView& v = c.Section("vectors", DType::kFloat32);
    PYL_CHECK_FORMAT(v.size() == n * dim, "MultiBitIndex vectors do not match ntotal (corrupt)");
    index->vectors_ = reinterpret_cast<const float*>(v.data);
  }
  return index;
}

std::unique_ptr<MultiBitIndex> MultiBitIndex::Load(const std::string& path, bool mmap) {
  // Always mapped, so float vectors stay on disk; mmap=false copies the codes into RAM.
  return FromContainer(Container::FromFile(path, /*mmap=*/true), mmap);
}

std::unique_ptr<MultiBitIndex> MultiBitIndex::Deserialize(std::vector<uint8_t> bytes) {
  return FromContainer(Container::FromBytes(std::move(bytes)), false);
}

}  // namespace pylocalize
