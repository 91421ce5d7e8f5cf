#include "pylocalize/util/cpu.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "pylocalize/util/check.h"

namespace pylocalize {
namespace {

SimdLevel Detect() {
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
  // __builtin_cpu_supports also checks that the OS saves the wide registers (XGETBV).
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("fma");
  const bool avx512bw = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  const bool avx512 = avx512bw && __builtin_cpu_supports("avx512vpopcntdq") && __builtin_cpu_supports("avx512bitalg") &&
                      __builtin_cpu_supports("avx512vbmi");
  if (avx512) return SimdLevel::kAVX512;
  if (avx512bw) return SimdLevel::kAVX512BW;
  if (avx2) return SimdLevel::kAVX2;
#elif defined(__aarch64__)
  return SimdLevel::kNEON;
#endif
  return SimdLevel::kScalar;
}

bool Supported(SimdLevel level) {
  for (SimdLevel l : SupportedSimdLevels()) {
    if (l == level) return true;
  }
  return false;
}

SimdLevel InitialLevel() {
  const SimdLevel best = Detect();
  const char* env = std::getenv("PYLOCALIZE_SIMD");
  if (env == nullptr || env[0] == '\0') return best;
  SimdLevel wanted;
  try {
    wanted = ParseSimdLevel(env);
  } catch (const std::invalid_argument&) {
    return best;  // reported by the Python layer, which warns on a bad value
  }
  return Supported(wanted) ? wanted : best;
}

std::atomic<int>& LevelSlot() {
  static std::atomic<int> level(static_cast<int>(InitialLevel()));
  return level;
}

}  // namespace

SimdLevel DetectedSimdLevel() {
  static const SimdLevel best = Detect();
  return best;
}

SimdLevel ActiveSimdLevel() { return static_cast<SimdLevel>(LevelSlot().load()); }

void SetSimdLevel(SimdLevel level) {
  PYL_CHECK(Supported(level), "this CPU does not support SIMD level '", SimdLevelName(level),
            "'; the best it supports is '", SimdLevelName(DetectedSimdLevel()), "'");
  LevelSlot().store(static_cast<int>(level));
}

const char* SimdLevelName(SimdLevel level) {
  switch (level) {
    case SimdLevel::kScalar: return "scalar";
    case SimdLevel::kAVX2: return "avx2";
    case SimdLevel::kAVX512BW: return "avx512bw";
    case SimdLevel::kAVX512: return "avx512";
    case SimdLevel::kNEON: return "neon";
  }
  return "unknown";
}

SimdLevel ParseSimdLevel(const std::string& name) {
  for (SimdLevel l :
       {SimdLevel::kScalar, SimdLevel::kAVX2, SimdLevel::kAVX512BW, SimdLevel::kAVX512, SimdLevel::kNEON}) {
    if (name == SimdLevelName(l)) return l;
  }
  PYL_CHECK(false, "unknown SIMD level '", name, "': use one of scalar, avx2, avx512bw, avx512, neon");
  return SimdLevel::kScalar;
}

std::vector<SimdLevel> SupportedSimdLevels() {
  const SimdLevel best = DetectedSimdLevel();
  if (best == SimdLevel::kNEON) return {SimdLevel::kScalar, SimdLevel::kNEON};
  std::vector<SimdLevel> out;  // the x86-64 levels are ordered
  for (int l = 0; l <= static_cast<int>(best); ++l) out.push_back(static_cast<SimdLevel>(l));
  return out;
}

}  // namespace pylocalize
