// Multi-bit binary codes and symmetric distance calculation (SDC), after "Binary
// Embedding-based Retrieval at Tencent" (Gan et al., KDD 2023).
//
// Code layout (what Binarize writes and MultiBitIndex takes): bits_per_dim = u bit planes,
// plane-major, each plane ceil(dim/8) bytes with bit j of dimension group stored as bit
// (j % 8) of byte j / 8 (little-endian bit order, np.packbits(..., bitorder="little")).
// Plane 0 is the sign (1 = x >= 0); plane p > 0 is the sign of the residual left by the
// planes before it. The reconstruction, up to a per-vector scale, is
//   x_hat = sum_p 2^-p * (2 b_p - 1).
// SDC scores a pair of codes by the cosine of their reconstructions,
//   <q_hat, x_hat> / (|q_hat| |x_hat|),  <q_hat, x_hat> = sum_{i,j} 2^-(i+j) (dim - 2 |q_i ^ x_j|),
// i.e. u^2 popcounts of plane pairs run by the kernels of kernels.h, then one multiply by
// the code's precomputed 1 / |x_hat|. Codes carry no scale, and the reconstruction norm
// varies from code to code (it grows with the number of large coordinates), so the raw
// inner product would rank by that norm; normalising makes SDC rank like cosine, which is
// what binarized (unit) embeddings approximate. (Dropping the pairs with i + j > u - 1 to
// save popcounts was measured and ranks worse than 1-bit codes, so it is not offered.)
//
// Optional float vectors ride along for exact inner-product re-ranking of the SDC
// candidates; after Load they stay memory-mapped, so only the codes need RAM.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "pylocalize/hamming/code_store.h"
#include "pylocalize/util/format.h"

namespace pylocalize {

// Training-free recurrent binarization: per vector, alpha = mean |x|; plane 0 = sign(x);
// plane p = sign(x - alpha * sum_{i<p} 2^-i s_i). codes: n x (u * ceil(dim/8)) bytes.
void Binarize(const float* x, int64_t n, int64_t dim, int bits_per_dim, uint8_t* codes);

class MultiBitIndex {
 public:
  // Largest dim: what the file format's loader accepts, so every index saves and loads.
  static constexpr int64_t kMaxDim = int64_t{1} << 24;

  MultiBitIndex(int64_t dim, int bits_per_dim);

  int64_t dim() const { return dim_; }
  int bits_per_dim() const { return bits_; }
  int64_t code_size() const { return bits_ * ((dim_ + 7) / 8); }
  int64_t ntotal() const;
  bool has_vectors() const;

  // vectors: n x dim float32 kept for re-ranking, or nullptr. Every add must agree.
  void Add(const uint8_t* codes, int64_t n, const int64_t* ids, const float* vectors);
  // scores: SDC cosines of the reconstructions (or exact inner products of the float
  // vectors when rerank > 0), best (largest) first, ties to the smaller id,
  // padded with (-inf, -1). rerank > 0 takes the max(rerank, k) SDC candidates and
  // re-ranks them by <query_vectors[q], vectors[i]>.
  // candidates > 0 (2+ bits per dim): progressive search. Only codes whose sign plane is
  // among about the `candidates` closest to the query's in Hamming distance get a full
  // SDC score; the bound on that distance is a quantile of an evenly spaced sample of the
  // codes, so results are deterministic. A query left with fewer than k (or rerank)
  // candidates is scored exhaustively. 0 scores every code (exact SDC).
  //
  // scan, when given, finds the candidates instead of the CPU kernels (a device copy of the
  // codes, cpp/cuda): for nq query rows of words it writes the kc best SDC keys per query
  // ascending with their labels (ids, or positions when by_position), padded with (+inf,
  // -1); sign_bounds (nq, or nullptr) are the progressive search's strict bounds.
  using KeyScan = std::function<void(const uint64_t* query_words, int64_t nq, int64_t kc, const int32_t* sign_bounds,
                                     bool by_position, float* keys, int64_t* labels)>;
  void Search(const uint8_t* query_codes, int64_t nq, int64_t k, const float* query_vectors, int64_t rerank,
              int64_t candidates, float* scores, int64_t* ids, const KeyScan* scan = nullptr) const;
  // Removes every code (and float vector) whose id is in ids; returns how many. What is
  // left searches as an index built from it would.
  int64_t RemoveIds(const int64_t* ids, int64_t n);
  void Reset();
  std::vector<int64_t> Ids() const;

  // What a device copy of the index needs (cpp/cuda): the codes as rows of
  // bits_per_dim * words_per_plane words, their ids and 1 / |x_hat|, in insertion order.
  struct Rows {
    int64_t words_per_plane = 0;
    std::vector<uint64_t> words;
    std::vector<int64_t> ids;
    std::vector<float> inv_norms;
  };
  Rows ExportRows() const;
  // The constants of <q_hat, x_hat> = a - b * S (S: the kernels' integer sum).
  std::pair<float, float> SdcConstants() const;

  void Save(const std::string& path) const;
  static std::unique_ptr<MultiBitIndex> Load(const std::string& path, bool mmap);
  std::vector<uint8_t> Serialize() const;
  static std::unique_ptr<MultiBitIndex> Deserialize(std::vector<uint8_t> bytes);

 private:
  // Copies codes into rows of words; throws (naming `what`) if a code sets a padding bit.
  void ToWords(const uint8_t* codes, int64_t n, std::vector<uint64_t>* words, const char* what) const;
  // Per word of a stored row, the bits that hold dimensions (the rest must stay zero).
  std::vector<uint64_t> UsedBits() const;
  ContainerWriter Writer() const;
  // |x_hat| of a code given as u planes of words_per_plane_ words.
  double ReconstructionNorm(const uint64_t* row) const;
  // Per query, the sign-plane Hamming bound (strict) that about `candidates` codes meet.
  std::vector<int32_t> SignThresholds(const uint64_t* qwords, int64_t nq, int64_t candidates) const;
  // Appends 1 / |x_hat| of codes [first, store_.size()) to inv_norms_ (block padded).
  void ExtendInvNorms(int64_t first);
  static std::unique_ptr<MultiBitIndex> FromContainer(const Container& c, bool borrow_codes);

  int64_t dim_;
  int bits_;
  int64_t words_per_plane_;
  hamming::CodeStore store_;
  std::vector<float> inv_norms_;  // derived from the codes, never stored in files
  float inv_norm_min_ = 0.0f, inv_norm_max_ = 0.0f;
  hamming::IdList ids_;
  std::vector<float> vectors_owned_;
  const float* vectors_ = nullptr;
  bool has_vectors_ = false;
  std::shared_ptr<const void> owner_;  // mapping behind borrowed vectors_
  mutable std::shared_mutex mutex_;
};

}  // namespace pylocalize
