// ReleaseGil and the Ctrl-C flag the core polls without the GIL (see common.h).
#include <atomic>
#include <csignal>

#include "common.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace bindings {
namespace {

// Raised by OnSigint; cleared when the scope that installed the handler ends.
std::atomic<bool> g_sigint{false};
// The handler OnSigint chains to; read inside the signal handler, hence atomic. Never
// cleared: a signal racing with the restore must still reach Python's handler.
std::atomic<PyOS_sighandler_t> g_previous{nullptr};
unsigned long g_main_thread = 0;  // threading.main_thread().ident
// Whether this thread is inside a ReleaseGil that Ctrl-C should stop.
thread_local bool t_interruptible = false;

extern "C" void OnSigint(int sig) {
  g_sigint.store(true, std::memory_order_relaxed);
  const PyOS_sighandler_t previous = g_previous.load(std::memory_order_relaxed);
  if (previous != nullptr) previous(sig);
}

bool InterruptRequested() { return t_interruptible && g_sigint.load(std::memory_order_relaxed); }

// Whether the current SIGINT disposition is a plain handler we can chain to: not
// ignored, not the default (Ctrl-C then ends the process, nothing to poll), and not an
// SA_SIGINFO handler (it would need the siginfo arguments PyOS_setsig does not give).
bool CanChain(PyOS_sighandler_t h) {
  if (h == SIG_IGN || h == SIG_DFL || h == SIG_ERR || h == nullptr) return false;
#ifndef _WIN32
  struct sigaction current;
  if (sigaction(SIGINT, nullptr, &current) != 0 || (current.sa_flags & SA_SIGINFO)) return false;
#endif
  return true;
}

}  // namespace

ReleaseGil::ReleaseGil(bool poll_interrupts) : outer_interruptible_(t_interruptible) {
  if (poll_interrupts && PyThread_get_thread_ident() == g_main_thread) {
    const PyOS_sighandler_t current = PyOS_getsig(SIGINT);
    if (current == &OnSigint) {
      // Nested inside another scope on this thread (a callback released the GIL again):
      // the outer scope owns the handler.
      t_interruptible = true;
    } else if (CanChain(current)) {
      g_sigint.store(false, std::memory_order_relaxed);
      g_previous.store(current, std::memory_order_relaxed);
      PyOS_setsig(SIGINT, &OnSigint);
      installed_ = true;
      t_interruptible = true;
    }
  }
  release_.emplace();
}

ReleaseGil::~ReleaseGil() {
  release_.reset();  // the GIL first: restoring the handler must not race signal.signal()
  if (installed_) {
    PyOS_setsig(SIGINT, g_previous.load(std::memory_order_relaxed));
    g_sigint.store(false, std::memory_order_relaxed);
  }
  t_interruptible = outer_interruptible_;
}

void InitInterrupts() {
  g_main_thread = py::cast<unsigned long>(py::module_::import("threading").attr("main_thread")().attr("ident"));
  SetInterruptHook(&InterruptRequested);
}

}  // namespace bindings
}  // namespace pylocalize
