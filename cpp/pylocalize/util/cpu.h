// Run-time CPU feature detection and the SIMD level that kernels dispatch on.
//
// Kernels are compiled once per instruction set, each in its own translation unit with
// that unit's flags, so one binary runs on every x86-64 CPU. The active level defaults to
// the best the CPU and OS support; PYLOCALIZE_SIMD=scalar|avx2|avx512bw|avx512|neon (read
// once, at first use) or SetSimdLevel() force another supported one, which is how tests
// cover every path. x86-64 has scalar < avx2 < avx512bw < avx512; AArch64 scalar < neon.
#pragma once

#include <string>
#include <vector>

namespace pylocalize {

enum class SimdLevel : int {
  kScalar = 0,    // portable C++, any CPU
  kAVX2 = 1,      // AVX2 + POPCNT + FMA (Haswell, Zen 1+)
  kAVX512BW = 2,  // AVX-512 F/BW/DQ/VL (Skylake-X): no VPOPCNTDQ
  kAVX512 = 3,    // + VPOPCNTDQ, BITALG, VBMI (Ice Lake, Sapphire Rapids, Zen 4+)
  kNEON = 4,      // AArch64 Advanced SIMD
};

// The best level this CPU and OS support.
SimdLevel DetectedSimdLevel();
// The level kernels use now.
SimdLevel ActiveSimdLevel();
// Forces a level; throws std::invalid_argument if the CPU does not support it.
void SetSimdLevel(SimdLevel level);
const char* SimdLevelName(SimdLevel level);
// Parses a level name; throws std::invalid_argument for an unknown one.
SimdLevel ParseSimdLevel(const std::string& name);
// Every level this CPU supports, lowest (scalar) first, the detected one last.
std::vector<SimdLevel> SupportedSimdLevels();

}  // namespace pylocalize
