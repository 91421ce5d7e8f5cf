#include "pylocalize/util/threads.h"

#include <atomic>
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

// The state of the innermost ParallelFor a thread is working for.
struct LoopState {
  std::atomic<bool> stop{false};
  std::atomic<bool> interrupted{false};
  LoopState* parent = nullptr;  // the loop whose item started this one, if nested
};
thread_local LoopState* t_loop = nullptr;
thread_local int t_tid = 0;

struct Abandon {};  // unwinds an item once the loop is stopping

// True when this loop or one that encloses it is stopping.
bool Stopping(const LoopState* s) {
  for (; s != nullptr; s = s->parent) {
    if (s->stop.load(std::memory_order_relaxed)) return true;
  }
  return false;
}

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

void InterruptPoint() {
  LoopState* s = t_loop;
  if (s == nullptr) {
    if (PollInterrupt()) throw Interrupted();
    return;
  }
  // The hook answers true only on the thread that made the call (thread 0 of the
  // outermost loop); other threads learn it from the stop flags.
  if (t_tid == 0 && PollInterrupt()) {
    s->interrupted = true;
    s->stop = true;
  }
  if (Stopping(s)) throw Abandon();
}

void ParallelFor(int64_t n, int num_threads, const std::function<void(int64_t, int)>& fn) {
  if (n <= 0) return;
  if (num_threads <= 0) num_threads = GetNumThreads();
  if (num_threads > n) num_threads = static_cast<int>(n);
  std::exception_ptr error;
  std::mutex error_mutex;
  LoopState state;
  LoopState* const outer_loop = t_loop;
  state.parent = outer_loop;
  const int outer_tid = t_tid;

  auto body = [&](int64_t i, int tid) {
    if (Stopping(&state)) return;
    LoopState* const saved = t_loop;
    const int saved_tid = t_tid;
    t_loop = &state;
    t_tid = tid;
    try {
      if (tid == 0 && PollInterrupt()) {
        state.interrupted = true;
        state.stop = true;
      } else {
        fn(i, tid);
      }
    } catch (const Abandon&) {
      // stopping: the reason is already recorded
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      state.stop = true;
    }
    t_loop = saved;
    t_tid = saved_tid;
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
  t_loop = outer_loop;
  t_tid = outer_tid;
  if (error) std::rethrow_exception(error);
  if (state.interrupted) throw Interrupted();
  // Items were skipped because the enclosing loop is stopping: the result is incomplete,
  // so unwind the enclosing item (its ParallelFor absorbs Abandon) instead of returning it.
  if (Stopping(outer_loop)) throw Abandon();
}

}  // namespace pylocalize
