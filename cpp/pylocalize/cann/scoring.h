// Scoring shared by every CANN method (cann_index.h): the kernel s(r), the per-image sums of
// s over a query image's features, and the ranking of images by those sums. Each method only
// finds candidate (query feature, image) distances; how they become scores is written once
// here, so the methods cannot drift apart.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

namespace pylocalize {

enum class CannKernelType : int { kCann = 0, kGaussian = 1 };

// s(r). kCann: max(0, 1 - (r/p0)^(p1/(1-p1)))^((1-p1)/p1), zero beyond p0 (the paper's,
// p0 = 120, p1 = 0.4592 for SIFT-scale descriptors). kGaussian: exp(-r^2 / (2 sigma^2)).
struct CannKernel {
  CannKernelType type = CannKernelType::kCann;
  double p0 = 120.0;
  double p1 = 0.4592;
  double sigma = 60.0;
  void Validate() const;
  double operator()(double r) const;
  // s(sqrt(max(0, d2))), the kernel at a squared distance.
  double AtSquared(double d2) const;
  // Distance beyond which s(r) is 0 (or negligible, < 1e-12, for the Gaussian).
  double Cutoff() const;
};

namespace cann {

// Sums s(d(q, m)) per database image m over the features q of one query image.
//
// Methods that meet candidates one at a time (ivf, grid) Offer() every measured squared
// distance while a query feature is open; CloseFeature() then adds s of the smallest one
// per image, so d(q, m) is the nearest feature of m among those the method measured. A
// method that finds the minimum itself (exact) calls Add() directly. Not thread-safe: one
// per thread (ThreadScores), or one whose images are split between threads.
class ScoreAccumulator {
 public:
  ScoreAccumulator(int64_t num_images, const CannKernel& kernel);

  // A squared distance (>= 0) from the open query feature to a feature of `image`.
  void Offer(int32_t image, float d2) {
    float& best = best_[static_cast<size_t>(image)];
    if (best == kNotOffered) touched_.push_back(image);
    best = std::min(best, d2);
  }
  // The images offered since the open query feature began.
  const std::vector<int32_t>& touched() const { return touched_; }
  // Adds s(sqrt(min d2)) of every offered image; the next Offer opens a new query feature.
  void CloseFeature();
  // Adds s(sqrt(max(0, d2))) to `image`.
  void Add(int64_t image, double d2) { totals_[static_cast<size_t>(image)] += kernel_.AtSquared(d2); }
  const std::vector<double>& totals() const { return totals_; }

 private:
  static constexpr float kNotOffered = std::numeric_limits<float>::infinity();
  const CannKernel& kernel_;
  std::vector<double> totals_;    // per image
  std::vector<float> best_;       // per image, the open feature's smallest d2
  std::vector<int32_t> touched_;  // images with best_ set
};

// One ScoreAccumulator per thread of a ParallelFor, each made on its thread's first item
// (a thread that gets no item costs nothing), then summed.
class ThreadScores {
 public:
  ThreadScores(int num_threads, int64_t num_images, const CannKernel& kernel);
  ScoreAccumulator& operator[](int thread_id);
  // The per-image sums over every thread (zeros where no thread scored).
  std::vector<double> Sum() const;

 private:
  int64_t num_images_;
  const CannKernel& kernel_;
  std::vector<std::unique_ptr<ScoreAccumulator>> per_thread_;
};

// Writes the k images with the largest S(m) = total[i] / nq (nq = 0 counts as 1): scores
// descending, ties to the smaller image id, padded with (-inf, -1).
void TopImages(const std::vector<double>& total, const std::vector<int64_t>& images, int64_t nq, int64_t k,
               float* scores, int64_t* image_ids);

}  // namespace cann
}  // namespace pylocalize
