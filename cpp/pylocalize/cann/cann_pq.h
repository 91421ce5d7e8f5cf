// CANN over product-quantized features: the compressed counterpart of CannIndex's ivf
// method, kept beside it as faiss keeps IndexIVFPQ beside IndexIVFFlat.
//
// Features are held as m-byte product-quantizer codes (pq/product_quantizer.h) in k-means
// lists, each feature with the index of its image; a query image's features score database
// image m by the same CANN score as CannIndex (cann_index.h),
//   S(m) = (1 / |Q|) sum_q s(d(q, m)),
// d(q, m) the distance from q to the nearest feature of m among the nprobe lists nearest to
// q, here measured against the features' codes by asymmetric distance computation (ADC).
// A SIFT feature costs m (32) bytes of code and 4 bytes of image index (4 more with
// residual codes: the norm term), against 128 bytes of descriptor plus a blocked
// copy and ids in CannIndex.
//
// Residual codes (by_residual, as IndexIVFPQ) quantize x - c, c the feature's list
// centroid: residuals are smaller than the vectors, so the same 256 centroids per sub-space
// cover them more finely. Then
//   ||q - c - r||^2 = ||q - c||^2 - 2 <q, r> + (2 <c, r> + ||r||^2),
// the first term is the coarse assignment's distance, the second one ADC table per query
// feature for every list it probes, and the last one depends only on the feature: it is
// stored with the code (the norm term), so a query feature needs no table per list.
//
// ADC overestimates distances: E ||q - x'||^2 = ||q - x||^2 + ||x - x'||^2 for a code x' of x
// whose error is uncorrelated with q - x, and at 32 bytes a SIFT feature's error (RMS ~85 for
// uint8 RootSIFT) is a large part of the kernel's cutoff, so true matches near it would score
// nothing. The search subtracts the mean squared quantization error, measured on the training
// sample (quantization_error()), from every ADC distance: an unbiased estimate on average.
//
// Lists are built by Add (in chunks: no copy of the added rows beyond one chunk) as one
// vector per list, and packed into one array per field for Save; a loaded index holds the
// file's arrays, viewed in place when the file is memory-mapped (zero copy).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "pylocalize/cann/scoring.h"
#include "pylocalize/knn/coarse_quantizer.h"
#include "pylocalize/knn/kernels.h"
#include "pylocalize/pq/product_quantizer.h"
#include "pylocalize/util/format.h"

namespace pylocalize {

struct CannPqTrainParams {
  int64_t nlist = 0;                     // coarse lists, >= 1
  int iterations = 8;                    // Lloyd iterations of the coarse k-means
  int64_t max_points_per_list = 64;      // coarse k-means subsample per list
  pq::TrainParams pq;                    // the sub-quantizers' k-means
  int64_t max_pq_training_rows = 65536;  // (residual) rows the sub-quantizers learn from
  uint64_t seed = 0;
  void Validate() const;
};

// The search options saved with an index, so a loaded index searches as the saved one did.
struct CannPqSearchOptions {
  CannKernel kernel;
  int64_t nprobe = 16;
  void Validate() const;
};

class CannPqIndex {
 public:
  static constexpr int64_t kMaxDim = 4096;

  // m bytes per code (m must divide dim); by_residual: codes of x - (list centroid).
  CannPqIndex(int64_t dim, int64_t m, bool by_residual);

  int64_t dim() const { return dim_; }
  int64_t m() const { return m_; }
  bool by_residual() const { return by_residual_; }
  int64_t ntotal() const;
  int64_t num_images() const;
  int64_t nlist() const;
  bool is_trained() const;

  // Learns the coarse lists and the sub-quantizers from n sample rows (uint8 or float32,
  // n x dim, finite, n >= max(nlist, 256)); only the k-means subsamples are converted to
  // float. Once, before any Add.
  void Train(const void* rows, knn::Element element, int64_t n, const CannPqTrainParams& params, int num_threads);

  // Encodes n rows (uint8 or float32, n x dim) into their lists, a chunk at a time;
  // image_ids: n, >= 0. Needs Train(). After a load, first copies the file's arrays.
  void Add(const void* rows, knn::Element element, const int64_t* image_ids, int64_t n, int num_threads);

  // The best k images for one query image (queries: nq x dim float32, finite): scores
  // descending, ties to the smaller image id, padded with (-inf, -1), as CannIndex::Search.
  // nprobe >= 1 lists per query feature (more than nlist probes them all).
  void Search(const CannPqSearchOptions& options, const float* queries, int64_t nq, int64_t k, float* scores,
              int64_t* image_ids, int num_threads) const;

  // The features as the search sees them: decoded vectors (ntotal x dim) and their image
  // ids (ntotal), in list order.
  void Reconstruct(std::vector<float>* x, std::vector<int64_t>* image_ids) const;
  std::vector<float> Centroids() const;  // nlist x dim
  std::vector<float> Codebooks() const;  // m x 256 x dim / m
  // Mean squared quantization error of the training sample, subtracted from ADC distances.
  double quantization_error() const;

  void SetSearchOptions(const CannPqSearchOptions& options);
  std::optional<CannPqSearchOptions> search_options() const;

  // Bytes held: codes, image indexes, norm terms, list offsets, centroids, codebooks and the
  // image table (memory-mapped arrays counted: they are paged in as lists are searched).
  int64_t MemoryBytes() const;

  // Packs the lists first (one array per field, freeing each list as it goes).
  void Save(const std::string& path);
  std::vector<uint8_t> Serialize();
  // mmap: the codes, image indexes and norm terms stay in the mapped file.
  static std::unique_ptr<CannPqIndex> Load(const std::string& path, bool mmap);
  static std::unique_ptr<CannPqIndex> Deserialize(std::vector<uint8_t> bytes);

 private:
  struct OwnedList {
    std::vector<uint8_t> codes;     // size x m
    std::vector<int32_t> images;    // index into images_
    std::vector<float> norm_terms;  // by_residual: 2 <c, r> + ||r||^2
  };
  // Every list in one array per field, lists one after another (a file's sections, or Pack()'s).
  struct PackedLists {
    std::shared_ptr<const void> owner;  // keeps the arrays alive
    const uint8_t* codes = nullptr;
    const int32_t* images = nullptr;
    const float* norm_terms = nullptr;
    std::vector<int64_t> offsets;  // nlist + 1
  };
  struct ListView {
    const uint8_t* codes;
    const int32_t* images;
    const float* norm_terms;  // null without residuals
    int64_t size;
  };
  ListView View(int64_t list) const;
  void Pack();    // owned_ -> packed_; needs mutex_ exclusively
  void Unpack();  // packed_ -> owned_ (an Add after a load)
  int32_t ImageSlot(int64_t image_id);
  void AddChunk(float* x, const int64_t* image_ids, int64_t n, int num_threads);
  void ScanList(const ListView& v, const float* table, float base, float cut2, cann::ScoreAccumulator* acc) const;
  ContainerWriter Writer() const;
  static std::unique_ptr<CannPqIndex> FromContainer(const Container& c);
  void ReadLists(const Container& c, int64_t n);

  int64_t dim_, m_;
  bool by_residual_;
  pq::ProductQuantizer pq_;
  knn::CoarseQuantizer quantizer_;  // the lists' centroids (nlist x dim)
  double quantization_error_ = 0.0;
  int64_t ntotal_ = 0;
  std::vector<OwnedList> owned_;  // while built (empty once packed)
  std::optional<PackedLists> packed_;
  std::vector<int64_t> images_;  // image id of each image index, first seen first
  std::unordered_map<int64_t, int32_t> image_slot_;
  std::optional<CannPqSearchOptions> search_options_;
  mutable std::shared_mutex mutex_;
};

}  // namespace pylocalize
