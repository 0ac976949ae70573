#include "threadpool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace tsclip {
namespace {

thread_local bool t_inside = false;

inline void cpu_relax() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#endif
}

// One parallel region. It lives on the caller's stack; workers reach it through Pool::current_.
struct Job {
  const std::function<void(int64_t, int64_t)>* fn;
  int64_t n, chunks;
  std::atomic<int64_t> next{0}, done{0};
  std::mutex error_mu;
  std::exception_ptr error;  // the first chunk that threw; rethrown by the caller

  void work() {
    for (int64_t c; (c = next.fetch_add(1)) < chunks;) {
      const int64_t b = n * c / chunks, e = n * (c + 1) / chunks;
      try {
        if (b < e) (*fn)(b, e);
      } catch (...) {
        std::lock_guard<std::mutex> lk(error_mu);
        if (!error) error = std::current_exception();
      }
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

// The caller publishes a job, works on it itself and waits only for chunks that workers have
// claimed: a worker that is asleep or descheduled when the job comes (another process on the
// core) simply finds no work left, instead of holding the caller until it checks in.
class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return int(workers_.size()) + 1; }

  void resize(int n) {
    stop();
    stopping_ = false;
    const uint64_t now = generation_.load();
    for (int i = 1; i < std::max(1, n); i++) workers_.emplace_back([this, now] { loop(now); });
  }

  void run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    const int64_t chunks = std::min<int64_t>(size() * 4, (n + grain - 1) / grain);
    if (chunks <= 1 || workers_.empty() || t_inside) {
      fn(0, n);
      return;
    }
    // One parallel region at a time. Another thread's region (a data worker thread resizing
    // images while the main thread computes) runs inline rather than waiting for the pool.
    std::unique_lock<std::mutex> serial(run_mu_, std::try_to_lock);
    if (!serial.owns_lock()) {
      fn(0, n);
      return;
    }
    Job job{&fn, n, chunks};
    current_.store(&job);
    generation_.fetch_add(1);
    if (sleeping_.load() > 0) {
      // Taking the mutex orders this wake-up after a sleeper's last look at the generation.
      { std::lock_guard<std::mutex> lk(mu_); }
      cv_.notify_all();
    }
    t_inside = true;
    job.work();
    t_inside = false;
    for (int spins = 0; job.done.load(std::memory_order_acquire) < chunks; spins++) {
      if (spins < 4096) cpu_relax();
      else std::this_thread::yield();
    }
    // Workers that picked up the pointer may still be looking at the job: wait for them to let go.
    current_.store(nullptr);
    while (in_job_.load() != 0) cpu_relax();
    if (job.error) std::rethrow_exception(job.error);
  }

 private:
  void loop(uint64_t seen) {
    t_inside = true;
    for (;;) {
      // Spin briefly before sleeping: ops come back to back, and a condition-variable wake-up
      // costs tens of microseconds, a large part of a small op.
      for (int i = 0; i < 20000 && generation_.load(std::memory_order_acquire) == seen; i++) cpu_relax();
      if (generation_.load() == seen) {
        std::unique_lock<std::mutex> lk(mu_);
        sleeping_.fetch_add(1);
        cv_.wait(lk, [&] { return stopping_ || generation_.load() != seen; });
        sleeping_.fetch_sub(1);
        if (stopping_) return;
      }
      seen = generation_.load();
      in_job_.fetch_add(1);
      if (Job* j = current_.load()) j->work();
      in_job_.fetch_sub(1);
    }
  }
  void stop() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_;
  std::condition_variable cv_;
  std::atomic<Job*> current_{nullptr};
  std::atomic<int> in_job_{0}, sleeping_{0};
  std::atomic<uint64_t> generation_{0};
  bool stopping_ = false;
};

int default_threads() {
  if (const char* s = std::getenv("TSCLIP_NUM_THREADS")) {
    int n = std::atoi(s);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

Pool& pool() {
  static Pool p(default_threads());
  return p;
}

}  // namespace

int num_threads() { return pool().size(); }
void set_num_threads(int n) { pool().resize(n); }
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  pool().run(n, std::max<int64_t>(1, grain), fn);
}

}  // namespace tsclip
