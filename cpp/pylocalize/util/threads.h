// Thread count, parallel loops and Ctrl-C polling for the core's hot loops.
//
// OpenMP does the work; this file keeps the rules in one place: the thread count is a
// process-wide setting (-1 = all cores), an exception thrown inside a parallel loop is
// caught and re-thrown on the calling thread, and long loops poll an interrupt hook
// (installed by the Python bindings) so Ctrl-C stops them.
//
// Lock order, for the whole core and its bindings (issue 16): the GIL first, then an
// index's lock (its std::shared_mutex), then that index's internal mutexes. A binding
// releases the GIL (bindings::ReleaseGil) before it calls anything that takes an index
// lock, and no code takes the GIL while it holds one: a thread that held an index lock
// and waited for the GIL would deadlock against a thread that holds the GIL and waits for
// that lock (say len(index) during train()). So the interrupt hook must not need the GIL
// either: it reads a flag that a C-level SIGINT handler raises.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>

namespace pylocalize {

int GetNumThreads();
// n >= 1 sets the count; n == -1 (or 0) means every core the process may use.
void SetNumThreads(int n);
int NumCores();

// The bindings install a hook that returns true when the user asked to stop (Ctrl-C) and
// the current thread is the one whose call Ctrl-C should stop. It is polled often (per
// block of work), so it must be cheap, must not block and must not take the GIL or any
// lock: the bindings' hook is two loads, a thread-local and an atomic flag.
void SetInterruptHook(bool (*hook)());
// Returns what the hook says (false when none is installed).
bool PollInterrupt();

// Call inside long work, per block (a tile, a few thousand rows or faces), so Ctrl-C or an
// error elsewhere stops it within milliseconds whatever the size of one ParallelFor item.
// Inside a ParallelFor it throws an internal exception that ParallelFor absorbs (the
// loop then throws Interrupted or the first error); outside one it throws Interrupted.
void InterruptPoint();

// Runs fn(i, thread_id) for i in [0, n) on up to num_threads threads (dynamic schedule),
// re-throwing the first exception on the caller. Thread 0 (the caller) polls for Ctrl-C
// between items and at InterruptPoint(); once interrupted the remaining items are skipped
// and Interrupted is thrown. A ParallelFor nested in another's item also stops when the
// outer loop stops, so a worker thread does not finish a long item that nobody will use.
void ParallelFor(int64_t n, int num_threads, const std::function<void(int64_t, int)>& fn);

}  // namespace pylocalize
