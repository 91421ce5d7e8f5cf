// The one versioned binary container every pylocalize index and map part is stored in.
//
// Layout (little-endian):
//   fixed header, 64 bytes: magic "PYLOC\0", format major/minor (uint16), a type tag
//     (32 bytes, e.g. "BinaryIndex"), the number of metadata entries and of sections,
//     the total file size (truncation check), CRC-32 of the tables and of the header;
//   metadata table: (key[24], int64 value) entries — dimensions, counts, options;
//   section table: (name[24], dtype, ndim, shape[4], offset, nbytes, CRC-32) entries;
//   section payloads, each 64-byte aligned so a memory-mapped file feeds SIMD loads.
// Readers check every size against the file before trusting it, verify CRCs, and refuse
// a newer major version with a message; a newer minor version only adds metadata or
// sections, which older readers ignore ("new code reads old files" and old code reads
// compatible new ones). Writes go through AtomicFile (util/atomic_file.h): all-or-nothing.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace pylocalize {

constexpr uint16_t kFormatMajor = 1;
constexpr uint16_t kFormatMinor = 0;

enum class DType : uint32_t {
  kUInt8 = 1,
  kInt32 = 2,
  kInt64 = 3,
  kFloat32 = 4,
  kUInt64 = 5,
  kFloat64 = 6,
};
size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);

struct ArrayView {
  DType dtype = DType::kUInt8;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  int64_t size() const;  // number of elements
};

// Container metadata values are int64: a double (a search option) is kept in one bit for bit.
inline int64_t DoubleBits(double v) {
  int64_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return bits;
}

inline double BitsDouble(int64_t bits) {
  double v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

class ContainerWriter {
 public:
  explicit ContainerWriter(std::string tag);
  void SetMeta(const std::string& key, int64_t value);
  // The data is not copied: it must stay alive until the write.
  void AddSection(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data);
  // A section stored as consecutive pieces (pointer, bytes), e.g. the per-image arrays of
  // a map: written one after the other, never joined in memory. The pieces must add up to
  // the shape's bytes.
  using Piece = std::pair<const void*, uint64_t>;
  void AddSection(const std::string& name, DType dtype, std::vector<int64_t> shape, std::vector<Piece> pieces);
  std::vector<uint8_t> ToBytes() const;
  // All-or-nothing and durable (AtomicFile): the old file or the new one, never a mix.
  void WriteFile(const std::string& path) const;

 private:
  struct Pending {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<Piece> pieces;
    uint64_t nbytes;
  };
  std::vector<uint8_t> Tables(uint64_t* total_size, std::vector<uint64_t>* offsets) const;
  std::string tag_;
  std::vector<std::pair<std::string, int64_t>> meta_;
  std::vector<Pending> sections_;
};

// A file that cannot be opened: carries errno and the path, so that Python raises the
// matching OSError (FileNotFoundError for a missing file, PermissionError, ...).
class FileError : public std::runtime_error {
 public:
  FileError(int error, const std::string& path);
  int error() const { return error_; }
  const std::string& path() const { return path_; }

 private:
  int error_;
  std::string path_;
};

class Container {
 public:
  // Reads (or memory-maps) a file and validates it; throws FormatError if it is not a
  // valid container (a directory included) and FileError if it cannot be opened.
  static Container FromFile(const std::string& path, bool mmap, bool verify = true);
  static Container FromBytes(std::vector<uint8_t> bytes, bool verify = true);

  const std::string& tag() const { return tag_; }
  uint16_t major() const { return major_; }
  uint16_t minor() const { return minor_; }
  const std::map<std::string, int64_t>& meta() const { return meta_; }
  const std::map<std::string, ArrayView>& sections() const { return sections_; }
  // Throws FormatError naming the missing key or a wrong dtype / shape.
  int64_t Meta(const std::string& key) const;
  bool HasSection(const std::string& name) const { return sections_.count(name) > 0; }
  const ArrayView& Section(const std::string& name, DType dtype) const;
  // Keeps the bytes (buffer or mapping) alive for views handed out elsewhere.
  std::shared_ptr<const void> owner() const { return owner_; }
  bool mapped() const { return mapped_; }
  // Throws FormatError unless the tag is `expected`.
  void ExpectTag(const std::string& expected) const;

 private:
  void Parse(const uint8_t* data, uint64_t size, bool verify, const std::string& source);
  std::shared_ptr<const void> owner_;
  bool mapped_ = false;
  std::string tag_;
  uint16_t major_ = 0, minor_ = 0;
  std::map<std::string, int64_t> meta_;
  std::map<std::string, ArrayView> sections_;
};

}  // namespace pylocalize
