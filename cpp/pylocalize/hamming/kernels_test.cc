// Checks every SIMD kernel this CPU supports against a naive reference: the Hamming and
// SDC kernels of hamming/ and the dot-product kernels of knn/, and the blocked layouts. Built by CMake with
// -DPYLOCALIZE_BUILD_TESTS=ON (ctest), and cross-compiled for AArch64 and run under qemu by
// tests/test_kernels_cross.py. Exit status 0 when every kernel agrees.
#include "pylocalize/hamming/kernels.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "pylocalize/knn/kernels.h"
#include "pylocalize/util/cpu.h"

namespace pylocalize {
namespace hamming {
namespace {

int g_failures = 0;

void Fail(const char* what, SimdLevel level, int64_t a, int64_t b, int64_t c) {
  if (++g_failures <= 20) {
    std::printf("FAIL %s [%s] (%lld, %lld, %lld)\n", what, SimdLevelName(level), static_cast<long long>(a),
                static_cast<long long>(b), static_cast<long long>(c));
  }
}

int Pop(uint64_t x) {
  int n = 0;
  for (; x != 0; x &= x - 1) ++n;
  return n;
}

// Row-major codes (n x words) to the blocked layout, zero-padded to whole blocks.
std::vector<uint64_t> Blocked(const std::vector<uint64_t>& rows, int64_t n, int64_t words) {
  const int64_t nblocks = (n + kBlock - 1) / kBlock;
  std::vector<uint64_t> out(static_cast<size_t>(nblocks * words * kBlock), 0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t w = 0; w < words; ++w) {
      out[static_cast<size_t>(((i / kBlock) * words + w) * kBlock + i % kBlock)] =
          rows[static_cast<size_t>(i * words + w)];
    }
  }
  return out;
}

void CheckHamming(SimdLevel level, std::mt19937_64& rng) {
  for (int64_t words : {1, 2, 3, 4, 5, 8, 16, 17}) {
    for (int64_t nblocks : {1, 8, 13}) {
      for (int64_t nq : {1, 2, 3, 5, 9}) {
        const int64_t n = nblocks * kBlock;
        std::vector<uint64_t> rows(static_cast<size_t>(n * words)), q(static_cast<size_t>(nq * words));
        for (auto& x : rows) x = rng();
        for (auto& x : q) x = rng();
        for (int64_t i = 0; i < 3 && i < n; ++i) {  // exact copies: distance 0
          for (int64_t w = 0; w < words; ++w) rows[static_cast<size_t>(i * words + w)] = q[static_cast<size_t>(w)];
        }
        const std::vector<uint64_t> blocks = Blocked(rows, n, words);
        std::vector<int32_t> thr(static_cast<size_t>(nq));
        for (int64_t j = 0; j < nq; ++j) {
          thr[static_cast<size_t>(j)] = j % 3 == 2 ? INT32_MAX : static_cast<int32_t>(32 * words - 4 + rng() % 8);
        }
        const int64_t mld = (nblocks + 7) / 8 * 8;
        std::vector<int32_t> dist(static_cast<size_t>(nq * n), -1);
        std::vector<uint8_t> mask(static_cast<size_t>(nq * mld), 0xAA);
        ScanArgs a;
        a.queries = q.data();
        a.nq = nq;
        a.query_stride = words;
        a.blocks = blocks.data();
        a.nblocks = nblocks;
        a.words_per_code = words;
        a.thresholds = thr.data();
        a.dist = dist.data();
        a.ld = n;
        a.mask = mask.data();
        a.mld = mld;
        GetHammingKernel(level)(a);
        for (int64_t j = 0; j < nq; ++j) {
          for (int64_t i = 0; i < n; ++i) {
            int expected = 0;
            for (int64_t w = 0; w < words; ++w) {
              expected += Pop(q[static_cast<size_t>(j * words + w)] ^ rows[static_cast<size_t>(i * words + w)]);
            }
            const bool bit = (mask[static_cast<size_t>(j * mld + i / kBlock)] >> (i % kBlock)) & 1;
            if (bit != (expected < thr[static_cast<size_t>(j)])) Fail("hamming mask", level, words, j, i);
            if (bit && dist[static_cast<size_t>(j * n + i)] != expected) Fail("hamming dist", level, words, j, i);
          }
        }
      }
    }
  }
}

void CheckSdc(SimdLevel level, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> unit(0.5f, 1.5f);
  for (int u = 1; u <= 4; ++u) {
    for (int64_t wp : {1, 2, 3, 4, 8}) {
      for (int64_t nq : {1, 3, 5}) {
        const int64_t words = u * wp, nblocks = 5, n = nblocks * kBlock;
        std::vector<uint64_t> rows(static_cast<size_t>(n * words)), q(static_cast<size_t>(nq * words));
        for (auto& x : rows) x = rng();
        for (auto& x : q) x = rng();
        const std::vector<uint64_t> blocks = Blocked(rows, n, words);
        std::vector<float> scales(static_cast<size_t>(n));
        for (auto& s : scales) s = unit(rng);
        const float a_const = 1000.0f, b_const = 0.5f;
        // Reference S and keys; thresholds at the median key and an integer bound that
        // excludes part of the codes, so both tests are exercised.
        std::vector<int64_t> s_ref(static_cast<size_t>(nq * n));
        std::vector<float> key_ref(static_cast<size_t>(nq * n));
        std::vector<float> fthr(static_cast<size_t>(nq));
        std::vector<int32_t> ithr(static_cast<size_t>(nq));
        for (int64_t j = 0; j < nq; ++j) {
          std::vector<float> keys;
          for (int64_t i = 0; i < n; ++i) {
            int64_t s = 0;
            for (int qp = 0; qp < u; ++qp) {
              for (int xp = 0; xp < u; ++xp) {
                int64_t pc = 0;
                for (int64_t w = 0; w < wp; ++w) {
                  pc += Pop(q[static_cast<size_t>(j * words + qp * wp + w)] ^
                            rows[static_cast<size_t>(i * words + xp * wp + w)]);
                }
                s += pc << (2 * (u - 1) - qp - xp);
              }
            }
            s_ref[static_cast<size_t>(j * n + i)] = s;
            const float key = -((a_const - b_const * static_cast<float>(s)) * scales[static_cast<size_t>(i)]);
            key_ref[static_cast<size_t>(j * n + i)] = key;
            keys.push_back(key);
          }
          std::vector<float> sorted = keys;
          std::sort(sorted.begin(), sorted.end());
          fthr[static_cast<size_t>(j)] = sorted[sorted.size() / 2];
          std::vector<int64_t> ss(s_ref.begin() + j * n, s_ref.begin() + (j + 1) * n);
          std::sort(ss.begin(), ss.end());
          ithr[static_cast<size_t>(j)] = j == 0 ? INT32_MAX : static_cast<int32_t>(ss[ss.size() * 3 / 4]);
        }
        const int64_t mld = 8;
        std::vector<float> fdist(static_cast<size_t>(nq * n), 0.0f);
        std::vector<uint8_t> mask(static_cast<size_t>(nq * mld), 0xAA);
        ScanArgs a;
        a.queries = q.data();
        a.nq = nq;
        a.query_stride = words;
        a.blocks = blocks.data();
        a.nblocks = nblocks;
        a.words_per_code = words;
        a.thresholds = ithr.data();
        a.ld = n;
        a.mask = mask.data();
        a.mld = mld;
        a.scales = scales.data();
        a.sdc_a = a_const;
        a.sdc_b = b_const;
        a.fthresholds = fthr.data();
        a.fdist = fdist.data();
        GetSdcKernel(level)(a, u);
        for (int64_t j = 0; j < nq; ++j) {
          for (int64_t i = 0; i < n; ++i) {
            const float key = key_ref[static_cast<size_t>(j * n + i)];
            const float t = fthr[static_cast<size_t>(j)];
            if (std::fabs(key - t) <= 1e-4f * (std::fabs(t) + 1.0f)) continue;  // float ties
            const bool expected = s_ref[static_cast<size_t>(j * n + i)] < ithr[static_cast<size_t>(j)] && key < t;
            const bool bit = (mask[static_cast<size_t>(j * mld + i / kBlock)] >> (i % kBlock)) & 1;
            if (bit != expected) Fail("sdc mask", level, u * 100 + wp, j, i);
            if (bit && std::fabs(fdist[static_cast<size_t>(j * n + i)] - key) > 1e-4f * (std::fabs(key) + 1.0f)) {
              Fail("sdc key", level, u * 100 + wp, j, i);
            }
          }
        }
      }
    }
  }
}

// The knn dot-product kernels (float32 and uint8 blocks) against double-precision sums.
void CheckDot(SimdLevel level, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  for (int64_t dim : {1, 7, 32, 128}) {
    for (int64_t nq : {1, 3, 9}) {
      const int64_t nblocks = 3, n = nblocks * knn::kBlock;
      std::vector<float> q(static_cast<size_t>(nq * dim)), xf(static_cast<size_t>(n * dim));
      std::vector<uint8_t> xu(static_cast<size_t>(n * dim));
      for (auto& v : q) v = unit(rng);
      for (size_t i = 0; i < xf.size(); ++i) {
        xf[i] = unit(rng);
        xu[i] = static_cast<uint8_t>(rng() & 0xFF);
      }
      for (int element = 0; element < 2; ++element) {
        // blocked layout: element `d` of vector (16 b + l) at ((b * dim + d) * 16 + l)
        std::vector<float> bf(xf.size());
        std::vector<uint8_t> bu(xu.size());
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t d = 0; d < dim; ++d) {
            const size_t dst = static_cast<size_t>(((i / knn::kBlock) * dim + d) * knn::kBlock + i % knn::kBlock);
            bf[dst] = xf[static_cast<size_t>(i * dim + d)];
            bu[dst] = xu[static_cast<size_t>(i * dim + d)];
          }
        }
        std::vector<float> out(static_cast<size_t>(nq * n));
        knn::DotArgs a;
        a.queries = q.data();
        a.nq = nq;
        a.dim = dim;
        a.blocks = element == 0 ? static_cast<const void*>(bf.data()) : static_cast<const void*>(bu.data());
        a.element = element == 0 ? knn::Element::kFloat32 : knn::Element::kUInt8;
        a.nblocks = nblocks;
        a.out = out.data();
        a.ld = n;
        knn::GetDotKernel(level)(a);
        for (int64_t j = 0; j < nq; ++j) {
          for (int64_t i = 0; i < n; ++i) {
            double ref = 0.0, mag = 0.0;
            for (int64_t d = 0; d < dim; ++d) {
              const double x =
                  element == 0 ? xf[static_cast<size_t>(i * dim + d)] : xu[static_cast<size_t>(i * dim + d)];
              ref += q[static_cast<size_t>(j * dim + d)] * x;
              mag += std::fabs(q[static_cast<size_t>(j * dim + d)] * x);
            }
            if (std::fabs(out[static_cast<size_t>(j * n + i)] - ref) > 1e-5 * (mag + 1.0))
              Fail("dot", level, dim, j, i);
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace hamming
}  // namespace pylocalize

int main() {
  using namespace pylocalize;
  std::mt19937_64 rng(12345);
  for (SimdLevel level : SupportedSimdLevels()) {
    const int before = hamming::g_failures;
    hamming::CheckHamming(level, rng);
    hamming::CheckSdc(level, rng);
    hamming::CheckDot(level, rng);
    std::printf("%-8s %s\n", SimdLevelName(level), hamming::g_failures == before ? "ok" : "FAILED");
  }
  return hamming::g_failures == 0 ? 0 : 1;
}
