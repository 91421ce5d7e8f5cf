#include "pylocalize/util/threads.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "pylocalize/util/check.h"

namespace pylocalize {
namespace {

std::atomic<int> g_num_threads{-1};
std::atomic<bool (*)()> g_interrupt_hook{nullptr};

}  // namespace

int NumCores() {
#ifdef _OPENMP
  return omp_get_num_procs();
#else
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
#endif
}

int GetNumThreads() {
  const int n = g_num_threads.load();
  return n > 0 ? n : NumCores();
}

void SetNumThreads(int n) {
  PYL_CHECK(n >= -1, "num_threads must be >= 1, or -1 for all cores; got ", n);
  g_num_threads.store(n == 0 ? -1 : n);
}

void SetInterruptHook(bool (*hook)()) { g_interrupt_hook.store(hook); }

bool PollInterrupt() {
  auto hook = g_interrupt_hook.load();
  return hook != nullptr && hook();
}

void ParallelFor(int64_t n, int num_threads, const std::function<void(int64_t, int)>& fn) {
  if (n <= 0) return;
  if (num_threads <= 0) num_threads = GetNumThreads();
  if (num_threads > n) num_threads = static_cast<int>(n);
  std::exception_ptr error;
  std::mutex error_mutex;
  std::atomic<bool> stop{false};
  std::atomic<bool> interrupted{false};
  using Clock = std::chrono::steady_clock;
  auto last_poll = Clock::now();

  auto body = [&](int64_t i, int tid) {
    if (stop.load(std::memory_order_relaxed)) return;
    if (tid == 0) {
      const auto now = Clock::now();
      if (now - last_poll > std::chrono::milliseconds(50)) {
        last_poll = now;
        if (PollInterrupt()) {
          interrupted = true;
          stop = true;
          return;
        }
      }
    }
    try {
      fn(i, tid);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      stop = true;
    }
  };

#ifdef _OPENMP
  if (num_threads > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
    for (int64_t i = 0; i < n; ++i) body(i, omp_get_thread_num());
  } else {
    for (int64_t i = 0; i < n; ++i) body(i, 0);
  }
#else
  for (int64_t i = 0; i < n; ++i) body(i, 0);
#endif
  if (error) std::rethrow_exception(error);
  if (interrupted) throw Interrupted();
}

}  // namespace pylocalize
