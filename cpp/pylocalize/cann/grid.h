// The random-grids colored range search of the CANN paper (the released approach), used
// as a baseline next to the inverted file.
//
// For a geometric schedule of radii r_1 < ... < r_J (ending at the kernel's cutoff) and L
// grids per radius, every feature is hashed to a cell of each grid: project with a random
// orthonormal map to `dims` dimensions, add a random shift, divide by a cell size
// proportional to the radius and floor. A query feature looks up its cell in every grid
// of the smallest radius first; database features in those cells that are truly within
// the radius (exact distance) give their images a match, and an image keeps the distance of
// the first radius at which it is found. Cells keep at most `max_bin` features (a random
// subset), which bounds the work per lookup.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace pylocalize {
namespace cann {

struct GridParams {
  int num_grids = 16;        // grids per radius
  int num_radii = 4;         // radii r_max * 2^-(J-1) ... r_max
  int dims = 8;              // projected dimensions hashed per grid
  double cell_factor = 0.5;  // cell size = cell_factor * radius
  int64_t max_bin = 256;     // features kept per cell
  uint64_t seed = 0;
};

// Bounds on GridParams. Every grid holds each feature once and is built and probed in
// full, so memory and build time grow with num_grids * num_radii * n; recall saturates
// long before these values (benchmarks/bench_cann.py), and past them a typo (10**6 grids)
// would fill memory for minutes. pylocalize/index/cann.py mirrors them.
constexpr int kMaxGridsPerRadius = 1024;
constexpr int kMaxRadii = 16;
constexpr int kMaxTotalGrids = 4096;  // num_grids * num_radii
constexpr int kMaxGridDims = 64;

// Throws std::invalid_argument (ValueError) naming the fix unless params are in bounds
// for descriptors of `dim` dimensions.
void ValidateGridParams(const GridParams& params, int64_t dim);
// About the bytes the grids over n features take (cell tables, members, projections).
int64_t EstimateGridBytes(const GridParams& params, int64_t n, int64_t dim);
// Throws std::invalid_argument when EstimateGridBytes exceeds half of physical memory.
void CheckGridMemory(const GridParams& params, int64_t n, int64_t dim);

class RandomGrids {
 public:
  // rows: n x dim float32 (insertion order); r_max: the largest radius.
  void Build(const float* rows, int64_t n, int64_t dim, double r_max, const GridParams& params, int num_threads);
  bool built() const { return !grids_.empty(); }
  const GridParams& params() const { return params_; }
  int num_radii() const { return params_.num_radii; }
  double radius(int j) const { return radii_[static_cast<size_t>(j)]; }
  // Appends to `out` the features in q's cell of grid g of radius j.
  void Lookup(const float* q, int j, int g, std::vector<int32_t>* out) const;
  int64_t MemoryBytes() const;

 private:
  struct Grid {
    std::vector<float> projection;  // dims x dim, scaled by 1 / cell size
    std::vector<float> shift;       // dims, in cells
    // Cell key -> range in members, an open-addressing table (linear probing, a power-of-two
    // size, an empty range marks a free slot): a few flat arrays per grid rather than a
    // node per cell, so a build stopped by Ctrl-C frees its grids at once.
    std::vector<uint64_t> slot_key;
    std::vector<std::pair<uint32_t, uint32_t>> slot_range;
    std::vector<int32_t> members;
  };
  uint64_t Key(const Grid& grid, const float* x) const;
  int64_t dim_ = 0;
  GridParams params_;
  std::vector<double> radii_;
  std::vector<Grid> grids_;  // num_radii * num_grids, radius-major
};

}  // namespace cann
}  // namespace pylocalize
