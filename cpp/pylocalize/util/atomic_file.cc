#include "pylocalize/util/atomic_file.h"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#define PYL_POSIX_FILES 1
#endif

#include "pylocalize/util/check.h"

namespace pylocalize {
namespace {

constexpr const char* kTempMarker = ".tmp-";

// Distinguishes temporary files of threads of one process writing the same target.
std::atomic<uint64_t> g_temp_counter{0};

std::string Dirname(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string Basename(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string ErrnoText(int error) { return std::strerror(error); }

[[noreturn]] void ThrowWriteError(const std::string& what, const std::string& path, int error) {
  std::string fix;
  if (error == ENOENT) {
    fix = "; create the folder '" + Dirname(path) + "' first";
  } else if (error == EACCES || error == EPERM || error == EROFS) {
    fix = "; choose a writable folder";
  } else if (error == ENOSPC
#ifdef EDQUOT
             || error == EDQUOT
#endif
  ) {
    fix = "; free disk space and save again (the previous file is unchanged)";
  }
  throw std::invalid_argument(what + " '" + path + "': " + ErrnoText(error) + fix);
}

}  // namespace

#ifdef PYL_POSIX_FILES

int RemoveStaleTempFiles(const std::string& path) {
  const std::string dir = Dirname(path);
  const std::string prefix = Basename(path) + kTempMarker;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  std::vector<std::string> stale;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    // "<pid>" or "<pid>-<n>": anything else is not ours and is left alone.
    const char* digits = name.c_str() + prefix.size();
    char* end = nullptr;
    errno = 0;
    const long pid = std::strtol(digits, &end, 10);
    if (end == digits || errno != 0 || pid <= 0) continue;
    if (*end == '-') {
      const char* n = end + 1;
      std::strtoull(n, &end, 10);
      if (end == n) continue;
    }
    if (*end != '\0') continue;
    if (pid == static_cast<long>(::getpid())) continue;                       // a thread of ours may be writing it
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // still running
    stale.push_back(dir + "/" + name);
  }
  ::closedir(d);
  int removed = 0;
  for (const auto& file : stale) removed += ::unlink(file.c_str()) == 0;
  return removed;
}

void SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) ThrowWriteError("cannot open folder", dir, errno);
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  // Some file systems (and FUSE mounts) cannot sync a folder; the rename is then as
  // durable as that file system makes it.
  if (rc != 0 && error != EINVAL && error != ENOTSUP && error != EBADF) {
    ThrowWriteError("cannot sync folder", dir, error);
  }
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  PYL_CHECK(!path_.empty(), "the path to write is empty");
  RemoveStaleTempFiles(path_);
  tmp_ = path_ + kTempMarker + std::to_string(::getpid()) + "-" + std::to_string(g_temp_counter.fetch_add(1));
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) ThrowWriteError("cannot write", path_, errno);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::Write(const void* data, size_t nbytes) {
  PYL_CHECK(fd_ >= 0 && !committed_, "write to a closed file '", path_, "'");
  const char* p = static_cast<const char*>(data);
  while (nbytes > 0) {
    // Linux writes at most ~2 GiB per call; larger buffers go in pieces.
    const size_t chunk = nbytes < (size_t{1} << 30) ? nbytes : (size_t{1} << 30);
    const ssize_t n = ::write(fd_, p, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      ThrowWriteError("writing failed for", path_, errno);
    }
    p += n;
    nbytes -= static_cast<size_t>(n);
  }
}

void AtomicFile::WriteZeros(size_t nbytes) {
  static const char zeros[4096] = {};
  while (nbytes > 0) {
    const size_t n = nbytes < sizeof(zeros) ? nbytes : sizeof(zeros);
    Write(zeros, n);
    nbytes -= n;
  }
}

void AtomicFile::Commit() {
  PYL_CHECK(fd_ >= 0 && !committed_, "file '", path_, "' was already committed");
  // The data must be on disk before the rename makes it visible: otherwise a power cut
  // can leave the new name pointing at a file of zeros (ext4 data=writeback, XFS).
  if (::fsync(fd_) != 0) ThrowWriteError("writing failed for", path_, errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) ThrowWriteError("writing failed for", path_, errno);
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int error = errno;
    if (error == EISDIR) {
      PYL_CHECK(false, "cannot write '", path_, "': it is a folder; give a file path");
    }
    ThrowWriteError("cannot replace", path_, error);
  }
  committed_ = true;
  SyncDirectory(Dirname(path_));
}

#else  // no POSIX: plain stdio, still through a temporary file and a rename

int RemoveStaleTempFiles(const std::string&) { return 0; }
void SyncDirectory(const std::string&) {}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  tmp_ = path_ + kTempMarker + "0-" + std::to_string(g_temp_counter.fetch_add(1));
  std::FILE* f = std::fopen(tmp_.c_str(), "wb");
  if (f == nullptr) ThrowWriteError("cannot write", path_, errno);
  std::fclose(f);
}

AtomicFile::~AtomicFile() {
  if (!committed_) std::remove(tmp_.c_str());
}

void AtomicFile::Write(const void* data, size_t nbytes) {
  std::FILE* f = std::fopen(tmp_.c_str(), "ab");
  if (f == nullptr || std::fwrite(data, 1, nbytes, f) != nbytes) {
    if (f) std::fclose(f);
    ThrowWriteError("writing failed for", path_, errno);
  }
  std::fclose(f);
}

void AtomicFile::WriteZeros(size_t nbytes) {
  std::vector<char> zeros(nbytes, 0);
  Write(zeros.data(), zeros.size());
}

void AtomicFile::Commit() {
  std::remove(path_.c_str());
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) ThrowWriteError("cannot replace", path_, errno);
  committed_ = true;
}

#endif

void WriteFileAtomic(const std::string& path, const void* data, size_t nbytes) {
  AtomicFile file(path);
  file.Write(data, nbytes);
  file.Commit();
}

}  // namespace pylocalize
