#include "pylocalize/bow/inverted_file.h"

#include <cmath>
#include <limits>
#include <map>
#include <mutex>

#include "pylocalize/util/check.h"
#include "pylocalize/util/topk.h"

namespace pylocalize {
namespace bow {

InvertedFile::InvertedFile(int64_t num_words) : num_words_(num_words) {
  PYL_CHECK(num_words >= 1, "num_words must be >= 1, got ", num_words);
  postings_.resize(static_cast<size_t>(num_words));
}

int64_t InvertedFile::num_documents() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return static_cast<int64_t>(doc_ids_.size());
}

int64_t InvertedFile::num_entries() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return num_entries_;
}

void InvertedFile::Add(const int64_t* words, const float* weights, int64_t n, int64_t doc_id) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  PYL_CHECK(doc_ids_.size() < static_cast<size_t>(std::numeric_limits<int32_t>::max()), "too many documents");
  PYL_CHECK(doc_id >= 0, "doc_id must be >= 0 (-1 marks empty result slots), got ", doc_id);
  // Validate everything before touching the lists, so a bad call leaves the file unchanged.
  std::map<int64_t, float> merged;  // repeated words add up; ordered for determinism
  for (int64_t i = 0; i < n; ++i) {
    PYL_CHECK(words[i] >= 0 && words[i] < num_words_, "word id ", words[i], " outside 0..", num_words_ - 1);
    PYL_CHECK(std::isfinite(weights[i]), "weights contain NaN or Inf");
    merged[words[i]] += weights[i];
  }
  const int32_t doc = static_cast<int32_t>(doc_ids_.size());
  doc_ids_.push_back(doc_id);
  for (const auto& [word, weight] : merged) {
    if (weight == 0.0f) continue;
    postings_[static_cast<size_t>(word)].push_back({doc, weight});
    ++num_entries_;
  }
}

void InvertedFile::Search(const int64_t* words, const float* weights, int64_t n, int64_t k, float* scores,
                          int64_t* ids) const {
  PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
  std::shared_lock<std::shared_mutex> lock(mutex_);
  std::vector<float> acc(doc_ids_.size(), 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    PYL_CHECK(words[i] >= 0 && words[i] < num_words_, "word id ", words[i], " outside 0..", num_words_ - 1);
    PYL_CHECK(std::isfinite(weights[i]), "weights contain NaN or Inf");
    const float w = weights[i];
    if (w == 0.0f) continue;
    for (const Posting& p : postings_[static_cast<size_t>(words[i])]) acc[static_cast<size_t>(p.doc)] += w * p.weight;
  }
  // TopK keeps the smallest (distance, id): negate scores so the largest come first.
  TopK<float> top(k);
  for (size_t d = 0; d < acc.size(); ++d) top.Push(-acc[d], doc_ids_[d]);
  top.Extract(scores, ids, std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < k; ++i) scores[i] = -scores[i];
}

}  // namespace bow
}  // namespace pylocalize
