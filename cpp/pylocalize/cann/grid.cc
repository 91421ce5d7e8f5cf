#include "pylocalize/cann/grid.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

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

// The table slot where the search for a cell key starts (slots: a power of two). Keys are
// already hashes; the multiply spreads their high bits into the low ones used here.
size_t Slot(uint64_t key, size_t slots) {
  return static_cast<size_t>((key * 0x9E3779B97F4A7C15ULL) >> 32) & (slots - 1);
}

// Bytes a grid build may take: half of physical memory, so the estimate's error and the
// rest of the process still fit.
int64_t GridMemoryLimit() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGE_SIZE)
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0) return static_cast<int64_t>(pages) * page / 2;
#endif
  return int64_t{8} << 30;
}

}  // namespace

void ValidateGridParams(const GridParams& p, int64_t dim) {
  PYL_CHECK(p.num_grids >= 1 && p.num_grids <= kMaxGridsPerRadius, "grid num_grids must be in 1..", kMaxGridsPerRadius,
            ", got ", p.num_grids, "; grids per radius past a few dozen add memory and time, not recall");
  PYL_CHECK(p.num_radii >= 1 && p.num_radii <= kMaxRadii, "grid num_radii must be in 1..", kMaxRadii, ", got ",
            p.num_radii, "; each radius halves the last, so a few cover the kernel");
  PYL_CHECK(static_cast<int64_t>(p.num_grids) * p.num_radii <= kMaxTotalGrids,
            "grid num_grids * num_radii must be <= ", kMaxTotalGrids, ", got ", p.num_grids, " * ", p.num_radii,
            "; lower num_grids or num_radii, or use method='ivf'");
  PYL_CHECK(p.dims >= 1 && p.dims <= std::min<int64_t>(dim, kMaxGridDims), "grid dims must be in 1..",
            std::min<int64_t>(dim, kMaxGridDims), " (at most the descriptor dimension and ", kMaxGridDims, "), got ",
            p.dims);
  PYL_CHECK(p.cell_factor > 0 && std::isfinite(p.cell_factor), "grid cell_factor must be > 0, got ", p.cell_factor);
  PYL_CHECK(p.max_bin >= 1, "grid max_bin must be >= 1, got ", p.max_bin);
}

int64_t EstimateGridBytes(const GridParams& p, int64_t n, int64_t dim) {
  // Per grid and feature: a member index (4 B) and at most one cell, which takes 2 to 4
  // table slots of 16 B.
  const double grids = static_cast<double>(p.num_grids) * p.num_radii;
  const double bytes = grids * (static_cast<double>(n) * 68.0 + static_cast<double>(p.dims) * dim * 4.0);
  return bytes >= 9e18 ? INT64_MAX : static_cast<int64_t>(bytes);
}

void CheckGridMemory(const GridParams& p, int64_t n, int64_t dim) {
  const int64_t need = EstimateGridBytes(p, n, dim), limit = GridMemoryLimit();
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  PYL_CHECK(need <= limit, "the grids (num_grids=", p.num_grids, " x num_radii=", p.num_radii, ") over ", n,
            " features would take about ", need / kGiB, " GiB, more than half of this machine's memory (",
            2 * limit / kGiB, " GiB); lower num_grids or num_radii, or use method='ivf'");
}

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

void RandomGrids::Build(const float* rows, int64_t n, int64_t dim, double r_max, const GridParams& params,
                        int num_threads) {
  ValidateGridParams(params, dim);
  PYL_CHECK(r_max > 0 && std::isfinite(r_max), "the kernel cutoff must be finite for the grid method");
  CheckGridMemory(params, n, dim);
  dim_ = dim;
  params_ = params;
  radii_.clear();
  for (int j = 0; j < params.num_radii; ++j) radii_.push_back(r_max * std::ldexp(1.0, j - params.num_radii + 1));
  grids_.assign(static_cast<size_t>(params.num_radii * params.num_grids), Grid());
  std::mt19937_64 rng(params.seed);
  for (int j = 0; j < params.num_radii; ++j) {
    const double cell = params.cell_factor * radii_[static_cast<size_t>(j)];
    for (int g = 0; g < params.num_grids; ++g) {
      InterruptPoint();
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
    for (int64_t i = 0; i < n; ++i) {
      if ((i & 4095) == 4095) InterruptPoint();  // a grid over many features takes a while
      keyed[static_cast<size_t>(i)] = {Key(grid, rows + i * dim), static_cast<int32_t>(i)};
    }
    std::sort(keyed.begin(), keyed.end());
    InterruptPoint();
    std::mt19937_64 cell_rng(params.seed * 1000003ULL + static_cast<uint64_t>(gi));
    grid.members.reserve(static_cast<size_t>(n));
    size_t num_cells = 0;
    for (size_t a = 0; a < keyed.size(); ++a) num_cells += a == 0 || keyed[a].first != keyed[a - 1].first;
    size_t slots = 2;
    while (slots < 2 * num_cells) slots *= 2;  // at most half full
    grid.slot_key.assign(slots, 0);
    grid.slot_range.assign(slots, {0, 0});
    for (size_t a = 0; a < keyed.size();) {
      size_t b = a;
      while (b < keyed.size() && keyed[b].first == keyed[a].first) ++b;
      // Oversized cells keep a random subset.
      if (static_cast<int64_t>(b - a) > params.max_bin) {
        std::shuffle(keyed.begin() + static_cast<std::ptrdiff_t>(a), keyed.begin() + static_cast<std::ptrdiff_t>(b),
                     cell_rng);
      }
      const size_t keep = std::min<size_t>(b - a, static_cast<size_t>(params.max_bin));
      const uint32_t start = static_cast<uint32_t>(grid.members.size());
      for (size_t i = a; i < a + keep; ++i) grid.members.push_back(keyed[i].second);
      size_t slot = Slot(keyed[a].first, slots);
      while (grid.slot_range[slot].first != grid.slot_range[slot].second) slot = (slot + 1) & (slots - 1);
      grid.slot_key[slot] = keyed[a].first;
      grid.slot_range[slot] = {start, static_cast<uint32_t>(grid.members.size())};
      a = b;
    }
  });
}

void RandomGrids::Lookup(const float* q, int j, int g, std::vector<int32_t>* out) const {
  const Grid& grid = grids_[static_cast<size_t>(j * params_.num_grids + g)];
  const uint64_t key = Key(grid, q);
  const size_t mask = grid.slot_key.size() - 1;
  for (size_t slot = Slot(key, grid.slot_key.size());; slot = (slot + 1) & mask) {
    const auto& range = grid.slot_range[slot];
    if (range.first == range.second) return;  // a free slot: no such cell
    if (grid.slot_key[slot] == key) {
      out->insert(out->end(), grid.members.begin() + range.first, grid.members.begin() + range.second);
      return;
    }
  }
}

int64_t RandomGrids::MemoryBytes() const {
  int64_t bytes = 0;
  for (const Grid& g : grids_) {
    bytes += static_cast<int64_t>(g.members.size() * sizeof(int32_t) +
                                  g.slot_key.size() * (sizeof(uint64_t) + 2 * sizeof(uint32_t)) +
                                  g.projection.size() * sizeof(float));
  }
  return bytes;
}

}  // namespace cann
}  // namespace pylocalize
