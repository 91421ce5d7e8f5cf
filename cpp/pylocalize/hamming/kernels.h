// Popcount kernels over the blocked code layout, one set per SIMD level.
//
// Layout: codes are padded to W 64-bit words and stored in blocks of 8 codes, word-major
// inside a block: word w of code (8*b + l) is at blocks[(b*W + w)*8 + l]. One 512-bit
// load then holds word w of 8 codes, so a query word is broadcast once and XOR + popcount
// give 8 partial distances with no horizontal reduction.
//
// A kernel scans nq queries against blocks [0, nblocks) of a chunk. For query q and block
// b it writes mask[q*mld + b], whose bit l says that code 8*b + l is strictly below
// thresholds[q], and, only for blocks with a set bit, the 8 distances into
// dist[q*ld + 8*b ...]. Callers read the mask 8 bytes (64 codes) at a time and turn set
// bits into top-k insertions; with a tight threshold almost no block stores distances.
#pragma once

#include <cstdint>

#include "pylocalize/util/cpu.h"

namespace pylocalize {
namespace hamming {

constexpr int64_t kBlock = 8;  // codes per block

struct ScanArgs {
  const uint64_t* queries;  // nq rows, query_stride words apart
  int64_t nq;
  int64_t query_stride;
  const uint64_t* blocks;  // nblocks blocks of words_per_code*8 words
  int64_t nblocks;
  int64_t words_per_code;     // W (Hamming) or bits_per_dim * words_per_plane (SDC)
  const int32_t* thresholds;  // nq
  int32_t* dist;              // nq rows of ld (>= 8 * nblocks)
  int64_t ld;
  uint8_t* mask;  // nq rows of mld (>= nblocks) bytes
  int64_t mld;
  // SDC only: the kernel ranks by the float key -(a - b * S) * scales[code] (smaller is
  // better). `thresholds` then hold integer bounds on S that every code with
  // key < fthresholds must meet, so the float key is computed only for the rare blocks
  // that pass the integer test; fdist receives the keys.
  const float* scales = nullptr;  // per code of the chunk
  float sdc_a = 0.0f, sdc_b = 0.0f;
  const float* fthresholds = nullptr;
  float* fdist = nullptr;
  // SDC with 2+ bit planes only, or nullptr: per query, a code is scored only when the
  // Hamming distance of its sign plane (plane 0) to the query's is below this bound
  // (progressive search: the sign plane is a coarse code, the full SDC score is paid
  // only by the few codes it lets through).
  const int32_t* sign_thresholds = nullptr;
};

// Hamming: dist = popcount(q ^ x) over W words.
using HammingKernel = void (*)(const ScanArgs& args);

// Symmetric distance between multi-bit codes of `bits_per_dim` bit planes of
// `words_per_plane` words each (plane-major): S = sum over all plane pairs (i, j) of
// 2^(2(u-1)-i-j) * popcount(q_i ^ x_j), an integer; the kernel emits the
// float key -(a - b * S) * scales[code] (see multibit.h for a, b and the scales).
using SdcKernel = void (*)(const ScanArgs& args, int bits_per_dim);

HammingKernel GetHammingKernel(SimdLevel level);
SdcKernel GetSdcKernel(SimdLevel level);

// Per-ISA entry points (each defined in its own translation unit).
void HammingScalar(const ScanArgs& a);
void SdcScalar(const ScanArgs& a, int bits_per_dim);
#if defined(__x86_64__) || defined(_M_X64)
void HammingAVX2(const ScanArgs& a);
void SdcAVX2(const ScanArgs& a, int bits_per_dim);
void HammingAVX512BW(const ScanArgs& a);
void SdcAVX512BW(const ScanArgs& a, int bits_per_dim);
void HammingAVX512(const ScanArgs& a);
void SdcAVX512(const ScanArgs& a, int bits_per_dim);
#endif
#if defined(__aarch64__)
void HammingNEON(const ScanArgs& a);
void SdcNEON(const ScanArgs& a, int bits_per_dim);
#endif

}  // namespace hamming
}  // namespace pylocalize
