#include "pylocalize/cann/grid.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "pylocalize/util/check.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace cann {
namespace {

// Rows of a random orthonormal dims x dim map (Gram-Schmidt on Gaussian rows).
std::vector<float> RandomOrthonormal(int dims, int64_t dim, std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  std::vector<double> m(static_cast<size_t>(dims * dim));
  for (int r = 0; r < dims; ++r) {
    double* row = m.data() + r * dim;
    for (int attempt = 0; attempt < 8; ++attempt) {
      for (int64_t c = 0; c < dim; ++c) row[c] = normal(rng);
      for (int p = 0; p < r; ++p) {
        const double* prev = m.data() + p * dim;
        double dot = 0.0;
        for (int64_t c = 0; c < dim; ++c) dot += row[c] * prev[c];
        for (int64_t c = 0; c < dim; ++c) row[c] -= dot * prev[c];
      }
      double norm = 0.0;
      for (int64_t c = 0; c < dim; ++c) norm += row[c] * row[c];
      if (norm > 1e-12) {
        for (int64_t c = 0; c < dim; ++c) row[c] /= std::sqrt(norm);
        break;
      }
    }
  }
  return std::vector<float>(m.begin(), m.end());
}

}  // namespace

uint64_t RandomGrids::Key(const Grid& grid, const float* x) const {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a over the cell coordinates
  for (int r = 0; r < params_.dims; ++r) {
    const float* p = grid.projection.data() + static_cast<int64_t>(r) * dim_;
    float v = grid.shift[static_cast<size_t>(r)];
    for (int64_t c = 0; c < dim_; ++c) v += p[c] * x[c];
    const int64_t cell = static_cast<int64_t>(std::floor(v));
    h ^= static_cast<uint64_t>(cell);
    h *= 1099511628211ULL;
    h ^= h >> 29;
  }
  return h;
}

void RandomGrids::Build(const float* rows, int64_t n, int64_t dim, double r_max,
                        const GridParams& params, int num_threads) {
  PYL_CHECK(params.num_grids >= 1 && params.num_radii >= 1 && params.dims >= 1 &&
                params.dims <= dim && params.cell_factor > 0 && params.max_bin >= 1,
            "grid parameters: need num_grids, num_radii >= 1, 1 <= dims <= dim, cell_factor > 0, max_bin >= 1");
  PYL_CHECK(r_max > 0 && std::isfinite(r_max), "the kernel cutoff must be finite for the grid method");
  dim_ = dim;
  params_ = params;
  radii_.clear();
  for (int j = 0; j < params.num_radii; ++j) radii_.push_back(r_max * std::ldexp(1.0, j - params.num_radii + 1));
  grids_.assign(static_cast<size_t>(params.num_radii * params.num_grids), Grid());
  std::mt19937_64 rng(params.seed);
  for (int j = 0; j < params.num_radii; ++j) {
    const double cell = params.cell_factor * radii_[static_cast<size_t>(j)];
    for (int g = 0; g < params.num_grids; ++g) {
      Grid& grid = grids_[static_cast<size_t>(j * params.num_grids + g)];
      grid.projection = RandomOrthonormal(params.dims, dim, rng);
      for (float& v : grid.projection) v = static_cast<float>(v / cell);
      std::uniform_real_distribution<double> unit(0.0, 1.0);
      grid.shift.resize(static_cast<size_t>(params.dims));
      for (float& s : grid.shift) s = static_cast<float>(unit(rng));
    }
  }
  ParallelFor(static_cast<int64_t>(grids_.size()), num_threads, [&](int64_t gi, int) {
    InterruptPoint();
    Grid& grid = grids_[static_cast<size_t>(gi)];
    std::vector<std::pair<uint64_t, int32_t>> keyed(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) keyed[static_cast<size_t>(i)] = {Key(grid, rows + i * dim), static_cast<int32_t>(i)};
    std::sort(keyed.begin(), keyed.end());
    std::mt19937_64 cell_rng(params.seed * 1000003ULL + static_cast<uint64_t>(gi));
    grid.members.reserve(static_cast<size_t>(n));
    for (size_t a = 0; a < keyed.size();) {
      size_t b = a;
      while (b < keyed.size() && keyed[b].first == keyed[a].first) ++b;
      // Oversized cells keep a random subset.
      if (static_cast<int64_t>(b - a) > params.max_bin) {
        std::shuffle(keyed.begin() + static_cast<std::ptrdiff_t>(a), keyed.begin() + static_cast<std::ptrdiff_t>(b), cell_rng);
      }
      const size_t keep = std::min<size_t>(b - a, static_cast<size_t>(params.max_bin));
      const uint32_t start = static_cast<uint32_t>(grid.members.size());
      for (size_t i = a; i < a + keep; ++i) grid.members.push_back(keyed[i].second);
      grid.cells[keyed[a].first] = {start, static_cast<uint32_t>(grid.members.size())};
      a = b;
    }
  });
}

void RandomGrids::Lookup(const float* q, int j, int g, std::vector<int32_t>* out) const {
  const Grid& grid = grids_[static_cast<size_t>(j * params_.num_grids + g)];
  auto it = grid.cells.find(Key(grid, q));
  if (it == grid.cells.end()) return;
  out->insert(out->end(), grid.members.begin() + it->second.first, grid.members.begin() + it->second.second);
}

int64_t RandomGrids::MemoryBytes() const {
  int64_t bytes = 0;
  for (const Grid& g : grids_) {
    bytes += static_cast<int64_t>(g.members.size() * sizeof(int32_t) + g.cells.size() * 32 +
                                  g.projection.size() * sizeof(float));
  }
  return bytes;
}

}  // namespace cann
}  // namespace pylocalize
