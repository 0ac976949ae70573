#include "threadpool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace tsclip {
namespace {

thread_local bool t_inside = false;

class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return int(workers_.size()) + 1; }

  void resize(int n) {
    stop();
    stopping_ = false;
    // A new worker has seen every job so far: it must not run the last one again.
    const uint64_t now = generation_.load();
    for (int i = 1; i < std::max(1, n); i++) workers_.emplace_back([this, now] { loop(now); });
  }

  void run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    int64_t chunks = std::min<int64_t>(size() * 4, (n + grain - 1) / grain);
    if (chunks <= 1 || workers_.empty() || t_inside) {
      fn(0, n);
      return;
    }
    std::lock_guard<std::mutex> serial(run_mu_);  // one parallel region at a time
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &fn;
      n_ = n;
      chunks_ = chunks;
      next_.store(0);
      pending_ = int(workers_.size());
      generation_++;
    }
    cv_.notify_all();
    work();
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void work() {
    bool was = t_inside;
    t_inside = true;
    for (;;) {
      int64_t c = next_.fetch_add(1);
      if (c >= chunks_) break;
      int64_t b = n_ * c / chunks_, e = n_ * (c + 1) / chunks_;
      if (b < e) (*job_)(b, e);
    }
    t_inside = was;
  }
  void loop(uint64_t seen) {
    for (;;) {
      // Spin briefly before sleeping: ops come back to back, and a condition-variable wake-up
      // costs tens of microseconds, a large part of a small product.
      for (int i = 0; i < 20000 && generation_.load(std::memory_order_acquire) == seen; i++) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
      }
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stopping_ || generation_.load() != seen; });
        if (stopping_) return;
        seen = generation_.load();
      }
      work();
      std::lock_guard<std::mutex> lk(mu_);
      if (--pending_ == 0) done_cv_.notify_one();
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
  std::condition_variable cv_, done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t n_ = 0, chunks_ = 0;
  std::atomic<int64_t> next_{0};
  int pending_ = 0;
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
