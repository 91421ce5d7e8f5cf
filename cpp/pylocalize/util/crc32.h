// CRC-32 (IEEE 802.3, the zlib/PNG polynomial), slicing-by-8, so that file checksums
// need no system zlib and run at several GB/s.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pylocalize {

// Continues a CRC: Crc32(b, Crc32(a)) == Crc32(a + b). Start with crc = 0.
uint32_t Crc32(const void* data, size_t nbytes, uint32_t crc = 0);

}  // namespace pylocalize
