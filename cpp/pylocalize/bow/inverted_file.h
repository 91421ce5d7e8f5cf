// Inverted file over sparse bag-of-words vectors: documents (templates, images) are
// scored against a query by the dot product of their word weights, visiting only the
// posting lists of the query's words. Used for FoundPose's tf-idf template retrieval.
// Searches take a shared lock and Add an exclusive one, so a search running without the
// GIL never sees a half-added document.
#pragma once

#include <cstdint>
#include <shared_mutex>
#include <vector>

namespace pylocalize {
namespace bow {

class InvertedFile {
 public:
  explicit InvertedFile(int64_t num_words);

  int64_t num_words() const { return num_words_; }
  int64_t num_documents() const;
  // Stored (document, word) entries.
  int64_t num_entries() const;

  // Adds one document: n (word, weight) pairs; repeated words add up. Zero weights are
  // skipped. doc_id is returned by Search.
  void Add(const int64_t* words, const float* weights, int64_t n, int64_t doc_id);

  // The k documents with the largest dot product with the query, best first; ties go to
  // the smaller doc_id. Slots past the number of documents get (-inf, -1).
  void Search(const int64_t* words, const float* weights, int64_t n, int64_t k, float* scores, int64_t* ids) const;

 private:
  struct Posting {
    int32_t doc;  // internal index into doc_ids_
    float weight;
  };
  int64_t num_words_;
  int64_t num_entries_ = 0;
  std::vector<std::vector<Posting>> postings_;
  std::vector<int64_t> doc_ids_;
  mutable std::shared_mutex mutex_;
};

}  // namespace bow
}  // namespace pylocalize
