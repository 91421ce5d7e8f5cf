#include "pylocalize/util/crc32.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace {

struct Tables {
  uint32_t t[8][256];
  Tables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
    }
  }
};

const Tables& GetTables() {
  static const Tables tables;
  return tables;
}

constexpr uint32_t kPolynomial = 0xEDB88320u;  // reflected
constexpr size_t kPiece = size_t{4} << 20;
constexpr size_t kParallelBytes = size_t{16} << 20;

// A CRC register shift is linear over GF(2): a 32 x 32 bit matrix, stored as the images
// of the 32 unit vectors. Times(m, v) applies m to v.
using Gf2Matrix = uint32_t[32];

uint32_t Times(const Gf2Matrix m, uint32_t v) {
  uint32_t out = 0;
  for (int i = 0; v != 0; ++i, v >>= 1) {
    if (v & 1u) out ^= m[i];
  }
  return out;
}

// out = a b (apply b, then a); out may not alias a or b.
void Product(const Gf2Matrix a, const Gf2Matrix b, Gf2Matrix out) {
  for (int i = 0; i < 32; ++i) out[i] = Times(a, b[i]);
}

// out = Z^len, Z the register update of one zero byte: by squaring, from one zero bit's.
void ZeroBytes(size_t len, Gf2Matrix out) {
  Gf2Matrix op, tmp;
  op[0] = kPolynomial;
  for (int i = 1; i < 32; ++i) op[i] = 1u << (i - 1);
  for (int i = 0; i < 3; ++i) {  // 1 -> 2 -> 4 -> 8 bits
    Product(op, op, tmp);
    std::memcpy(op, tmp, sizeof(op));
  }
  for (int i = 0; i < 32; ++i) out[i] = 1u << i;
  for (; len != 0; len >>= 1) {
    if (len & 1u) {
      Product(op, out, tmp);
      std::memcpy(out, tmp, sizeof(tmp));
    }
    Product(op, op, tmp);
    std::memcpy(op, tmp, sizeof(op));
  }
}

uint32_t Crc32Serial(const void* data, size_t nbytes, uint32_t crc);

}  // namespace

// CRC(a + b) = Z^len_b (CRC(a)) ^ CRC(b): the pre- and post-inversions cancel.
uint32_t Crc32Combine(uint32_t crc_a, uint32_t crc_b, size_t len_b) {
  Gf2Matrix z;
  ZeroBytes(len_b, z);
  return Times(z, crc_a) ^ crc_b;
}

uint32_t Crc32(const void* data, size_t nbytes, uint32_t crc) {
  const int threads = GetNumThreads();
  if (nbytes < kParallelBytes || threads < 2) return Crc32Serial(data, nbytes, crc);
  const auto* p = static_cast<const uint8_t*>(data);
  const size_t pieces = (nbytes + kPiece - 1) / kPiece;
  std::vector<uint32_t> part(pieces);
  ParallelFor(static_cast<int64_t>(pieces), threads, [&](int64_t i, int) {
    const size_t at = static_cast<size_t>(i) * kPiece;
    part[static_cast<size_t>(i)] = Crc32Serial(p + at, std::min(kPiece, nbytes - at), 0);
  });
  Gf2Matrix z;  // every piece but the last is kPiece long
  ZeroBytes(kPiece, z);
  for (size_t i = 0; i + 1 < pieces; ++i) crc = Times(z, crc) ^ part[i];
  return Crc32Combine(crc, part.back(), nbytes - (pieces - 1) * kPiece);
}

namespace {

uint32_t Crc32Serial(const void* data, size_t nbytes, uint32_t crc) {
  const auto& t = GetTables().t;
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  while (nbytes >= 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    lo ^= crc;  // little-endian hosts (x86-64, AArch64), as the file format assumes
    crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^ t[3][hi & 0xFF] ^
          t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
    p += 8;
    nbytes -= 8;
  }
  while (nbytes-- > 0) crc = t[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

}  // namespace
}  // namespace pylocalize
