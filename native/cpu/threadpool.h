// One process-wide pool of worker threads for every CPU kernel (TSCLIP_NUM_THREADS, default the
// core count). The calling thread takes part, so a 1-thread pool has no workers at all.
#pragma once
#include <cstdint>
#include <functional>

namespace tsclip {
int num_threads();
void set_num_threads(int n);
// Calls fn(begin, end) on disjoint chunks covering [0, n), chunks of at least `grain` items.
// Nested calls run inline on the calling thread.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);
}  // namespace tsclip
