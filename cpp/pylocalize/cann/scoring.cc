#include "pylocalize/cann/scoring.h"

#include "pylocalize/cann/kernel_value.h"
#include "pylocalize/util/check.h"
#include "pylocalize/util/topk.h"

namespace pylocalize {

void CannKernel::Validate() const {
  if (type == CannKernelType::kCann) {
    PYL_CHECK(p0 > 0, "kernel p0 must be > 0, got ", p0);
    PYL_CHECK(p1 > 0 && p1 < 1, "kernel p1 must be in (0, 1), got ", p1);
  } else {
    PYL_CHECK(sigma > 0, "kernel sigma must be > 0, got ", sigma);
  }
}

double CannKernel::operator()(double r) const { return cann::KernelValue(static_cast<int>(type), p0, p1, sigma, r); }

double CannKernel::AtSquared(double d2) const {
  return cann::KernelValueSquared(static_cast<int>(type), p0, p1, sigma, d2);
}

double CannKernel::Cutoff() const {
  if (type == CannKernelType::kCann) return p0;
  return sigma * std::sqrt(2.0 * std::log(1e12));
}

namespace cann {

ScoreAccumulator::ScoreAccumulator(int64_t num_images, const CannKernel& kernel)
    : kernel_(kernel),
      totals_(static_cast<size_t>(num_images), 0.0),
      best_(static_cast<size_t>(num_images), kNotOffered) {}

void ScoreAccumulator::CloseFeature() {
  for (int32_t image : touched_) {
    Add(image, static_cast<double>(best_[static_cast<size_t>(image)]));
    best_[static_cast<size_t>(image)] = kNotOffered;
  }
  touched_.clear();
}

ThreadScores::ThreadScores(int num_threads, int64_t num_images, const CannKernel& kernel)
    : num_images_(num_images), kernel_(kernel), per_thread_(static_cast<size_t>(std::max(1, num_threads))) {}

ScoreAccumulator& ThreadScores::operator[](int thread_id) {
  // Each thread touches only its own slot, so creating it here needs no lock.
  std::unique_ptr<ScoreAccumulator>& slot = per_thread_[static_cast<size_t>(thread_id)];
  if (slot == nullptr) slot = std::make_unique<ScoreAccumulator>(num_images_, kernel_);
  return *slot;
}

std::vector<double> ThreadScores::Sum() const {
  std::vector<double> total(static_cast<size_t>(num_images_), 0.0);
  for (const auto& scores : per_thread_) {
    if (scores == nullptr) continue;
    const std::vector<double>& t = scores->totals();
    for (size_t i = 0; i < t.size(); ++i) total[i] += t[i];
  }
  return total;
}

void TopImages(const std::vector<double>& total, const std::vector<int64_t>& images, int64_t nq, int64_t k,
               float* scores, int64_t* image_ids) {
  TopK<float> top(k);  // keeps the smallest: rank by -S
  const double inv = 1.0 / static_cast<double>(std::max<int64_t>(nq, 1));
  for (size_t i = 0; i < images.size(); ++i) top.Push(-static_cast<float>(total[i] * inv), images[i]);
  top.Extract(scores, image_ids, std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < k; ++i) scores[i] = -scores[i];
}

}  // namespace cann
}  // namespace pylocalize
