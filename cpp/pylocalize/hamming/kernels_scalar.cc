// Portable kernels: plain C++ that any CPU runs (the fallback and the reference path).
#include <cstring>

#include "pylocalize/hamming/kernel_impl.h"

namespace pylocalize {
namespace hamming {
namespace {

struct ScalarOps {
  static constexpr int kQueryBlock = 2;
  struct V {
    uint64_t l[kBlock];
  };
  static V Zero() { return V{}; }
  static V Load(const uint64_t* p) {
    V v;
    std::memcpy(v.l, p, sizeof(v.l));
    return v;
  }
  static V XorBroadcast(V x, uint64_t q) {
    for (auto& e : x.l) e ^= q;
    return x;
  }
  static uint64_t Pop(uint64_t x) {
    // SWAR popcount: the baseline x86-64 ISA has no POPCNT instruction.
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (x * 0x0101010101010101ULL) >> 56;
  }
  static V Popcount(V x) {
    for (auto& e : x.l) e = Pop(e);
    return x;
  }
  static V Add(V a, const V& b) {
    for (int i = 0; i < kBlock; ++i) a.l[i] += b.l[i];
    return a;
  }
  static V ShiftLeft(V a, int s) {
    for (auto& e : a.l) e <<= s;
    return a;
  }
  static uint64_t LessMask(const V& d, int32_t t) {
    uint64_t m = 0;
    for (int i = 0; i < kBlock; ++i) {
      m |= static_cast<uint64_t>(static_cast<int64_t>(d.l[i]) < t) << i;
    }
    return m;
  }
  static void Store32(int32_t* out, const V& d) {
    for (int i = 0; i < kBlock; ++i) out[i] = static_cast<int32_t>(d.l[i]);
  }
  struct F {
    float l[kBlock];
  };
  static F Key(const V& d, const float* scales, float a, float b) {
    F f;
    for (int i = 0; i < kBlock; ++i) {
      f.l[i] = -((a - b * static_cast<float>(d.l[i])) * scales[i]);
    }
    return f;
  }
  static uint64_t LessMaskF(const F& f, float t) {
    uint64_t m = 0;
    for (int i = 0; i < kBlock; ++i) m |= static_cast<uint64_t>(f.l[i] < t) << i;
    return m;
  }
  static void StoreF(float* out, const F& f) { std::memcpy(out, f.l, sizeof(f.l)); }
};

}  // namespace

void HammingScalar(const ScanArgs& a) { impl::Hamming<ScalarOps>(a); }
void SdcScalar(const ScanArgs& a, int u) { impl::Sdc<ScalarOps>(a, u); }

}  // namespace hamming
}  // namespace pylocalize
