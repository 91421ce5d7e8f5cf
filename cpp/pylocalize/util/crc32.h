// CRC-32 (IEEE 802.3, the zlib/PNG polynomial), slicing-by-8, so that file checksums
// need no system zlib and run at several GB/s. Buffers of 16 MB and more are cut into
// pieces checked on every thread and their CRCs combined: loading a city-scale map is
// mostly checking gigabytes of mapped sections, and one core alone would take seconds.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pylocalize {

// Continues a CRC: Crc32(b, Crc32(a)) == Crc32(a + b). Start with crc = 0.
uint32_t Crc32(const void* data, size_t nbytes, uint32_t crc = 0);

// The CRC of a + b from crc_a = Crc32(a), crc_b = Crc32(b) and the length of b.
uint32_t Crc32Combine(uint32_t crc_a, uint32_t crc_b, size_t len_b);

}  // namespace pylocalize
