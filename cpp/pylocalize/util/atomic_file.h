// The one way pylocalize writes a file: all-or-nothing, durable, and tidy after a crash.
//
// Bytes go to a temporary file "<path>.tmp-<pid>-<n>" in the target's folder (so the
// rename never crosses file systems), which is fsync'ed, renamed over the target, and then
// the folder is fsync'ed so the rename itself survives a power cut. A process killed at any
// moment leaves the target holding its old bytes or its new bytes, never a mix or nothing.
// A temporary file left by a killed writer (its pid no longer runs) is removed by the next
// write of the same target. An existing file is never truncated or written in place, so a
// reader that memory-maps the old file keeps valid pages (no SIGBUS).
#pragma once

#include <cstddef>
#include <string>

namespace pylocalize {

class AtomicFile {
 public:
  // Creates the temporary file next to `path`; throws std::invalid_argument (with the
  // reason and the fix) if the folder is missing or not writable.
  explicit AtomicFile(std::string path);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  // Removes the temporary file unless Commit() succeeded.
  ~AtomicFile();

  void Write(const void* data, size_t nbytes);
  void WriteZeros(size_t nbytes);
  // fsync, rename over the target, fsync the folder. Throws if any step fails (disk full,
  // I/O error); the target then still holds its old bytes.
  void Commit();

  const std::string& temp_path() const { return tmp_; }

 private:
  std::string path_;
  std::string tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// Writes `nbytes` at `data` to `path` through an AtomicFile.
void WriteFileAtomic(const std::string& path, const void* data, size_t nbytes);

// Removes "<path>.tmp-<pid>[-<n>]" files whose writer process no longer runs; returns how
// many were removed. Called by every AtomicFile; exposed for tests and tools.
int RemoveStaleTempFiles(const std::string& path);

// fsync of a folder, so that a rename or a new file inside it is durable. A file system
// that cannot sync folders is tolerated; other errors throw.
void SyncDirectory(const std::string& dir);

}  // namespace pylocalize
