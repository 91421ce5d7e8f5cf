// Thread count, parallel loops and Ctrl-C polling for the core's hot loops.
//
// OpenMP does the work; this file keeps the rules in one place: the thread count is a
// process-wide setting (-1 = all cores), an exception thrown inside a parallel loop is
// caught and re-thrown on the calling thread, and long loops poll an interrupt hook
// (installed by the Python bindings) so Ctrl-C stops them.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>

namespace pylocalize {

int GetNumThreads();
// n >= 1 sets the count; n == -1 (or 0) means every core the process may use.
void SetNumThreads(int n);
int NumCores();

// The bindings install a hook that returns true when the user asked to stop (Ctrl-C).
// It is called only from the thread that started the work, at most every ~50 ms.
void SetInterruptHook(bool (*hook)());
// Called by long loops on the calling thread; throws Interrupted when the hook says so.
bool PollInterrupt();

// Call inside a long ParallelFor item (e.g. per tile) so Ctrl-C or an error elsewhere
// stops it promptly; throws an internal exception that ParallelFor absorbs. Outside a
// ParallelFor it only polls the hook and throws Interrupted.
void InterruptPoint();

// Runs fn(i, thread_id) for i in [0, n) on up to num_threads threads (dynamic schedule),
// re-throwing the first exception on the caller. Thread 0 polls for Ctrl-C between
// items; once interrupted the remaining items are skipped and Interrupted is thrown.
void ParallelFor(int64_t n, int num_threads, const std::function<void(int64_t, int)>& fn);

}  // namespace pylocalize
