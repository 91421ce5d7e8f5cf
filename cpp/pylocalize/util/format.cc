#include "pylocalize/util/format.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define PYL_HAVE_MMAP 1
#endif

#include "pylocalize/util/atomic_file.h"
#include "pylocalize/util/check.h"
#include "pylocalize/util/crc32.h"

namespace pylocalize {
namespace {

constexpr char kMagic[6] = {'P', 'Y', 'L', 'O', 'C', '\0'};
constexpr size_t kHeaderSize = 64;
constexpr size_t kTagSize = 32;
constexpr size_t kKeySize = 24;
constexpr size_t kMetaEntrySize = kKeySize + 8;
constexpr size_t kMaxDims = 4;
constexpr size_t kSectionEntrySize = kKeySize + 4 + 4 + 8 * kMaxDims + 8 + 8 + 4 + 4;
constexpr uint64_t kAlign = 64;

uint64_t AlignUp(uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

template <typename T>
void Put(std::vector<uint8_t>* out, size_t pos, T value) {
  std::memcpy(out->data() + pos, &value, sizeof(T));
}
template <typename T>
T Get(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

void PutName(std::vector<uint8_t>* out, size_t pos, const std::string& name, size_t width) {
  std::memcpy(out->data() + pos, name.data(), name.size());  // rest stays zero
  (void)width;
}

std::string GetName(const uint8_t* p, size_t width) {
  size_t n = 0;
  while (n < width && p[n] != 0) ++n;
  return std::string(reinterpret_cast<const char*>(p), n);
}

// Tags, keys and names reach Python as str and are quoted in error messages: they must be
// UTF-8 (Python's strict rules: no overlong forms, no surrogates).
bool IsUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // range of the first continuation byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (s.size() - i <= len) return false;
    for (size_t k = 1; k <= len; ++k) {
      const unsigned char b = static_cast<unsigned char>(s[i + k]);
      if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return false;
    }
    i += len + 1;
  }
  return true;
}

// Bytes of a name that is not UTF-8, shown in a message: printable ASCII as is, others as \xNN.
std::string Escaped(const std::string& s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += ch;
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// Header fields at fixed offsets.
constexpr size_t kOffMajor = 6, kOffMinor = 8, kOffNumMeta = 10, kOffNumSections = 12, kOffTag = 16, kOffTotal = 48,
                 kOffTablesCrc = 56, kOffHeaderCrc = 60;

}  // namespace

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kUInt8: return 1;
    case DType::kInt32: return 4;
    case DType::kFloat32: return 4;
    case DType::kInt64: return 8;
    case DType::kUInt64: return 8;
    case DType::kFloat64: return 8;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kUInt8: return "uint8";
    case DType::kInt32: return "int32";
    case DType::kFloat32: return "float32";
    case DType::kInt64: return "int64";
    case DType::kUInt64: return "uint64";
    case DType::kFloat64: return "float64";
  }
  return "unknown";
}

FileError::FileError(int error, const std::string& path)
    : std::runtime_error("cannot open '" + path + "': " + std::strerror(error)), error_(error), path_(path) {}

int64_t ArrayView::size() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

ContainerWriter::ContainerWriter(std::string tag) : tag_(std::move(tag)) {
  PYL_CHECK(!tag_.empty() && tag_.size() < kTagSize, "container tag must have 1..31 chars");
}

void ContainerWriter::SetMeta(const std::string& key, int64_t value) {
  PYL_CHECK(!key.empty() && key.size() < kKeySize, "metadata key '", key, "' must have 1..23 chars");
  for (auto& kv : meta_) {
    if (kv.first == key) {
      kv.second = value;
      return;
    }
  }
  meta_.emplace_back(key, value);
}

void ContainerWriter::AddSection(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data) {
  uint64_t n = DTypeSize(dtype);
  for (int64_t s : shape) n *= static_cast<uint64_t>(std::max<int64_t>(s, 0));
  AddSection(name, dtype, std::move(shape), std::vector<Piece>{{data, n}});
}

void ContainerWriter::AddSection(const std::string& name, DType dtype, std::vector<int64_t> shape,
                                 std::vector<Piece> pieces) {
  PYL_CHECK(!name.empty() && name.size() < kKeySize, "section name '", name, "' must have 1..23 chars");
  PYL_CHECK(shape.size() <= kMaxDims, "section '", name, "' has more than 4 dimensions");
  uint64_t n = 1;
  for (int64_t s : shape) {
    PYL_CHECK(s >= 0, "section '", name, "' has a negative dimension");
    n *= static_cast<uint64_t>(s);
  }
  uint64_t given = 0;
  for (const Piece& p : pieces) given += p.second;
  PYL_CHECK(given == n * DTypeSize(dtype), "section '", name, "': its pieces hold ", given, " bytes, its shape ",
            n * DTypeSize(dtype));
  sections_.push_back({name, dtype, std::move(shape), std::move(pieces), n * DTypeSize(dtype)});
}

std::vector<uint8_t> ContainerWriter::Tables(uint64_t* total_size, std::vector<uint64_t>* offsets) const {
  const size_t tables_size = meta_.size() * kMetaEntrySize + sections_.size() * kSectionEntrySize;
  std::vector<uint8_t> head(kHeaderSize + tables_size, 0);
  std::memcpy(head.data(), kMagic, sizeof(kMagic));
  Put<uint16_t>(&head, kOffMajor, kFormatMajor);
  Put<uint16_t>(&head, kOffMinor, kFormatMinor);
  Put<uint16_t>(&head, kOffNumMeta, static_cast<uint16_t>(meta_.size()));
  Put<uint32_t>(&head, kOffNumSections, static_cast<uint32_t>(sections_.size()));
  PutName(&head, kOffTag, tag_, kTagSize);
  size_t pos = kHeaderSize;
  for (const auto& kv : meta_) {
    PutName(&head, pos, kv.first, kKeySize);
    Put<int64_t>(&head, pos + kKeySize, kv.second);
    pos += kMetaEntrySize;
  }
  uint64_t offset = AlignUp(head.size());
  offsets->clear();
  for (const auto& s : sections_) {
    PutName(&head, pos, s.name, kKeySize);
    Put<uint32_t>(&head, pos + kKeySize, static_cast<uint32_t>(s.dtype));
    Put<uint32_t>(&head, pos + kKeySize + 4, static_cast<uint32_t>(s.shape.size()));
    for (size_t d = 0; d < s.shape.size(); ++d) {
      Put<int64_t>(&head, pos + kKeySize + 8 + 8 * d, s.shape[d]);
    }
    const size_t p = pos + kKeySize + 8 + 8 * kMaxDims;
    Put<uint64_t>(&head, p, offset);
    Put<uint64_t>(&head, p + 8, s.nbytes);
    uint32_t crc = 0;
    for (const Piece& piece : s.pieces) crc = Crc32(piece.first, piece.second, crc);
    Put<uint32_t>(&head, p + 16, crc);
    offsets->push_back(offset);
    offset = AlignUp(offset + s.nbytes);
    pos += kSectionEntrySize;
  }
  *total_size = sections_.empty() ? head.size() : offsets->back() + sections_.back().nbytes;
  Put<uint64_t>(&head, kOffTotal, *total_size);
  Put<uint32_t>(&head, kOffTablesCrc, Crc32(head.data() + kHeaderSize, tables_size));
  Put<uint32_t>(&head, kOffHeaderCrc, Crc32(head.data(), kOffHeaderCrc));
  return head;
}

std::vector<uint8_t> ContainerWriter::ToBytes() const {
  uint64_t total = 0;
  std::vector<uint64_t> offsets;
  std::vector<uint8_t> out = Tables(&total, &offsets);
  out.resize(total, 0);
  for (size_t i = 0; i < sections_.size(); ++i) {
    uint64_t at = offsets[i];
    for (const Piece& piece : sections_[i].pieces) {
      if (piece.second > 0) std::memcpy(out.data() + at, piece.first, piece.second);
      at += piece.second;
    }
  }
  return out;
}

void ContainerWriter::WriteFile(const std::string& path) const {
  uint64_t total = 0;
  std::vector<uint64_t> offsets;
  const std::vector<uint8_t> head = Tables(&total, &offsets);
  AtomicFile file(path);
  file.Write(head.data(), head.size());
  uint64_t pos = head.size();
  for (size_t i = 0; i < sections_.size(); ++i) {
    file.WriteZeros(offsets[i] - pos);
    for (const Piece& piece : sections_[i].pieces) file.Write(piece.first, piece.second);
    pos = offsets[i] + sections_[i].nbytes;
  }
  file.Commit();
}

namespace {

#ifdef PYL_HAVE_MMAP
struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr != nullptr && size > 0) ::munmap(addr, size);
  }
};
#endif

}  // namespace

Container Container::FromFile(const std::string& path, bool mmap, bool verify) {
  Container c;
#ifdef PYL_HAVE_MMAP
  // Looked at before opening: a directory opens for reading, and its "size" would then be
  // taken for a file's (std::bad_alloc) or fail to map with an unrelated message; opening
  // a pipe would block.
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw FileError(errno, path);
  PYL_CHECK_FORMAT(!S_ISDIR(st.st_mode), "'", path,
                   "' is a directory, not a pylocalize file; "
                   "pass the path of the file to load");
  PYL_CHECK_FORMAT(S_ISREG(st.st_mode), "'", path,
                   "' is not a regular file (a device, pipe or "
                   "socket), not a pylocalize file; pass the path of the file to load");
  if (mmap) {
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) throw FileError(errno, path);
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {  // replaced since the stat above
      ::close(fd);
      PYL_CHECK_FORMAT(false, "'", path, "' is not a regular file, not a pylocalize file");
    }
    auto mapping = std::make_shared<Mapping>();
    mapping->size = static_cast<size_t>(st.st_size);
    if (mapping->size > 0) {
      mapping->addr = ::mmap(nullptr, mapping->size, PROT_READ, MAP_SHARED, fd, 0);
    }
    ::close(fd);
    if (mapping->addr == MAP_FAILED) {
      mapping->addr = nullptr;
      PYL_CHECK(false, "cannot memory-map '", path, "': ", std::strerror(errno));
    }
    c.owner_ = mapping;
    c.mapped_ = true;
    c.Parse(static_cast<const uint8_t*>(mapping->addr), mapping->size, verify, path);
    return c;
  }
#else
  (void)mmap;
#endif
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f.good()) throw FileError(errno, path);
  const std::streamoff size = f.tellg();
  PYL_CHECK_FORMAT(size >= 0, "cannot read '", path, "': not a pylocalize file");
  f.seekg(0);
  auto bytes = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(size));
  f.read(reinterpret_cast<char*>(bytes->data()), size);
  PYL_CHECK_FORMAT(f.good() || size == 0, "cannot read '", path, "'");
  c.owner_ = bytes;
  c.Parse(bytes->data(), bytes->size(), verify, path);
  return c;
}

Container Container::FromBytes(std::vector<uint8_t> bytes, bool verify) {
  Container c;
  auto owned = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  c.owner_ = owned;
  c.Parse(owned->data(), owned->size(), verify, "<bytes>");
  return c;
}

void Container::Parse(const uint8_t* data, uint64_t size, bool verify, const std::string& src) {
  const std::string where = "'" + src + "'";
  PYL_CHECK_FORMAT(size >= kHeaderSize, where, " is not a pylocalize file: ", size,
                   " bytes is shorter than the 64-byte header (truncated?)");
  PYL_CHECK_FORMAT(std::memcmp(data, kMagic, sizeof(kMagic)) == 0, where,
                   " is not a pylocalize file (wrong magic bytes)");
  PYL_CHECK_FORMAT(Get<uint32_t>(data + kOffHeaderCrc) == Crc32(data, kOffHeaderCrc), where,
                   " has a corrupt header (checksum mismatch)");
  major_ = Get<uint16_t>(data + kOffMajor);
  minor_ = Get<uint16_t>(data + kOffMinor);
  PYL_CHECK_FORMAT(major_ <= kFormatMajor, where, " uses file format ", major_, ".", minor_,
                   ", newer than this pylocalize reads (", kFormatMajor,
                   ".x); upgrade "
                   "pylocalize (pip install -U pylocalize) to read it");
  tag_ = GetName(data + kOffTag, kTagSize);
  PYL_CHECK_FORMAT(IsUtf8(tag_), where, " has a type tag that is not text ('", Escaped(tag_),
                   "'): corrupt, or not a pylocalize file");
  const uint64_t total = Get<uint64_t>(data + kOffTotal);
  PYL_CHECK_FORMAT(total == size, where, " is ", size, " bytes but its header says ", total,
                   " (truncated or padded file)");
  const uint64_t num_meta = Get<uint16_t>(data + kOffNumMeta);
  const uint64_t num_sections = Get<uint32_t>(data + kOffNumSections);
  const uint64_t tables_size = num_meta * kMetaEntrySize + num_sections * kSectionEntrySize;
  PYL_CHECK_FORMAT(num_sections < (1u << 20) && kHeaderSize + tables_size <= size, where,
                   " has a section table larger than the file (corrupt)");
  PYL_CHECK_FORMAT(Get<uint32_t>(data + kOffTablesCrc) == Crc32(data + kHeaderSize, tables_size), where,
                   " has a corrupt section table (checksum mismatch)");
  const uint8_t* p = data + kHeaderSize;
  for (uint64_t i = 0; i < num_meta; ++i, p += kMetaEntrySize) {
    const std::string key = GetName(p, kKeySize);
    PYL_CHECK_FORMAT(IsUtf8(key), where, " has a metadata key that is not text ('", Escaped(key), "') (corrupt)");
    meta_[key] = Get<int64_t>(p + kKeySize);
  }
  for (uint64_t i = 0; i < num_sections; ++i, p += kSectionEntrySize) {
    ArrayView v;
    const std::string name = GetName(p, kKeySize);
    PYL_CHECK_FORMAT(IsUtf8(name), where, " has a section name that is not text ('", Escaped(name), "') (corrupt)");
    const uint32_t dt = Get<uint32_t>(p + kKeySize);
    const uint32_t ndim = Get<uint32_t>(p + kKeySize + 4);
    PYL_CHECK_FORMAT(dt >= 1 && dt <= 6 && ndim <= kMaxDims, where, " section '", name,
                     "' has an unknown dtype or rank (corrupt)");
    v.dtype = static_cast<DType>(dt);
    uint64_t count = 1;
    // The product of the non-zero dimensions must fit too: an empty section of shape
    // (0, 2**62) holds no bytes, but numpy (like any reader) refuses to make such an array.
    uint64_t extent = DTypeSize(v.dtype);
    for (uint32_t d = 0; d < ndim; ++d) {
      const int64_t s = Get<int64_t>(p + kKeySize + 8 + 8 * d);
      PYL_CHECK_FORMAT(s >= 0 && (s == 0 || extent <= (uint64_t{1} << 62) / static_cast<uint64_t>(s)), where,
                       " section '", name, "' has an invalid shape (corrupt)");
      if (s != 0) extent *= static_cast<uint64_t>(s);
      count *= static_cast<uint64_t>(s);
      v.shape.push_back(s);
    }
    const uint8_t* q = p + kKeySize + 8 + 8 * kMaxDims;
    const uint64_t offset = Get<uint64_t>(q);
    v.nbytes = Get<uint64_t>(q + 8);
    const uint32_t crc = Get<uint32_t>(q + 16);
    PYL_CHECK_FORMAT(v.nbytes == count * DTypeSize(v.dtype), where, " section '", name,
                     "' size does not match its shape (corrupt)");
    PYL_CHECK_FORMAT(offset >= kHeaderSize + tables_size && offset <= size && v.nbytes <= size - offset, where,
                     " section '", name, "' lies outside the file (truncated?)");
    v.data = data + offset;
    if (verify) {
      PYL_CHECK_FORMAT(Crc32(v.data, v.nbytes) == crc, where, " section '", name, "' is corrupt (checksum mismatch)");
    }
    sections_[name] = v;
  }
}

int64_t Container::Meta(const std::string& key) const {
  auto it = meta_.find(key);
  PYL_CHECK_FORMAT(it != meta_.end(), tag_, " file lacks metadata '", key, "' (corrupt)");
  return it->second;
}

const ArrayView& Container::Section(const std::string& name, DType dtype) const {
  auto it = sections_.find(name);
  PYL_CHECK_FORMAT(it != sections_.end(), tag_, " file lacks section '", name, "' (corrupt)");
  PYL_CHECK_FORMAT(it->second.dtype == dtype, tag_, " file section '", name, "' is ", DTypeName(it->second.dtype),
                   ", expected ", DTypeName(dtype));
  return it->second;
}

void Container::ExpectTag(const std::string& expected) const {
  PYL_CHECK_FORMAT(tag_ == expected, "this file holds a ", tag_, ", not a ", expected);
}

}  // namespace pylocalize
