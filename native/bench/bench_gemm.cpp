// Benchmark and self-check of the CPU gemm op.
//   bench_gemm            validate, then time CLIP's shapes with 1 and 2 threads
//   bench_gemm --check    validate only (run with TSCLIP_SIMD=avx2 / scalar for the other paths)
// Validation compares the op against a float64 reference over odd shapes, every transpose
// combination, shared (batch stride 0) operands, accumulate, alpha, bias and padded rows.
// Timing reports GFLOP/s against this machine's FMA peak, measured here with a loop of
// independent vector FMAs per thread, and a naive triple loop for scale.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend.h"
#include "cpu/features.h"
#include "cpu/sgemm.h"
#include "cpu/threadpool.h"
#include "tensor.h"

namespace tsclip {
void cpu_gemm(const OpArgs&);
}

using namespace tsclip;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

TensorRef view(float* p, std::vector<int64_t> shape, std::vector<int64_t> strides) {
  TensorRef t;
  t.data = p;
  t.ndim = int(shape.size());
  for (int i = 0; i < t.ndim; i++) t.shape[i] = shape[size_t(i)], t.strides[i] = strides[size_t(i)];
  return t;
}

template <class Floats>
void fill_random(Floats& v, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  for (auto& x : v) x = d(rng);
}

// Host memory from the allocator tensors use (its page size and alignment), for the timings.
struct HostFloats {
  float* p;
  size_t n;
  explicit HostFloats(size_t count) : p(static_cast<float*>(device_alloc(Device::CPU, count * sizeof(float)))), n(count) {}
  ~HostFloats() { device_free(Device::CPU, p); }
  HostFloats(const HostFloats&) = delete;
  HostFloats& operator=(const HostFloats&) = delete;
  float* data() { return p; }
  size_t size() const { return n; }
  float* begin() { return p; }
  float* end() { return p + n; }
};

// ---------------------------------------------------------------- validation

struct Case {
  int64_t batch, M, N, K;
  bool ta, tb;          // operand stored transposed (a view with stride[-2] == 1)
  bool a_shared, b_shared;  // batch stride 0
  bool accumulate, bias;
  float alpha;
  int64_t pad;  // extra floats between stored rows
  bool two_d = false;  // pass [rows, cols] views (batch 1)
  int act = 0;         // 0 none, 1 relu, 2 quick_gelu, 3 gelu
};

double act_ref(int act, double v) {
  switch (act) {
    case 1: return v > 0 ? v : 0;
    case 2: return v / (1 + std::exp(-1.702 * v));
    case 3: return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
  }
  return v;
}

// Returns the largest error relative to its tolerance (> 1 fails).
double check_case(const Case& cs, std::mt19937& rng) {
  const int64_t B = cs.batch, M = cs.M, N = cs.N, K = cs.K;
  // a: stored as [batch][M][K+pad] or, transposed, [batch][K][M+pad]
  const int64_t a_ld = (cs.ta ? M : K) + cs.pad, a_mat = (cs.ta ? K : M) * a_ld;
  const int64_t b_ld = (cs.tb ? K : N) + cs.pad, b_mat = (cs.tb ? N : K) * b_ld;
  std::vector<float> a(size_t((cs.a_shared ? 1 : B) * a_mat + 1)), b(size_t((cs.b_shared ? 1 : B) * b_mat + 1));
  std::vector<float> c(static_cast<size_t>(B * M * N)), bias(static_cast<size_t>(N));
  fill_random(a, rng), fill_random(b, rng), fill_random(c, rng), fill_random(bias, rng);
  const std::vector<float> c0 = c;
  const int64_t a_bs = cs.a_shared ? 0 : a_mat, b_bs = cs.b_shared ? 0 : b_mat;
  auto A = [&](int64_t n, int64_t i, int64_t k) { return a[size_t(n * a_bs + (cs.ta ? k * a_ld + i : i * a_ld + k))]; };
  auto Bv = [&](int64_t n, int64_t k, int64_t j) { return b[size_t(n * b_bs + (cs.tb ? j * b_ld + k : k * b_ld + j))]; };

  OpArgs args;
  args.op = "gemm";
  if (cs.two_d) {
    args.in.push_back(view(a.data(), {M, K}, cs.ta ? std::vector<int64_t>{1, a_ld} : std::vector<int64_t>{a_ld, 1}));
    args.in.push_back(view(b.data(), {K, N}, cs.tb ? std::vector<int64_t>{1, b_ld} : std::vector<int64_t>{b_ld, 1}));
  } else {
    args.in.push_back(view(a.data(), {B, M, K}, cs.ta ? std::vector<int64_t>{a_bs, 1, a_ld} : std::vector<int64_t>{a_bs, a_ld, 1}));
    args.in.push_back(view(b.data(), {B, K, N}, cs.tb ? std::vector<int64_t>{b_bs, 1, b_ld} : std::vector<int64_t>{b_bs, b_ld, 1}));
  }
  args.in.push_back(cs.bias ? view(bias.data(), {N}, {1}) : TensorRef{});
  args.out.push_back(cs.two_d ? view(c.data(), {M, N}, {N, 1}) : view(c.data(), {B, M, N}, {M * N, N, 1}));
  args.ints = {cs.accumulate ? 1 : 0, cs.act};
  args.floats = {cs.alpha};
  cpu_gemm(args);

  double worst = 0;
  for (int64_t n = 0; n < B; n++)
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) {
        double s = 0, mag = 0;
        for (int64_t k = 0; k < K; k++) {
          double p = double(A(n, i, k)) * double(Bv(n, k, j));
          s += p, mag += std::fabs(p);
        }
        const size_t at = size_t((n * M + i) * N + j);
        double ref = double(cs.alpha) * s, scale = std::fabs(cs.alpha) * mag;
        if (cs.bias) ref += bias[size_t(j)], scale += std::fabs(bias[size_t(j)]);
        ref = act_ref(cs.act, ref);
        if (cs.accumulate) ref += c0[at], scale += std::fabs(c0[at]);
        const double err = std::fabs(double(c[at]) - ref) / (1e-5 * scale + 1e-7);
        if (!(err <= worst)) worst = std::isnan(err) ? INFINITY : err;
      }
  return worst;
}

std::string describe(const Case& c) {
  char s[200];
  std::snprintf(s, sizeof s, "%sbatch=%lld M=%lld N=%lld K=%lld a%s%s b%s%s acc=%d bias=%d alpha=%g pad=%lld act=%d",
                c.two_d ? "2-D " : "",
                (long long)c.batch, (long long)c.M, (long long)c.N, (long long)c.K, c.ta ? "T" : "N",
                c.a_shared ? "(shared)" : "", c.tb ? "T" : "N", c.b_shared ? "(shared)" : "", c.accumulate,
                c.bias, c.alpha, (long long)c.pad, c.act);
  return s;
}

// Calls gemm with tensors that must be refused; the error has to name the problem.
bool expect_error(const char* what, std::vector<TensorRef> in, TensorRef out, const char* needle) {
  OpArgs args;
  args.op = "gemm";
  args.in = std::move(in);
  args.out = {out};
  args.ints = {0};
  args.floats = {1.0};
  try {
    cpu_gemm(args);
  } catch (const Error& e) {
    if (std::strstr(e.what(), needle)) return true;
    std::printf("FAIL %s: message '%s' lacks '%s'\n", what, e.what(), needle);
    return false;
  }
  std::printf("FAIL %s: no error\n", what);
  return false;
}

bool validate() {
  std::mt19937 rng(1234);
  std::vector<Case> cases;
  const int64_t sizes[] = {1, 3, 17, 50, 77};
  int n = 0;
  for (int64_t M : sizes)
    for (int64_t N : sizes)
      for (int64_t K : sizes)
        for (int t = 0; t < 4; t++, n++) {
          // The other options cycle with different periods so that they meet every shape mix.
          Case c{1 + (n % 3 == 0 ? n % 4 : 0), M, N, K, bool(t & 1), bool(t & 2), false, false,
                 n % 2 == 1, n % 5 < 2, n % 7 == 0 ? -0.5f : n % 7 == 1 ? 2.0f : 1.0f, (n / 4) % 3 == 0 ? 3 : 0};
          if (c.batch > 1) c.a_shared = n % 9 == 0, c.b_shared = n % 2 == 0;
          c.act = (n / 3) % 4;
          cases.push_back(c);
        }
  // Several cache blocks in each dimension, the threaded split, the folded batch with a shared
  // weight, and a batch of small products run in parallel over the batch.
  for (int t = 0; t < 4; t++) {
    const bool ta = t & 1, tb = t & 2;
    cases.push_back({1, 130, 600, 300, ta, tb, false, false, t == 1, true, 1.0f, 0});
    cases.push_back({1, 257, 531, 1000, ta, tb, false, false, true, t == 2, 0.75f, 5});
    cases.push_back({2, 50, 768, 768, ta, tb, false, true, false, true, 1.0f, 0});
    cases.push_back({3, 77, 100, 520, ta, tb, t == 3, false, t == 0, false, 1.0f, 1});
    cases.push_back({16, 50, 50, 64, ta, tb, false, false, false, false, 0.125f, 0});
    cases.push_back({9, 7, 40, 33, ta, tb, true, true, true, true, 1.0f, 2});
  }
  // A weight shared over the batch folds into one taller product (also with one row per entry);
  // a transposed a cannot fold. Plain matrices without a batch dimension.
  cases.push_back({5, 1, 33, 40, false, false, false, true, true, true, 1.0f, 0});
  cases.push_back({4, 17, 20, 30, false, true, false, true, false, true, 1.0f, 2});
  cases.push_back({3, 17, 20, 30, true, false, false, true, false, true, 1.0f, 0});
  for (int t = 0; t < 4; t++)
    cases.push_back({1, 37, 45, 29, bool(t & 1), bool(t & 2), false, false, t == 0, true, 1.0f, 1, true});
  // Activations over several k blocks (applied once, after the last), with and without
  // accumulate (added after the activation), on the threaded and the folded paths.
  for (int act = 1; act <= 3; act++) {
    cases.push_back({1, 130, 600, 700, false, true, false, false, false, true, 0.5f, 0, false, act});
    cases.push_back({1, 61, 77, 520, true, false, false, false, true, true, 1.0f, 3, false, act});
    cases.push_back({4, 50, 96, 300, false, true, false, true, act == 2, true, 1.0f, 0, false, act});
  }
  // Few rows over several k blocks, split over columns: each thread accumulates its part of the
  // rows apart and writes it once (with accumulate, activation, alpha and a ragged edge).
  // Few rows with several column blocks per thread too (A packed once for all of K, each walk).
  for (int t = 0; t < 4; t++) {
    cases.push_back({1, 50, 700, 600, bool(t & 1), bool(t & 2), false, false, t == 0, true, 0.5f, 0, false, t == 3 ? 2 : 0});
    cases.push_back({1, 50, 200, 600, bool(t & 1), bool(t & 2), false, false, t != 1, true, t == 2 ? 0.5f : 1.0f, 1});
    cases.push_back({1, 37, 301, 530, bool(t & 1), bool(t & 2), false, false, false, t == 0, 1.0f, 0, false, t});
  }
  cases.push_back({1, 0, 5, 5, false, false, false, false, false, true, 1.0f, 0});
  cases.push_back({2, 5, 7, 0, false, true, false, false, true, true, 1.0f, 0});
  cases.push_back({2, 4, 6, 0, false, false, false, false, false, true, 1.0f, 0});

  int failed = 0;
  double worst = 0;
  for (const Case& c : cases) {
    const double e = check_case(c, rng);
    worst = std::max(worst, e);
    if (!(e <= 1.0)) {
      if (failed++ < 10) std::printf("FAIL %s: error %.3g x tolerance\n", describe(c).c_str(), e);
    }
  }

  // Refused inputs.
  std::vector<float> buf(4096);
  float* p = buf.data();
  bool ok = true;
  ok &= expect_error("strided a", {view(p, {1, 4, 4}, {64, 8, 2}), view(p, {1, 4, 4}, {16, 4, 1})},
                     view(p + 2048, {1, 4, 4}, {16, 4, 1}), "one of the last two strides must be 1");
  ok &= expect_error("inner size", {view(p, {1, 4, 5}, {20, 5, 1}), view(p, {1, 4, 4}, {16, 4, 1})},
                     view(p + 2048, {1, 4, 4}, {16, 4, 1}), "inner sizes differ");
  ok &= expect_error("c shape", {view(p, {1, 4, 4}, {16, 4, 1}), view(p, {1, 4, 4}, {16, 4, 1})},
                     view(p + 2048, {1, 4, 3}, {12, 3, 1}), "expected [4,4]");
  ok &= expect_error("batch", {view(p, {2, 4, 4}, {16, 4, 1}), view(p, {3, 4, 4}, {16, 4, 1})},
                     view(p + 2048, {3, 4, 4}, {16, 4, 1}), "a has batch 2, expected 3");
  ok &= expect_error("c layout", {view(p, {1, 4, 4}, {16, 4, 1}), view(p, {1, 4, 4}, {16, 4, 1})},
                     view(p + 2048, {1, 4, 4}, {16, 1, 4}), "must be contiguous");
  {
    OpArgs args;
    args.op = "gemm";
    args.in = {view(p, {1, 4, 4}, {16, 4, 1}), view(p, {1, 4, 4}, {16, 4, 1})};
    args.out = {view(p + 2048, {1, 4, 4}, {16, 4, 1})};
    args.ints = {0, 4};
    args.floats = {1.0};
    bool threw = false;
    try {
      cpu_gemm(args);
    } catch (const Error& e) {
      threw = std::strstr(e.what(), "activation must be") != nullptr;
    }
    if (!threw) std::printf("FAIL activation 4 was not refused by name\n");
    ok &= threw;
  }
  ok &= expect_error("bias", {view(p, {1, 4, 4}, {16, 4, 1}), view(p, {1, 4, 4}, {16, 4, 1}), view(p, {3}, {1})},
                     view(p + 2048, {1, 4, 4}, {16, 4, 1}), "bias must be float32[4]");

  std::printf("validation (%s path, %d thread(s)): %zu cases, worst error %.3g x tolerance, %s\n",
              sgemm_path(), num_threads(), cases.size(), worst,
              failed || !ok ? "FAILED" : "ok");
  return failed == 0 && ok;
}

// ---------------------------------------------------------------- peak

// 16 independent FMA chains cover latency x throughput on current cores.
__attribute__((target("avx512f,fma"))) float fma_loop_zmm(int64_t iters, float seed) {
  __m512 acc[16];
  for (int j = 0; j < 16; j++) acc[j] = _mm512_set1_ps(seed + 0.01f * float(j));
  const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(seed * 1e-3f);
  for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 16
    for (int j = 0; j < 16; j++) acc[j] = _mm512_fmadd_ps(acc[j], x, y);
  }
  __m512 s = acc[0];
  for (int j = 1; j < 16; j++) s = _mm512_add_ps(s, acc[j]);
  return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) float fma_loop_ymm(int64_t iters, float seed) {
  __m256 acc[12];
  for (int j = 0; j < 12; j++) acc[j] = _mm256_set1_ps(seed + 0.01f * float(j));
  const __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(seed * 1e-3f);
  for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; j++) acc[j] = _mm256_fmadd_ps(acc[j], x, y);
  }
  alignas(32) float out[8];
  __m256 s = acc[0];
  for (int j = 1; j < 12; j++) s = _mm256_add_ps(s, acc[j]);
  _mm256_store_ps(out, s);
  return out[0] + out[7];
}

volatile float g_sink;

double cpu_seconds(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

struct Peak {
  double wall;  // GFLOP/s of `threads` threads together, wall clock
  double core;  // GFLOP per CPU-second of one core (unaffected by time lost to other processes)
};

// FMA peak of `threads` threads running at once (best of 5 runs).
Peak measure_peak(int threads) {
  const bool zmm = cpu_features().avx512f;
  const int64_t iters = 20'000'000;
  const double flops = double(iters) * (zmm ? 16.0 * 16 * 2 : 12.0 * 8 * 2);
  Peak best{0, 0};
  for (int run = 0; run < 5; run++) {
    std::atomic<int> ready{0};
    std::vector<double> secs(static_cast<size_t>(threads)), cpu(static_cast<size_t>(threads));
    auto body = [&](int t) {
      ready.fetch_add(1);
      while (ready.load() < threads) {
      }
      auto t0 = Clock::now();
      const double c0 = cpu_seconds(CLOCK_THREAD_CPUTIME_ID);
      g_sink = zmm ? fma_loop_zmm(iters, 1.0f + float(t)) : fma_loop_ymm(iters, 1.0f + float(t));
      cpu[size_t(t)] = cpu_seconds(CLOCK_THREAD_CPUTIME_ID) - c0;
      secs[size_t(t)] = seconds_since(t0);
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; t++) pool.emplace_back(body, t);
    body(0);
    for (auto& th : pool) th.join();
    best.wall = std::max(best.wall, threads * flops / *std::max_element(secs.begin(), secs.end()) * 1e-9);
    best.core = std::max(best.core, flops / *std::min_element(cpu.begin(), cpu.end()) * 1e-9);
  }
  return best;
}

// ---------------------------------------------------------------- timing

struct Timing {
  double wall;  // seconds per call
  double cpu;   // CPU-seconds per call, all threads together
};

// Best of 7 rounds, each long enough (>= 40 ms) to average out jitter; wall and CPU time are
// minimised separately (the CPU time excludes time lost to other processes).
Timing time_call(const std::function<void()>& fn) {
  fn();
  int reps = 1;
  for (;;) {
    auto t0 = Clock::now();
    for (int r = 0; r < reps; r++) fn();
    if (seconds_since(t0) > 0.04) break;
    reps *= 2;
  }
  Timing best{1e30, 1e30};
  for (int round = 0; round < 7; round++) {
    auto t0 = Clock::now();
    const double c0 = cpu_seconds(CLOCK_PROCESS_CPUTIME_ID);
    for (int r = 0; r < reps; r++) fn();
    best.cpu = std::min(best.cpu, (cpu_seconds(CLOCK_PROCESS_CPUTIME_ID) - c0) / reps);
    best.wall = std::min(best.wall, seconds_since(t0) / reps);
  }
  return best;
}

void naive_gemm(int64_t M, int64_t N, int64_t K, const float* a, const float* b, float* c) {
  for (int64_t i = 0; i < M; i++) {
    for (int64_t j = 0; j < N; j++) c[i * N + j] = 0;
    for (int64_t k = 0; k < K; k++)
      for (int64_t j = 0; j < N; j++) c[i * N + j] += a[i * K + k] * b[k * N + j];
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool check_only = false;
  for (int i = 1; i < argc; i++) {
    if (!std::strcmp(argv[i], "--check")) check_only = true;
    else {
      std::fprintf(stderr, "usage: bench_gemm [--check]\n");
      return 2;
    }
  }
  if (!validate()) return 1;
  if (check_only) return 0;

  const Peak peak1 = measure_peak(1);
  Peak peak2 = measure_peak(2);
  std::printf("\nFMA peak (%s, measured): 1 thread %.1f GFLOP/s, 2 threads %.1f GFLOP/s; %.1f GFLOP per "
              "CPU-second of one core\n",
              cpu_features().avx512f ? "zmm" : "ymm", peak1.wall, peak2.wall, peak1.core);
  // On a shared VM the second core is sometimes not there for the whole measurement; the
  // two-thread percentages are then taken against twice the one-core peak, never above it.
  if (peak2.wall < 1.8 * peak1.wall) {
    std::printf("the second core was busy elsewhere during that measurement: 2-thread %%peak below is against "
                "2 x %.1f GFLOP/s\n", peak1.wall);
    peak2.wall = 2 * peak1.wall;
  }
  std::printf("%%peak: wall-clock GFLOP/s over the threads' peak. %%cpu: GFLOP per CPU-second used over one\n"
              "core's peak, which ignores time lost to other processes (and idle waiting) on a busy machine.\n");

  std::mt19937 rng(7);
  const int64_t maxd = 3072, maxm = 400;
  HostFloats a(static_cast<size_t>(maxm * maxd)), w(static_cast<size_t>(maxd * maxd));
  HostFloats bias(static_cast<size_t>(maxd)), c(static_cast<size_t>(maxm * maxd));
  fill_random(a, rng), fill_random(w, rng), fill_random(bias, rng);

  // y = x @ W + bias with W stored [K,N], and y = x @ W^T + bias with W stored [N,K] (the
  // nn.Linear layout: b is a transposed view). M = 50 tokens per image, batch 1 and 8.
  auto gemm_args = [&](int64_t M, int64_t K, int64_t N, bool wt, const float* wp) {
    OpArgs args;
    args.op = "gemm";
    args.in.push_back(view(a.data(), {1, M, K}, {M * K, K, 1}));
    args.in.push_back(view(const_cast<float*>(wp), {1, K, N},
                           wt ? std::vector<int64_t>{K * N, 1, K} : std::vector<int64_t>{K * N, N, 1}));
    args.in.push_back(view(bias.data(), {N}, {1}));
    args.out.push_back(view(c.data(), {1, M, N}, {M * N, N, 1}));
    args.ints = {0};
    args.floats = {1.0};
    return args;
  };
  double worst = 1e9;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    const double peak = threads == 1 ? peak1.wall : peak2.wall;
    std::printf("\n%d thread%s (peak %.1f GFLOP/s)   x @ W                         x @ W^T\n", threads,
                threads > 1 ? "s" : " ", peak);
    std::printf("%5s %5s %5s   %8s %6s %6s   %8s %6s %6s\n", "M", "K", "N", "GFLOP/s", "%peak", "%cpu",
                "GFLOP/s", "%peak", "%cpu");
    for (int64_t M : {50, 400})
      for (int64_t K : {768, 3072})
        for (int64_t N : {768, 3072}) {
          std::printf("%5lld %5lld %5lld", (long long)M, (long long)K, (long long)N);
          for (bool wt : {false, true}) {
            OpArgs args = gemm_args(M, K, N, wt, w.data());
            const Timing t = time_call([&] { cpu_gemm(args); });
            const double gflop = 2.0 * M * N * K * 1e-9;
            worst = std::min(worst, 100 * gflop / t.wall / peak);
            std::printf("   %8.1f %5.1f%% %5.1f%%", gflop / t.wall, 100 * gflop / t.wall / peak,
                        100 * gflop / t.cpu / peak1.core);
          }
          std::printf("\n");
          std::fflush(stdout);
        }
  }
  std::printf("lowest of the gemm op (op(B) packed on every call): %.1f%% of peak\n", worst);

  // The MLP's first layer with its activation fused into the epilogue.
  std::printf("\nx @ W^T + bias, then quick_gelu in the epilogue (K=768, N=3072):\n");
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    const double peak = threads == 1 ? peak1.wall : peak2.wall;
    for (int64_t M : {50, 400}) {
      OpArgs args = gemm_args(M, 768, 3072, true, w.data());
      args.ints = {0, 2};
      const Timing t = time_call([&] { cpu_gemm(args); });
      const double gflop = 2.0 * M * 768 * 3072 * 1e-9;
      std::printf("  %d thread%s  M=%-4lld %7.1f GFLOP/s %5.1f%% peak %5.1f%% cpu\n", threads, threads > 1 ? "s" : " ",
                  (long long)M, gflop / t.wall, 100 * gflop / t.wall / peak, 100 * gflop / t.cpu / peak1.core);
    }
  }

  // Batch-1 inference streams every weight from memory once: rotate through copies that
  // together exceed the last-level cache.
  std::printf("\nx @ W^T, M = 50, weights rotated through 96 MiB (not in cache):\n");
  HostFloats pool(size_t(24) << 20);
  fill_random(pool, rng);
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    const double peak = threads == 1 ? peak1.wall : peak2.wall;
    for (auto kn : {std::pair<int64_t, int64_t>{768, 768}, {768, 3072}, {3072, 768}}) {
      const int64_t M = 50, K = kn.first, N = kn.second, copies = int64_t(pool.size()) / (K * N);
      int64_t next = 0;
      const Timing t = time_call([&] {
        OpArgs args = gemm_args(M, K, N, true, pool.data() + (next++ % copies) * K * N);
        cpu_gemm(args);
      });
      const double gflop = 2.0 * M * N * K * 1e-9;
      std::printf("  %d thread%s  K=%-5lld N=%-5lld %7.1f GFLOP/s %5.1f%% peak %5.1f%% cpu\n", threads,
                  threads > 1 ? "s" : " ", (long long)K, (long long)N, gflop / t.wall,
                  100 * gflop / t.wall / peak, 100 * gflop / t.cpu / peak1.core);
    }
  }

  // Inference packs each weight once (gemm_pack_b) and streams the packed copy.
  double worst_packed = 1e9;
  std::printf("\nx @ W^T, prepacked weights rotated through 96 MiB (the inference path):\n");
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    const double peak = threads == 1 ? peak1.wall : peak2.wall;
    for (int64_t M : {50, 400})
    for (auto kn : {std::pair<int64_t, int64_t>{768, 768}, {768, 3072}, {3072, 768}, {768, 2304}}) {
      const int64_t K = kn.first, N = kn.second, size = sgemm_packed_b_floats(K, N);
      float* base = pool.data() + (16 - reinterpret_cast<uintptr_t>(pool.data()) / 4 % 16) % 16;  // 64-byte aligned
      const int64_t copies = (int64_t(pool.size()) - 16) / size;
      for (int64_t i = 0; i < copies; i++) sgemm_pack_b(true, K, N, w.data(), K, base + i * size);
      int64_t next = 0;
      const Timing t = time_call([&] {
        sgemm_packed(false, M, N, K, 1.0f, a.data(), K, base + (next++ % copies) * size, 0.0f, c.data(), N,
                     bias.data());
      });
      const double gflop = 2.0 * M * N * K * 1e-9;
      worst_packed = std::min(worst_packed, 100 * gflop / t.wall / peak);
      std::printf("  %d thread%s  M=%-4lld K=%-5lld N=%-5lld %7.1f GFLOP/s %5.1f%% peak %5.1f%% cpu\n", threads,
                  threads > 1 ? "s" : " ", (long long)M, (long long)K, (long long)N, gflop / t.wall,
                  100 * gflop / t.wall / peak, 100 * gflop / t.cpu / peak1.core);
    }
  }
  std::printf("lowest on the inference path (weights packed once): %.1f%% of peak\n", worst_packed);

  set_num_threads(1);
  const int64_t M = 50, K = 768, N = 768;
  std::vector<float> cn(static_cast<size_t>(M * N));
  const double sn = time_call([&] { naive_gemm(M, N, K, a.data(), w.data(), cn.data()); }).cpu;
  const double sf = time_call([&] { sgemm(false, false, M, N, K, 1.0f, a.data(), K, w.data(), N, 0.0f, c.data(), N, nullptr); }).cpu;
  double diff = 0;
  for (size_t i = 0; i < cn.size(); i++) diff = std::max(diff, double(std::fabs(cn[i] - c.data()[i])));
  std::printf("\nnaive i-k-j loop, 1 thread, %lldx%lldx%lld: %.1f GFLOP per CPU-second; sgemm is %.1fx faster (max |diff| %.2g)\n",
              (long long)M, (long long)K, (long long)N, 2.0 * M * N * K / sn * 1e-9, sn / sf, diff);
  return 0;
}
